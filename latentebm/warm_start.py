"""Start a new run from another model's weights, and hold parts of a model fixed.

Contract:

- :func:`read_source` reads the checkpoint that ``trainer.init_from`` names (a run directory, a
  checkpoint file, an exported folder, ``pretrained:NAME`` or ``hf:OWNER/REPO``) with
  ``weights_only=True``; a data-space short-run EBM checkpoint is refused.
- :func:`copy_parts` copies the named parts (``prior``, ``generator``, ``inference``) of its
  weights into a freshly built model; a part the source lacks or whose shapes differ is one
  :class:`~latentebm.errors.CheckpointError` naming the file and the part. Nothing else of the
  source run carries over: the step, the optimisers' moments and the chains' state start anew.
- :func:`freeze_parts` turns ``requires_grad`` off for the named parts, so the learning step of
  Algorithm 1 (Pang et al. 2020, "Learning latent space energy-based prior model") updates only
  the others: e.g. an EBM prior ``p_alpha(z)`` learned by eq. (10) from posterior samples of a
  given, fixed generator ``p_beta(x | z)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from latentebm.checkpoint import load_checkpoint, load_weights, require_fields
from latentebm.config import RecipeError
from latentebm.errors import CheckpointError

MODEL_PARTS = ("prior", "generator", "inference")
"""The parts of a :class:`~latentebm.model.LatentEBM` that ``init_parts`` and ``freeze`` name."""


def read_source(name: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file that ``name`` means and its contents (module docstring)."""
    from latentebm.export import resolve_model

    path = resolve_model(name)
    state = load_checkpoint(path, map_location="cpu")
    if state.get("family", "latent") != "latent":
        raise CheckpointError(
            f"{path}: a {state.get('family')} checkpoint; trainer.init_from takes latent EBM runs"
        )
    require_fields(state, path, {"model": dict, "task_state": (dict, type(None))})
    return path, state


def copy_parts(model: nn.Module, weights: dict[str, Any], parts: Iterable[str], path: Path) -> None:
    """Load ``weights`` (a saved model's ``state_dict``) into the named parts of ``model``."""
    for part in parts:
        module = getattr(model, part, None)
        prefix = f"{part}."
        sub = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if module is None:
            raise RecipeError(f"trainer.init_parts: this model has no {part}")
        if not sub and any(True for _ in module.state_dict()):
            raise CheckpointError(f"{path}: has no {part} weights (trainer.init_parts)")
        load_weights(module, sub, path, key=f"model.{part}")


def freeze_parts(model: nn.Module, parts: Iterable[str]) -> None:
    """``requires_grad_(False)`` on every parameter of the named parts of ``model``.

    Raises:
        RecipeError: a part the model lacks, or no trainable parameter left.
    """
    for part in parts:
        module = getattr(model, part, None)
        if module is None:
            raise RecipeError(f"trainer.freeze: this model has no {part}")
        module.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise RecipeError(f"trainer.freeze: {list(parts)} leaves nothing to train")
