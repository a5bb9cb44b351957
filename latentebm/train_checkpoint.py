"""A training checkpoint of the latent EBM and the runs that start from one.

What a checkpoint holds (:func:`checkpoint_contents`, :data:`RESUME_FIELDS`) and how a run takes
it up: a resumed run gets back where training stood (:class:`TrainState`), its weights,
optimisers and random streams; its task and model must be the checkpoint's
(:func:`check_compatible`), while its optimiser settings and frozen parts follow the recipe it
resumes under (:func:`apply_resumed_settings`). A new run initialised from another run's weights
(``trainer.init_from``) copies the parts :func:`parts_to_copy` names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latentebm import __version__
from latentebm.checkpoint import CheckpointError, load_weights
from latentebm.config import (
    Recipe,
    current_component_paths,
    recipe_from_dict,
    recipe_to_dict,
    with_current_defaults,
)
from latentebm.distributed import DistContext
from latentebm.errors import TrainingError
from latentebm.model import LatentEBM, Optimizers
from latentebm.runs import first_difference, run_id, say
from latentebm.train_rng import set_rng_state
from latentebm.warm_start import MODEL_PARTS

_MAY_CHANGE_ON_RESUME = {"model": ("compile",), "task": ("cache_dir",)}
"""Keys of the task and model sections that a resumed run may change: how the chains execute,
where caches live (another machine)."""
_GENERATOR_EXECUTION_KEYS = ("fused_output", "fast_chain", "chain_matmul_dtype", "fast_path")
"""Keys of ``model.generator`` that only choose how the generator is computed (a resumed run may
change them, and checkpoints from before they existed lack them)."""

RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "recipe": dict,
    "model": dict,
    "task_state": (dict, type(None)),
    "step": int,
    "epoch": int,
    "batch_in_epoch": int,
    "optim_generator": dict,
    "rng": list,
}
"""Keys (and their types) a checkpoint needs to continue a run."""


@dataclass
class TrainState:
    """Where training stands: ``step`` updates done, the next batch ``batch_in_epoch``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped: int = 0
    train_seconds: float = 0.0
    """Wall seconds spent in the training loop so far, over all resumed segments."""
    best_valid: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


# ------------------------------------------------------------------ writing
def checkpoint_contents(
    st: TrainState,
    *,
    world_size: int,
    run_dir: Path,
    recipe: Recipe,
    task: Any,
    model: LatentEBM,
    optimizers: Optimizers,
    rng_states: list[Any],
) -> dict[str, Any]:
    """What a checkpoint of ``run_dir`` at ``st`` holds (``rng_states``: every process's
    :func:`~latentebm.train_rng.rng_state`, in rank order)."""
    return {
        "format": 1,
        "library_version": __version__,
        "step": st.step,
        "epoch": st.epoch,
        "batch_in_epoch": st.batch_in_epoch,
        "train_seconds": st.train_seconds,
        "skipped": st.skipped,
        "world_size": world_size,
        "run_dir": str(run_dir),
        "run_id": run_id(run_dir),
        "recipe": recipe_to_dict(recipe),
        "task_state": task.state_dict(),
        "model": model.state_dict(),
        "optim_generator": optimizers.generator.state_dict(),
        "optim_prior": None if optimizers.prior is None else optimizers.prior.state_dict(),
        "optim_inference": (
            None if optimizers.inference is None else optimizers.inference.state_dict()
        ),
        "rng": rng_states,
    }


# ------------------------------------------------------------------ resuming
def restore_weights(
    saved: dict[str, Any], source: Path, model: LatentEBM, optimizers: Optimizers
) -> None:
    """Load the model's and the optimisers' state from the checkpoint ``saved`` (read from
    ``source``)."""
    load_weights(model, saved["model"], source)
    load_weights(optimizers.generator, saved["optim_generator"], source, "optim_generator")
    if optimizers.prior is not None and saved.get("optim_prior") is not None:
        load_weights(optimizers.prior, saved["optim_prior"], source, "optim_prior")
    if optimizers.inference is not None and saved.get("optim_inference") is not None:
        load_weights(optimizers.inference, saved["optim_inference"], source, "optim_inference")


def saved_state(saved: dict[str, Any]) -> TrainState:
    """Where training stood when the checkpoint ``saved`` was written."""
    return TrainState(
        step=int(saved["step"]),
        epoch=int(saved["epoch"]),
        batch_in_epoch=int(saved["batch_in_epoch"]),
        skipped=int(saved.get("skipped", 0)),
        train_seconds=float(saved.get("train_seconds", 0.0)),
    )


