"""Use a trained model from Python: ``latentebm.load(run_dir).generate(20)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
        beam_size: int = 5,
        length_penalty: float = 0.0,
        progress: bool = False,
    ) -> list[str]:
        """``n`` decoded samples: ``z`` from the prior chain (K0 steps, or ``langevin_steps``).

        ``decode``: ``greedy``, ``sample`` (``temperature``, ``top_k``) or ``beam``
        (``beam_size``, ``length_penalty``), see ``LSTMDecoder.sample``. ``progress``: a tqdm
        bar on stderr. Samples are drawn ``batch_size`` at a time from one random stream, so
        they depend on the seed, ``n`` and ``batch_size``.
        """
        generator = self.random_generator(seed)
        beam = (
            {"beam_size": beam_size, "length_penalty": length_penalty} if decode == "beam" else {}
        )
        out: list[str] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="generate", unit="sample", dynamic_ncols=True, leave=False)
        while len(out) < n:
            size = min(batch_size, n - len(out))
            tokens = self.model.generate(
                size,
                generator=generator,
                n_steps=langevin_steps,
                decode=decode,
                temperature=temperature,
                top_k=top_k,
                **beam,
            )
            out.extend(self.task.decode(tokens))
            if bar is not None:
                bar.update(size)
        if bar is not None:
            bar.close()
        return out

    def random_generator(self, seed: int | None) -> torch.Generator:
        """A generator on the model's device, seeded with ``seed`` (None: a fresh random seed)."""
        generator = torch.Generator(self.model.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    def trajectory(
        self,
        n: int,
        steps: Sequence[int],
        *,
        langevin_steps: int | None = None,
        seed: int | None = None,
        **decode_opts: Any,
    ) -> dict[str, Any]:
        """Sentences at ``steps`` of ``n`` prior chains of ``langevin_steps`` steps (default K0)
        and the energy along them: :func:`latentebm.generation.prior_trajectory`."""
        from latentebm.generation import prior_trajectory

        return prior_trajectory(
            self.model,
            self.task,
            n,
            steps,
            langevin_steps,
            generator=self.random_generator(seed),
            **decode_opts,
        )

    def interpolate(
        self,
        sentence_a: str,
        sentence_b: str,
        n_points: int = 8,
        *,
        path: str = "linear",
        posterior_steps: int | None = None,
        n_chains: int = 8,
        seed: int | None = None,
        **decode_opts: Any,
    ) -> list[tuple[float, str]]:
        """``[(t, sentence)]`` along a path between the posterior z of two sentences:
        :func:`latentebm.generation.interpolate`."""
        from latentebm.generation import interpolate

        return interpolate(
            self.model,
            self.task,
            sentence_a,
            sentence_b,
            n_points,
            path,  # type: ignore[arg-type]
            posterior_steps,
            n_chains=n_chains,
            generator=self.random_generator(seed),
            **decode_opts,
        )

    def sample_images(
        self,
        n: int,
        *,
        langevin_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 500,
    ) -> torch.Tensor:
        """``n`` images ``g_beta(z)`` (the generator's mean, in [-1, 1], ``(n, C, H, W)``) with
        ``z`` from the prior chain (K0 steps, or ``langevin_steps``): an image model's
        :meth:`generate`."""
        generator = self.random_generator(seed)
        parts = []
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            parts.append(self.model.generate(size, generator=generator, n_steps=langevin_steps))
        return torch.cat(parts)

    def anomaly_score(
        self,
        images: torch.Tensor | np.ndarray,
        *,
        n_steps: int | None = None,
        n_chains: int = 1,
        seed: int | None = 0,
        batch_size: int = 500,
    ) -> torch.Tensor:
        """One anomaly score per image, higher = more anomalous (seed 001, Section 3.4).

        The score is ``-[log p_beta(x | z) + f_alpha(z) + log N(z; 0, sigma^2 I)]``, the negative
        unnormalised log joint at the end of a posterior Langevin chain from noise (K1 steps, or
        ``n_steps``), averaged over ``n_chains`` independent chains
        (:func:`latentebm.metrics.anomaly.anomaly_scores`).

        Args:
            images: ``(B, C, H, W)`` or ``(B, H, W)`` (one channel), floats in [-1, 1] as the
                task feeds the model, or ``uint8`` in [0, 255] (converted as ``x / 127.5 - 1``).
            n_steps, n_chains: the posterior chains.
            seed: seeds the chains (None: a fresh random seed).
            batch_size: images per chain batch.

        Returns:
            a CPU float tensor ``(B,)``.
        """
        from latentebm.metrics.anomaly import anomaly_scores

        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1.0
        x = x.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        shape = tuple(getattr(self.model.generator, "image_shape", x.shape[1:]))
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )
        generator = self.random_generator(seed)
        scores = [
            anomaly_scores(
                self.model,
                x[start : start + batch_size].to(self.model.device),
                n_steps=n_steps,
                n_chains=n_chains,
                generator=generator,
            ).cpu()
            for start in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(scores)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    trusted_modules: Sequence[str] = (),
) -> Pretrained:
    """Load the newest checkpoint of a run directory (or a checkpoint file).

    The checkpoint's recipe names its task and generator classes; they are imported only from
    the toolkit's packages (``latentebm``, ``tasks``), the module prefixes in the environment
    variable ``LATENTEBM_TRUSTED_MODULES`` and ``trusted_modules`` (``docs/guarantees.md``), so
    loading a checkpoint from elsewhere runs no code from the working directory.

    Raises:
        CheckpointError: for a file that is not a readable checkpoint.
        RecipeError: naming the checkpoint and the key for a recipe that does not validate or
            names a component outside the trusted modules.
    """
    checkpoint = resolve_checkpoint(path)
    state = load_checkpoint(checkpoint, map_location=device)
    recipe = recipe_from_dict(
        state["recipe"], source=str(checkpoint), trusted_modules=trusted_modules
    )
    task = build_task(recipe, state=state["task_state"])
    model = build_model(recipe, task)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return Pretrained(model, task, recipe, int(state["step"]), checkpoint)
