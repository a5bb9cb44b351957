"""latentebm: latent-space energy-based prior models learned with short-run Langevin dynamics.

The model of Pang, Han, Nijkamp, Zhu and Wu, "Learning Latent Space Energy-Based Prior Model"
(NeurIPS 2020): ``p(x, z) = p_alpha(z) p_beta(x | z)`` with an energy-tilted Gaussian prior
``p_alpha(z) ∝ exp(f_alpha(z)) N(z; 0, sigma^2 I)`` and a generator ``p_beta(x | z)``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from latentebm.langevin import LangevinResult, LangevinSampler
    from latentebm.model import LatentEBM
    from latentebm.pretrained import Pretrained
    from latentebm.prior import EnergyPrior, GaussianPrior
    from latentebm.shortrun.tools import ShortRunModel

# Imported on first use (PEP 562), so that `latentebm --help`, `ls` and `--version` start without
# importing torch.
_LAZY: dict[str, str] = {
    "EnergyPrior": "latentebm.prior",
    "GaussianPrior": "latentebm.prior",
    "LangevinResult": "latentebm.langevin",
    "LangevinSampler": "latentebm.langevin",
    "LatentEBM": "latentebm.model",
}

__version__ = "0.1.0"

__all__ = [
    "EnergyPrior",
    "GaussianPrior",
    "LangevinResult",
    "LangevinSampler",
    "LatentEBM",
    "__version__",
    "load",
]


def load(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    trusted_modules: Sequence[str] = (),
) -> Pretrained | ShortRunModel:
    """Load a trained model from a run directory or checkpoint file: a latent EBM as
    :class:`~latentebm.pretrained.Pretrained` (:func:`latentebm.pretrained.load`;
    ``trusted_modules``: module prefixes, beyond the toolkit's and
    ``LATENTEBM_TRUSTED_MODULES``, whose components the checkpoint's recipe may import,
    docs/guarantees.md), a data-space short-run EBM as
    :class:`~latentebm.shortrun.ShortRunModel` (:func:`latentebm.shortrun.load_shortrun`:
    ``sample``, ``run_chain``, ``neg_energy``; its recipe names no component to import, so
    ``trusted_modules`` does not apply). Code that needs one kind checks with ``isinstance``."""
    from latentebm.errors import DataSpaceCheckpoint
    from latentebm.pretrained import load as _load

    try:
        return _load(path, device=device, trusted_modules=trusted_modules)
    except DataSpaceCheckpoint as found:
        from latentebm.shortrun.tools import load_shortrun

        return load_shortrun(found.checkpoint, map_location=device)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentebm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
