"""The ``family: shortrun`` recipe: a data-space short-run EBM with convergent-learning options.

The model is that of Nijkamp, Hill, Zhu and Wu (2019), "Learning Non-Convergent Non-Persistent
Short-Run MCMC Toward Energy-Based Model"; the options are those of Nijkamp, Hill, Han, Zhu and Wu
(2020), "On the Anatomy of MCMC-Based Maximum Likelihood Learning of Energy-Based Models".

A recipe is a YAML file such as ``recipes/shortrun_mnist.yaml``; it is read and validated like
the latent-EBM recipes (:func:`latentebm.config.load_config`: dotted command-line overrides, one
:class:`~latentebm.config.RecipeError` naming the file or override and the key path). The
top-level ``family: shortrun`` key is required: the command line dispatches on it.

Conventions (see ``docs/shortrun.md``):

* the chain (Nijkamp et al. 2019, eq. 4 with ``Delta tau = a^2``) is
  ``x <- x + (a^2 / 2) * grad_x f(x) + a * eps``, ``a = chain.step_size``;
* with ``convergent.energy_scale: true`` the negative energy is ``f(x) = F(x) / (a^2 / 2)``
  (Nijkamp et al. 2020, eq. 1A, ``F`` the ConvNet), so the step becomes
  ``x <- x + grad_x F(x) + a * eps`` (eq. 2A, the update in the code of Nijkamp et al. 2019 with
  ``a = 0.01``), and the learning rate is scaled by ``a^2 / 2`` (eq. 3A): the parameter update is
  ``lr * grad_theta [mean F(x-) - mean F(x+)]``, independent of ``a``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from latentebm.config import (
    ComponentConfig,
    DataConfig,
    TimeBudgetConfig,
    checked_field,
    device_name,
    each_rate,
    load_config,
    non_negative,
    positive,
    probability,
    seed_value,
)

__all__ = [
    "AnnealConfig",
    "ConvergentConfig",
    "EnergyConfig",
    "ShortRunChainConfig",
    "ShortRunOptimConfig",
    "ShortRunRecipe",
    "ShortRunTrainerConfig",
    "load_shortrun_recipe",
]


def _fractions(values: Sequence[float]) -> str | None:
    previous = 0.0
    for i, value in enumerate(values):
        if not 0.0 < value < 1.0:
            return f"entries must be in (0, 1), got {value!r} at index {i}"
        if value <= previous and i > 0:
            return f"entries must increase, got {value!r} after {previous!r} at index {i}"
        previous = value
    return None


@dataclass(kw_only=True)
class EnergyConfig:
    """The ConvNet negative energy ``f_theta(x)`` of Nijkamp et al. 2019, Table 4 (see
    ``energy.py``)."""

    n_filters: int = checked_field(
        64,
        "n_f: output feature maps of the first layer (Nijkamp et al. 2019: 32, 64 or 128).",
        check=positive,
    )
    n_down: int = checked_field(
        3,
        "Number of 4x4 stride-2 convolutions (3 for 32x32 and 28x28, 4 for 64x64: Tables 4-5); "
        "their widths are n_f * 2, 4, 8, 8, ...",
        check=positive,
    )
    negative_slope: float = checked_field(0.2, "LeakyReLU negative slope.", check=non_negative)


@dataclass(kw_only=True)
class ShortRunChainConfig:
    """The K-step Langevin chain ``x <- x + (a^2/2) grad_x f(x) + a * eps`` (Nijkamp et al.
    2019, eq. 4)."""

    n_steps: int = checked_field(
        100, "K: Langevin steps per chain (Nijkamp et al. 2019: K = 100).", check=positive
    )
    step_size: float = checked_field(
        0.01,
        "Noise scale a of one step; the drift is a^2/2 times grad_x f (Nijkamp et al. 2019, "
        "eq. 4 with Delta tau = a^2). With convergent.energy_scale the drift is grad_x F "
        "(Nijkamp et al. 2020, eq. 2A).",
        check=positive,
    )
    noise: bool = checked_field(
        True, "Add the Gaussian noise term a * eps (false: gradient ascent)."
    )
    clamp: float | None = checked_field(
        None, "Clamp pixels to [-clamp, clamp] after each step; null: off.", check=positive
    )
    init: Literal["uniform", "gaussian"] = checked_field(
        "uniform",
        "The initial distribution p_0: uniform on [-1, 1] (Nijkamp et al. 2019) or "
        "N(0, init_std^2 I).",
    )
    init_std: float = checked_field(1.0, "Std of p_0 when init is gaussian.", check=positive)
    persistent: bool = checked_field(
        False,
        "Start chains from a buffer of earlier chain ends (persistent chains) instead of fresh "
        "p_0 noise; Nijkamp et al. 2019 is non-persistent (false).",
    )
    buffer_size: int = checked_field(
        10000, "persistent: number of stored chain ends.", check=positive
    )
    reinit_rate: float = checked_field(
        0.05, "persistent: probability that a drawn chain restarts from p_0.", check=probability
    )


@dataclass(kw_only=True)
class AnnealConfig:
    """Step decay of the learning rate (Nijkamp et al. 2020, Appendix B; 2019, Section 5.1)."""

    milestones: list[float] = checked_field(
        doc="Fractions of trainer.max_steps at which the learning rate is multiplied by gamma; "
        "[]: constant learning rate.",
        factory=list,
        check=_fractions,
    )
    gamma: float = checked_field(0.1, "Factor applied at each milestone.", check=positive)


@dataclass(kw_only=True)
class ConvergentConfig:
    """The learning options of Nijkamp et al. 2020, Appendices A-C."""

    energy_scale: bool = checked_field(
        False,
        "Nijkamp et al. 2020, eq. 1A: f(x) = F(x) / (a^2/2) with F the ConvNet, so a chain step is "
        "x + grad_x F(x) + a * eps (eq. 2A), with the learning rate scaled by a^2/2 (eq. 3A): "
        "the parameter update is lr * grad [mean F(x-) - mean F(x+)].",
    )
    data_noise: float = checked_field(
        0.0,
        "sigma: std of the Gaussian noise added to every training image each time it is drawn "
        "(Nijkamp et al. 2019, Algorithm 1 step 3; Nijkamp et al. 2020, eq. 5A, suggest "
        "2 * step_size).",
        check=non_negative,
    )
    lr_anneal: AnnealConfig = checked_field(
        doc="Learning-rate step decay (Nijkamp et al. 2020, Appendix B).", factory=AnnealConfig
    )


@dataclass(kw_only=True)
class ShortRunOptimConfig:
    """The optimiser of theta (Nijkamp et al. 2019, Algorithm 1 step 5: Adam)."""

    name: Literal["adam", "sgd"] = checked_field(
        "adam", "adam (Nijkamp et al. 2019) or sgd (Nijkamp et al. 2020, eq. 4A)."
    )
    lr: float = checked_field(
        1e-4, "Learning rate (gamma_0 with convergent.energy_scale).", check=positive
    )
    betas: tuple[float, float] = checked_field(
        (0.9, 0.999), "Adam (beta1, beta2).", check=each_rate
    )
    weight_decay: float = checked_field(0.0, "L2 weight decay.", check=non_negative)


@dataclass(kw_only=True)
class ShortRunTrainerConfig(TimeBudgetConfig):
    """Training loop, logging, checkpoints and the figures written at the end."""

    max_steps: int = checked_field(1000, "T: number of parameter updates.", check=positive)
    batch_size: int = checked_field(64, "m: images (and chains) per update.", check=positive)
    log_every: int = checked_field(
        10, "Append a metrics.jsonl line every this many steps.", check=positive
    )
    checkpoint_every: int = checked_field(
        500, "Save a checkpoint every this many steps.", check=positive
    )
    keep_checkpoints: int = checked_field(
        3, "Number of most recent checkpoints kept; 0: keep all.", check=non_negative
    )
    run_dir: str | None = checked_field(
        None, "Run directory; null: <runs_root>/<name>/<timestamp>.", path=True
    )
    runs_root: str = checked_field(
        "runs", "Parent directory of default run directories.", path=True
    )
    resume: str | None = checked_field(
        None,
        "null (fresh run), auto (newest checkpoint of trainer.run_dir if set, else of the newest "
        "run of this recipe; a fresh run if none) or a checkpoint file or run directory.",
        path=True,
    )
    samples_at_end: int = checked_field(
        64, "Images in samples/final.png (fresh noise chains); 0: none.", check=non_negative
    )
    interpolation_pairs: int = checked_field(
        4, "Rows of interpolation.png (pairs z1, z2); 0: none.", check=non_negative
    )
    interpolation_points: int = checked_field(
        8, "Columns of interpolation.png (values of rho in [0, 1]).", check=positive
    )
    reconstruction_images: int = checked_field(
        16,
        "Test images reconstructed at the end (reconstruction.png); 0: none.",
        check=non_negative,
    )
    reconstruction_iters: int = checked_field(
        50, "Gradient-descent iterations on z for each reconstruction.", check=positive
    )
    reconstruction_lr: float = checked_field(
        0.05, "Adam learning rate of the reconstruction's z updates.", check=positive
    )


@dataclass(kw_only=True)
class ShortRunRecipe:
    """A complete ``family: shortrun`` training recipe."""

    family: Literal["shortrun"] = checked_field(
        doc="Recipe family (required): shortrun selects this schema and trainer."
    )
    name: str | None = checked_field(None, "Recipe name; defaults to the recipe file's stem.")
    seed: int = checked_field(0, "Random seed, 0 .. 2**32 - 1.", check=seed_value)
    device: str = checked_field("auto", "auto | cpu | cuda | cuda:N | mps.", check=device_name)
    data: DataConfig = checked_field(doc="Data location.", factory=DataConfig)
    task: ComponentConfig = checked_field(
        doc=(
            "The image task, e.g. _component_: latentebm.tasks.images.ImageTask with "
            "dataset: mnist."
        )
    )
    energy: EnergyConfig = checked_field(
        doc="The ConvNet negative energy f_theta.", factory=EnergyConfig
    )
    chain: ShortRunChainConfig = checked_field(
        doc="The short-run Langevin chain M_theta.", factory=ShortRunChainConfig
    )
    convergent: ConvergentConfig = checked_field(
        doc="Options of Nijkamp et al. 2020: energy scaling, data noise, learning-rate annealing.",
        factory=ConvergentConfig,
    )
    optim: ShortRunOptimConfig = checked_field(doc="The optimiser.", factory=ShortRunOptimConfig)
    trainer: ShortRunTrainerConfig = checked_field(
        doc="The training loop.", factory=ShortRunTrainerConfig
    )


def load_shortrun_recipe(path: str | Path, overrides: Sequence[str] = ()) -> ShortRunRecipe:
    """Read and validate a ``family: shortrun`` recipe (``name`` defaults to the file's stem).

    Raises:
        RecipeError: naming the file (or the override) and the key path of the problem.
    """
    recipe = load_config(ShortRunRecipe, path, overrides)
    if recipe.name is None:
        recipe.name = Path(path).stem
    return recipe
