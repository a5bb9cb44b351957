"""Use a trained model from Python: ``latentebm.load(run_dir).generate(20)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentebm.build import build_model, build_task
from latentebm.checkpoint import load_checkpoint, resolve_checkpoint
from latentebm.config import Recipe, recipe_from_dict
from latentebm.model import LatentEBM


@dataclass
class Pretrained:
    """A trained ``LatentEBM`` with its task (tokenizer) and recipe.

    Attributes:
        model: the model, in eval mode.
        task: the task object that encodes and decodes examples.
        recipe: the resolved recipe the model was trained with.
        step: the training step of the checkpoint.
        checkpoint: where it was loaded from.
    """

    model: LatentEBM
    task: Any
    recipe: Recipe
    step: int
    checkpoint: Path

    def generate(
        self,
        n: int,
        *,
        decode: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        langevin_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 500,
    ) -> list[str]:
        """``n`` decoded samples: ``z`` from the prior chain (K0 steps, or ``langevin_steps``)."""
        generator = torch.Generator(self.model.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        out: list[str] = []
        while len(out) < n:
            size = min(batch_size, n - len(out))
            tokens = self.model.generate(
                size,
                generator=generator,
                n_steps=langevin_steps,
                decode=decode,
                temperature=temperature,
                top_k=top_k,
            )
            out.extend(self.task.decode(tokens))
        return out


def load(path: str | Path, device: str | torch.device = "cpu") -> Pretrained:
    """Load the newest checkpoint of a run directory (or a checkpoint file)."""
    checkpoint = resolve_checkpoint(path)
    state = load_checkpoint(checkpoint, map_location=device)
    recipe = recipe_from_dict(state["recipe"], source=str(checkpoint))
    task = build_task(recipe, state=state["task_state"])
    model = build_model(recipe, task)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return Pretrained(model, task, recipe, int(state["step"]), checkpoint)