def restore_random_streams(
    rng: list[Any], source: Path, langevin_rng: torch.Generator, ctx: DistContext
) -> None:
    """Restore this process's random streams from a checkpoint's ``rng`` (one entry per
    process); written by another number of processes, they restart from the seed (said once)."""
    if len(rng) == ctx.world_size:
        try:
            set_rng_state(rng[ctx.rank], langevin_rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{source}: damaged checkpoint: rng ({error!r})") from error
    elif ctx.is_main:
        say(
            f"checkpoint was written by {len(rng)} process(es), this run has "
            f"{ctx.world_size}: random streams restart from the seed"
        )


def check_compatible(recipe: Recipe, saved: dict[str, Any], source: Path) -> None:
    """The model and task of a run resumed under ``recipe`` must be those of the checkpoint's
    recipe ``saved`` (how the chains execute, ``model.compile``, may change)."""
    current = recipe_to_dict(recipe)
    saved = current_component_paths(saved)  # a checkpoint from before the tasks' rename
    saved = with_current_defaults(saved, recipe)  # keys added since it was saved
    for section in ("task", "model"):
        before, now = saved.get(section), current.get(section)
        if isinstance(before, dict) and isinstance(now, dict):
            before, now = dict(before), dict(now)
            for key in _MAY_CHANGE_ON_RESUME[section]:
                before.pop(key, None)
                now.pop(key, None)
            if section == "model":
                for side in (before, now):
                    if isinstance(side.get("generator"), dict):
                        side["generator"] = {
                            k: v
                            for k, v in side["generator"].items()
                            if k not in _GENERATOR_EXECUTION_KEYS
                        }
        diff = first_difference(before, now, section)
        if diff is not None:
            raise TrainingError(
                f"resume from {source}: {diff}; a resumed run keeps its task and model "
                "(start a new run to change them)"
            )


def apply_resumed_settings(
    saved_recipe: dict[str, Any], recipe: Recipe, optimizers: Optimizers, source: Path
) -> list[str]:
    """What a resumed run changes against its checkpoint's recipe ``saved_recipe``: the
    optimiser settings (applied, :func:`apply_optim_settings`) and ``trainer.freeze`` (followed
    from here on); one sentence each."""
    changes = apply_optim_settings(saved_recipe, recipe, optimizers, source)
    frozen_before = (saved_recipe.get("trainer") or {}).get("freeze") or []
    if list(frozen_before) != list(recipe.trainer.freeze):
        changes.append(
            f"trainer.freeze was {list(frozen_before)} in the checkpoint, now "
            f"{list(recipe.trainer.freeze)}: what is frozen from here on follows the recipe"
        )
    return changes


def apply_optim_settings(
    saved_recipe: dict[str, Any], recipe: Recipe, optimizers: Optimizers, source: Path
) -> list[str]:
    """Make a restored optimiser follow the recipe it resumes under; return what changed
    (:func:`_optim_changes`; a checkpoint whose stored ``optim`` settings are damaged is one
    :class:`CheckpointError` naming ``source``)."""
    try:
        return _optim_changes(saved_recipe, recipe, optimizers)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as error:
        raise CheckpointError(f"{source}: damaged checkpoint: recipe.optim ({error!r})") from error


def _optim_changes(
    saved_recipe: dict[str, Any], recipe: Recipe, optimizers: Optimizers
) -> list[str]:
    """Make a restored optimiser follow the recipe it resumes under; return what changed.

    Adam's moment estimates come from the checkpoint, but ``optim.*.lr``, ``betas`` and
    ``weight_decay`` are the recipe's: a new ``lr`` replaces the old one with the per-epoch
    decay already applied kept (``lr_new * current / lr_old``). Unchanged settings leave the
    restored state bit for bit, so a resumed run equals an uninterrupted one.
    """
    saved_optim = saved_recipe.get("optim") or {}
    pairs = [("generator", optimizers.generator), ("prior", optimizers.prior)]
    pairs.append(("inference", optimizers.inference))
    changes = []
    for name, optimizer in pairs:
        old = saved_optim.get(name)
        if optimizer is None or not isinstance(old, dict):
            continue
        new = getattr(recipe.optim, name)
        if float(old.get("lr", new.lr)) != new.lr:
            for group in optimizer.param_groups:
                group["lr"] = new.lr * group["lr"] / float(old["lr"])
            changes.append(f"optim.{name}.lr {old['lr']} -> {new.lr} applied")
        if tuple(old.get("betas", new.betas)) != tuple(new.betas):
            for group in optimizer.param_groups:
                group["betas"] = tuple(new.betas)
            changes.append(f"optim.{name}.betas {list(old['betas'])} -> {list(new.betas)} applied")
        if float(old.get("weight_decay", new.weight_decay)) != new.weight_decay:
            for group in optimizer.param_groups:
                group["weight_decay"] = new.weight_decay
            changes.append(
                f"optim.{name}.weight_decay {old['weight_decay']} -> {new.weight_decay} applied"
            )
    return changes


def reload_recipe(saved: dict[str, Any], source: Path) -> Recipe:
    """The recipe stored in a checkpoint."""
    try:
        return recipe_from_dict(saved["recipe"], source=str(source))
    except KeyError as error:
        raise CheckpointError(f"{source}: checkpoint has no recipe") from error


# ------------------------------------------------------------------ initialising from a run
def tied_to_tokens(parts: list[str] | None) -> bool:
    """Whether copying ``parts`` (None: all) ties the new run to the source's tokenizer."""
    return parts is None or "generator" in parts or "inference" in parts


def parts_to_copy(model: LatentEBM, weights: dict[str, Any], parts: list[str] | None) -> list[str]:
    """``trainer.init_parts``, or (None) every part ``model`` has that ``weights`` cover."""
    if parts is not None:
        return list(parts)
    return [
        part
        for part in MODEL_PARTS
        if getattr(model, part, None) is not None
        and len(getattr(model, part).state_dict()) > 0  # a Gaussian prior has nothing to copy
        and any(k.startswith(f"{part}.") for k in weights)
    ]
