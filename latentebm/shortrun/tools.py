"""Using a learned short-run chain as a generator (Section 3.4 of Nijkamp, Hill, Zhu and Wu
(2019), "Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model").

After learning, ``x = M_theta(z)`` (eq. 5, ``z ~ p_0``) is kept as a generator or flow model:

* :meth:`ShortRunModel.sample` draws fresh images from noise;
* :func:`interpolate` runs ``M_theta`` on ``z_rho = rho z_1 + sqrt(1 - rho^2) z_2``;
* :func:`reconstruct` fits ``z`` to an observed image by gradient descent on
  ``L(z) = ||x - M_theta(z)||^2`` through the unrolled chain.

Interpolation and reconstruction use the chain without its noise term (``u = 0``, the "K-step
gradient descent" of their Section 5.2), so ``M_theta`` is a deterministic function of ``z``.
:func:`save_image_grid` writes a PNG grid without any imaging library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentebm.build import resolve_device
from latentebm.chain_records import chain_record_steps, chain_summary
from latentebm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    require_fields,
)
from latentebm.config import validate
from latentebm.image_io import save_grid
from latentebm.langevin import frozen
from latentebm.progress import report_within, reporting_within
from latentebm.shortrun.config import ShortRunRecipe
from latentebm.shortrun.energy import ConvEnergy
from latentebm.shortrun.sampler import ChainResult, ShortRunChain, sample_initial

__all__ = [
    "LoadedShortRun",
    "ShortRunModel",
    "interpolate",
    "load_shortrun",
    "load_shortrun_checkpoint",
    "reconstruction_entry",
    "long_chain",
    "reconstruct",
    "save_image_grid",
]


class ShortRunModel:
    """The ConvNet ``F``, the chain ``M_theta`` and ``p_0``: a generator ``x = M_theta(z)``.

    Args:
        energy: the ConvNet ``F`` (``(B, C, H, W) -> (B,)``).
        chain: the K-step Langevin chain.
        temperature: ``T`` in ``f = F / T``: ``a^2 / 2`` with the energy scaling of Nijkamp et
            al. 2020, else 1.
        init: ``p_0``: ``uniform`` on [-1, 1] or ``gaussian``.
        init_std: std of ``p_0`` when ``init`` is gaussian.
    """

    def __init__(
        self,
        energy: ConvEnergy,
        chain: ShortRunChain,
        *,
        temperature: float = 1.0,
        init: str = "uniform",
        init_std: float = 1.0,
    ) -> None:
        self.energy = energy
        self.chain = chain
        self.temperature = float(temperature)
        self.init = init
        self.init_std = float(init_std)

    @classmethod
    def from_recipe(
        cls, recipe: ShortRunRecipe, image_shape: tuple[int, int, int]
    ) -> ShortRunModel:
        """Build the (untrained) model a recipe describes for images of ``image_shape``."""
        energy = ConvEnergy(
            image_shape,
            n_filters=recipe.energy.n_filters,
            n_down=recipe.energy.n_down,
            negative_slope=recipe.energy.negative_slope,
        )
        c = recipe.chain
        chain = ShortRunChain(c.n_steps, c.step_size, noise=c.noise, clamp=c.clamp)
        temperature = chain.drift if recipe.convergent.energy_scale else 1.0
        return cls(energy, chain, temperature=temperature, init=c.init, init_std=c.init_std)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return self.energy.image_shape

    @property
    def device(self) -> torch.device:
        """Device of the energy's parameters."""
        return next(self.energy.parameters()).device

    def neg_energy(self, x: Tensor) -> Tensor:
        """``f(x) = F(x) / T``: the unnormalised log density the chain samples, ``(B,)``."""
        value = self.energy(x)
        return value if self.temperature == 1.0 else value / self.temperature

    def initial(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``z ~ p_0``, shape ``(n, C, H, W)``."""
        return sample_initial(
            (n, *self.image_shape),
            self.init,
            std=self.init_std,
            generator=generator,
            device=self.device,
            dtype=next(self.energy.parameters()).dtype,
        )

    def run_chain(
        self,
        z: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: bool | None = None,
        differentiable: bool = False,
    ) -> ChainResult:
        """``M_theta(z)`` with the parameters frozen (the chain never touches ``.grad``)."""
        with frozen(self.energy):
            return self.chain.run(
                self.neg_energy, z, generator=generator, noise=noise, differentiable=differentiable
            )

    def sample(
        self, n: int, generator: torch.Generator | None = None, *, noise: bool | None = None
    ) -> Tensor:
        """``n`` images ``x = M_theta(z)``, ``z ~ p_0`` (eq. 5), shape ``(n, C, H, W)``."""
        return self.run_chain(self.initial(n, generator), generator=generator, noise=noise).x


def long_chain(
    model: ShortRunModel,
    n_chains: int = 64,
    n_steps: int = 2000,
    record_every: int = 10,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """The energy along a long synthesis chain from ``p_0`` (the long-run check of Nijkamp, Hill,
    Han, Zhu and Wu (2020), "On the Anatomy of MCMC-Based Maximum Likelihood Learning of
    Energy-Based Models", for the data-space model; the same keys as
    :func:`latentebm.diagnostics.long_prior_chain`).

    ``energy`` is the mean ConvNet output ``F(x)`` over the chains and ``log_density`` the mean
    ``f(x) = F(x) / T`` the chain samples, at steps ``0, record_every, ...`` and ``n_steps``.
    """
    if n_chains < 1 or n_steps < 1 or record_every < 1:
        raise ValueError(
            f"n_chains, n_steps and record_every must be >= 1, got {n_chains}, {n_steps}, "
            f"{record_every}"
        )
    steps = chain_record_steps(n_steps, record_every)
    x = model.initial(n_chains, generator)
    energy: list[float] = []
    log_density: list[float] = []
    grad_norms: list[Tensor] = []
    done = 0
    for step in steps:
        if step > done:
            report_within(done, n_steps)  # the whole chain's step, not the segment's
            with reporting_within(_ignore):
                result = _run_steps(model, x, step - done, generator)
            x, done = result.x, step
            grad_norms.append(result.grad_norm)
        with torch.no_grad():
            value = model.energy(x)
            energy.append(float(value.mean()))
            log_density.append(float((value / model.temperature).mean()))

    grad_norm = torch.cat(grad_norms)
    return chain_summary(steps, energy, log_density, grad_norm, record_every, n_chains, model.chain)


def _ignore(done: int, total: int) -> None:
    """Swallows a segment's own step reports."""


def _run_steps(
    model: ShortRunModel, x: Tensor, n_steps: int, generator: torch.Generator | None
) -> ChainResult:
    with frozen(model.energy):
        return model.chain.run(model.neg_energy, x, generator=generator, n_steps=n_steps)


def interpolate(
    model: ShortRunModel,
    n_pairs: int,
    n_points: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Nijkamp et al. 2019, Section 3.4: ``x_rho = M_theta(rho z_1 + sqrt(1 - rho^2) z_2)``.

    For each of ``n_pairs`` pairs ``z_1, z_2 ~ p_0`` and ``rho`` from 1 down to 0 in ``n_points``
    steps (so the first column is ``M_theta(z_1)``, the last ``M_theta(z_2)``), the chain runs
    without noise. Returns ``(n_pairs * n_points, C, H, W)``, row-major (one pair per row).
    """
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    z1 = model.initial(n_pairs, generator)
    z2 = model.initial(n_pairs, generator)
    rho = torch.linspace(1.0, 0.0, n_points, device=z1.device).view(1, n_points, 1, 1, 1)
    z = rho * z1.unsqueeze(1) + (1.0 - rho**2).clamp_min(0.0).sqrt() * z2.unsqueeze(1)
    z = z.reshape(n_pairs * n_points, *model.image_shape)
    return model.run_chain(z, noise=False).x


def reconstruct(
    model: ShortRunModel,
    images: Tensor,
    n_iters: int,
    lr: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float]:
    """Nijkamp et al. 2019, Section 3.4: fit ``z`` to ``images`` by gradient descent on
    ``||x - M(z)||^2``.

    ``z_0 ~ p_0``; each iteration back-propagates the summed squared error through the K
    unrolled, noise-free chain steps and updates ``z`` with Adam at learning rate ``lr`` (a
    per-coordinate step size ``eta_t`` for ``z_{t+1} = z_t - eta_t L'(z_t)``).

    Returns:
        The reconstructions ``M_theta(z_T)``, detached, and their mean squared error per pixel
        on the [-1, 1] scale (Nijkamp et al. 2019, Table 1 (b)).
    """
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    target = images.to(model.device).detach()
    z = model.initial(target.shape[0], generator).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    for i in range(n_iters):
        report_within(i, n_iters)  # the fit's iteration, not the chain's step
        with reporting_within(_ignore):
            x = model.run_chain(z, noise=False, differentiable=True).x
        loss = (x - target).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        (grad,) = torch.autograd.grad(loss, z)
        z.grad = grad
        optimizer.step()
    with torch.no_grad():
        x = model.run_chain(z.detach(), noise=False).x
        mse = float((x - target).pow(2).mean())
    return x, mse


RECONSTRUCTION_PROTOCOL = (
    "Nijkamp et al. 2019, Section 3.4: z ~ p_0 fitted by Adam on ||x - M(z)||^2 through the "
    "noise-free K-step chain"
)
"""How :func:`reconstruct` reconstructs, as a metrics entry records it."""


def reconstruction_entry(
    mse: float, *, n: int, split: str, iters: int, lr: float, chain_steps: int
) -> dict[str, Any]:
    """The ``mse`` entry of a metrics file (the image metrics' keys, Nijkamp et al. 2019,
    Table 1 (b)): ``mse_per_pixel`` on the ``[-1, 1]`` scale, ``mse_per_pixel_01`` on
    ``[0, 1]`` (divided by 4), and how it was measured."""
    return {
        "mse_per_pixel": mse,
        "mse_per_pixel_01": mse / 4.0,
        "scale": "[-1, 1]",
        "n": int(n),
        "split": split,
        "protocol": RECONSTRUCTION_PROTOCOL,
        "iters": int(iters),
        "lr": float(lr),
        "chain_steps": int(chain_steps),
    }


SHORTRUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "recipe": dict,
    "image_shape": (list, tuple),
    "model": dict,
}
"""Keys (and their types) every short-run checkpoint has."""


def _image_shape(value: Any, checkpoint: Path) -> tuple[int, int, int]:
    """A checkpoint's ``image_shape`` as ``(C, H, W)`` of positive ints."""
    if len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
        raise CheckpointError(f"{checkpoint}: damaged checkpoint: image_shape is {value!r}")
    return (value[0], value[1], value[2])


@dataclass
class LoadedShortRun:
    """A short-run checkpoint read back: the model, its validated recipe, the file, the step."""

    model: ShortRunModel
    recipe: ShortRunRecipe
    checkpoint: Path
    step: int | None


def _step(saved: dict[str, Any]) -> int | None:
    """The update count of a training checkpoint (``state.step``) or an export (``step``)."""
    state = saved.get("state")
    value = state.get("step") if isinstance(state, dict) else saved.get("step")
    return value if isinstance(value, int) else None


def load_shortrun_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> LoadedShortRun:
    """The model, recipe and step of a short-run checkpoint file, of a run directory's newest
    checkpoint, or of a folder written by ``latentebm export``.

    The checkpoint is read with ``weights_only=True``; its recipe is validated again (a
    component it names is imported only from the toolkit or a trusted module).
    """
    from latentebm.export import resolve_model

    device = resolve_device(map_location) if isinstance(map_location, str) else map_location
    checkpoint = resolve_model(path)
    saved = load_checkpoint(checkpoint, map_location="cpu")  # moved to the device below
    require_fields(saved, checkpoint, SHORTRUN_FIELDS)
    recipe = validate(ShortRunRecipe, saved["recipe"], source=str(checkpoint))
    shape = _image_shape(saved["image_shape"], checkpoint)
    model = ShortRunModel.from_recipe(recipe, shape)
    load_weights(model.energy, saved["model"], checkpoint)
    model.energy.to(device).eval()
    return LoadedShortRun(model, recipe, checkpoint, _step(saved))


def load_shortrun(path: str | Path, map_location: str | torch.device = "cpu") -> ShortRunModel:
    """The model of a short-run checkpoint file, of a run directory's newest checkpoint or of
    an exported folder (:func:`load_shortrun_checkpoint`)."""
    return load_shortrun_checkpoint(path, map_location).model


def save_image_grid(images: Tensor, path: str | Path, n_cols: int | None = None) -> Path:
    """Write images ``(N, C, H, W)`` in [-1, 1] as one PNG grid, atomically
    (:func:`latentebm.image_io.save_grid`; ``n_cols`` defaults to ``ceil(sqrt(N))``)."""
    return save_grid(images, path, nrow=n_cols)
