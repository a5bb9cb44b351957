"""From a validated recipe to objects: the task, the model and its optimisers.

Components are named in the recipe by dotted path (``_component_``) or, for the prior, by a
registry key, so a new task or generator plugs in without touching this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentebm.checkpoint import CheckpointError
from latentebm.config import AdamConfig, Recipe, RecipeError, instantiate
from latentebm.data import DataFormatError
from latentebm.langevin import LangevinSampler
from latentebm.model import LatentEBM, Optimizers
from latentebm.prior import EnergyPrior, GaussianPrior
from latentebm.replay import PosteriorMemory, ReplayBuffer
from latentebm.task_contract import IndexedBatches, TaskContractError, check_task, examples_in

PRIORS: dict[str, type[GaussianPrior]] = {
    "ebm": EnergyPrior,
    "gaussian": GaussianPrior,
    "none": GaussianPrior,  # over a zero-dimensional z
}
"""``model.prior.kind`` -> prior class."""


def latent_dim(recipe: Recipe) -> int:
    """``model.z_dim``, or 0 for ``prior.kind: none`` (a decoder without latent variable)."""
    return 0 if recipe.model.prior.kind == "none" else recipe.model.z_dim


def build_task(recipe: Recipe, state: dict[str, Any] | None = None) -> Any:
    """The recipe's task (data + tokenizer); ``state`` restores a saved tokenizer. A recipe's
    ``anomaly`` section reaches the task as ``anomaly_digit``, ``anomaly_train_fraction`` and
    ``anomaly_split_seed``."""
    extra: dict[str, Any] = {}
    if recipe.anomaly is not None:
        extra = {
            "anomaly_digit": recipe.anomaly.digit,
            "anomaly_train_fraction": recipe.anomaly.train_fraction,
            "anomaly_split_seed": recipe.anomaly.split_seed,
        }
    task = instantiate(recipe.task, data_root=recipe.data.root, state=state, **extra)
    check_task(task, recipe.task.component)
    return task


def build_task_from_checkpoint(recipe: Recipe, state: Any, source: Path) -> Any:
    """:func:`build_task` with the tokenizer ``state`` stored in checkpoint ``source``; a
    damaged state is one :class:`CheckpointError` naming the file (data and recipe errors stay
    what they are)."""
    try:
        return build_task(recipe, state=state)
    except (DataFormatError, RecipeError, TaskContractError, OSError):
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
        raise CheckpointError(f"{source}: damaged checkpoint: task_state ({error!r})") from error


def build_prior(recipe: Recipe) -> GaussianPrior:
    """``p_alpha(z)`` (``kind: ebm``), the fixed ``N(0, sigma^2 I)`` (``kind: gaussian``) or
    that Gaussian over a zero-dimensional z (``kind: none``)."""
    cfg = recipe.model.prior
    z_dim = latent_dim(recipe)
    ebm: dict[str, Any] = {
        "hidden_dims": tuple(cfg.hidden_dims),
        "negative_slope": cfg.negative_slope,
    }
    if cfg.energy is not None and cfg.kind == "ebm":
        ebm = {"energy": instantiate(cfg.energy, z_dim=z_dim)}
    options: dict[str, dict[str, Any]] = {"ebm": ebm, "gaussian": {}, "none": {}}
    return PRIORS[cfg.kind](z_dim, prior_sigma=cfg.prior_sigma, **options[cfg.kind])


def build_model(recipe: Recipe, task: Any, *, for_training: bool = True) -> LatentEBM:
    """``LatentEBM`` with the recipe's prior, generator and the two chains of Table 5.

    ``prior.kind: none`` gives the decoder alone: ``z`` has no dimensions and both chains have
    0 steps, so a learning step is plain maximum likelihood of ``p_beta(x)``.
    ``for_training=False``: without the state of persistent chains (replay buffer, posterior
    memory), which only learning uses: a model to generate and evaluate with, built without
    reading the training split.
    """
    model_cfg = recipe.model
    z_dim = latent_dim(recipe)
    generator = instantiate(model_cfg.generator, z_dim=z_dim, **task.generator_kwargs())
    chains = [
        LangevinSampler(
            c.n_steps if z_dim else 0,
            c.step_size,
            noise=c.noise,
            clamp=c.clamp,
            step_schedule=c.step_schedule,
            noise_factor=c.noise_factor,
        )
        for c in (model_cfg.prior_chain, model_cfg.posterior_chain)
    ]
    inference = None
    if model_cfg.posterior_chain.init == "amortized" and z_dim:
        assert model_cfg.inference is not None
        inference = instantiate(model_cfg.inference, z_dim=z_dim, **task.generator_kwargs())
    replay = None
    prior_chain = model_cfg.prior_chain
    if prior_chain.init == "persistent" and z_dim and for_training:
        replay = ReplayBuffer(prior_chain.buffer_size, z_dim, prior_chain.reinit_rate)
    memory = None
    if model_cfg.posterior_chain.init == "persistent" and z_dim and for_training:
        if not isinstance(task, IndexedBatches):
            raise ValueError(
                "model.posterior_chain.init: persistent needs a task with indexed_batches "
                f"({type(task).__name__} has none)"
            )
        memory = PosteriorMemory(examples_in(task, "train"), z_dim)
    return LatentEBM(
        build_prior(recipe),
        generator,
        *chains,
        inference=inference,
        replay=replay,
        posterior_memory=memory,
        compile_mode=recipe.model.compile,
    )


def _adam(params: Any, cfg: AdamConfig) -> torch.optim.Adam:
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )


def build_optimizers(recipe: Recipe, model: LatentEBM) -> Optimizers:
    """Separate Adam optimisers for alpha (eta_0) and beta (eta_1), Algorithm 1, and phi."""
    cfg = recipe.optim
    prior_params = list(model.prior.parameters())
    inference = model.inference
    return Optimizers(
        generator=_adam(model.generator.parameters(), cfg.generator),
        prior=_adam(prior_params, cfg.prior) if prior_params else None,
        generator_grad_clip=cfg.generator.grad_clip,
        prior_grad_clip=cfg.prior.grad_clip,
        inference=None if inference is None else _adam(inference.parameters(), cfg.inference),
        inference_grad_clip=cfg.inference.grad_clip,
    )


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of the recipe key ``device``: ``auto`` -> ``cuda:<local_rank>`` when CUDA
    is available, else ``cpu``.

    Raises:
        RecipeError: naming the key ``device`` when the device is not on this machine (CUDA or
            MPS not available, ``cuda:N`` beyond the GPUs there are) or the name is not one.
    """
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RecipeError(
            f"device: {name!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RecipeError(
                f"device: '{name}' asked for, but CUDA is not available on this machine "
                "(use device=cpu or device=auto)"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RecipeError(
                f"device: '{name}' asked for, but this machine has {count} CUDA device(s) "
                f"(cuda:0 .. cuda:{count - 1})"
            )
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RecipeError(
                f"device: '{name}' asked for, but MPS (Apple-silicon GPU) is not available on "
                "this machine (use device=cpu or device=auto)"
            )
    return device
