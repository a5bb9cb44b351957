"""A loaded molecule model as a GuacaMol ``DistributionMatchingGenerator``.

GuacaMol (Brown et al. 2019, "GuacaMol: benchmarking models for de novo molecular design")
assesses distribution learning through one method, ``generate(number_samples) -> list[str]``
of SMILES. :class:`GuacaMolGenerator` provides it for a latent EBM molecule model (SMILES or
SELFIES task: SELFIES are decoded to SMILES by the task), sampling ``z`` by the prior chain
(Pang et al. 2020, eq. 9) and decoding by sampling at temperature 1, as ``latentebm evaluate``
does for molecules::

    import latentebm
    from latentebm.guacamol import GuacaMolGenerator
    from guacamol.assess_distribution_learning import assess_distribution_learning

    model = GuacaMolGenerator(latentebm.load("pretrained:qm9-selfies"), seed=0)
    assess_distribution_learning(model, chembl_training_file="guacamol_v1_train.smiles")

Contract: ``generate(n)`` returns exactly ``n`` strings, one per sample, invalid or empty ones
included (GuacaMol counts validity itself); successive calls continue one random stream, so a
seeded generator gives the same molecules for the same calls on every run. When the
``guacamol`` package is installed the class is registered as a virtual subclass of its
``DistributionMatchingGenerator`` (``isinstance`` holds); it does not need the package.
"""

from __future__ import annotations

import os
from typing import Any

from latentebm.pretrained import Pretrained, TaskMismatchError


class GuacaMolGenerator:
    """``generate(number_samples)`` of SMILES from a latent EBM molecule model.

    Args:
        model: a loaded model (:func:`latentebm.load`) or anything it loads (a run directory,
            checkpoint, exported folder, ``pretrained:NAME``).
        seed: seed of the random stream (None: a fresh random seed).
        temperature: softmax temperature of the decoder's sampling.
        batch_size: samples drawn at once.
        langevin_steps: prior chain steps (None: the model's K0).
    """

    def __init__(
        self,
        model: Pretrained | str | os.PathLike[str],
        *,
        seed: int | None = None,
        temperature: float = 1.0,
        batch_size: int = 500,
        langevin_steps: int | None = None,
    ) -> None:
        if not isinstance(model, Pretrained):
            from latentebm import load

            model = load(model)
        if not hasattr(model.task, "smiles"):
            raise TaskMismatchError(
                f"{model.checkpoint}: a {type(model.task).__name__} model; GuacaMol needs a "
                "molecule model (SMILES or SELFIES task)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.temperature = temperature
        self.batch_size = batch_size
        self.langevin_steps = langevin_steps
        self._rng = model.random_generator(seed)

    def generate(self, number_samples: int) -> list[str]:
        """``number_samples`` SMILES strings (module docstring)."""
        if number_samples < 0:
            raise ValueError(f"number_samples must be >= 0, got {number_samples}")
        model, out = self.model, []
        while len(out) < number_samples:
            size = min(self.batch_size, number_samples - len(out))
            tokens = model.model.generate(  # the prior chain needs gradients in z
                size,
                generator=self._rng,
                n_steps=self.langevin_steps,
                decode="sample",
                temperature=self.temperature,
            )
            out.extend(model.task.decode(tokens))
        return out


def _register() -> None:
    """Make :class:`GuacaMolGenerator` a virtual subclass of GuacaMol's interface, if present."""
    try:
        from guacamol.distribution_matching_generator import DistributionMatchingGenerator
    except ImportError:
        return
    interface: Any = DistributionMatchingGenerator
    interface.register(GuacaMolGenerator)


_register()
