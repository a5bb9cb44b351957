"""latentebm: latent-space energy-based prior models learned with short-run Langevin dynamics.

The model of Pang, Han, Nijkamp, Zhu and Wu, "Learning Latent Space Energy-Based Prior Model"
(NeurIPS 2020): ``p(x, z) = p_alpha(z) p_beta(x | z)`` with an energy-tilted Gaussian prior
``p_alpha(z) ∝ exp(f_alpha(z)) N(z; 0, sigma^2 I)`` and a generator ``p_beta(x | z)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from latentebm.langevin import LangevinResult, LangevinSampler
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior

if TYPE_CHECKING:
    from latentebm.pretrained import Pretrained

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
) -> Pretrained:
    """Load a trained model from a run directory or checkpoint file
    (:func:`latentebm.pretrained.load`; ``trusted_modules``: module prefixes, beyond the
    toolkit's and ``LATENTEBM_TRUSTED_MODULES``, whose components the checkpoint's recipe may
    import, docs/guarantees.md)."""
    from latentebm.pretrained import load as _load

    return _load(path, device=device, trusted_modules=trusted_modules)
