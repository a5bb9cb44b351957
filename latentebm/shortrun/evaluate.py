"""``latentebm evaluate`` for a data-space short-run EBM run: the metrics of Nijkamp, Hill, Zhu
and Wu (2019), "Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based
Model", written to the run's ``metrics.json`` in the format of every evaluation
(:mod:`latentebm.evaluate_output`).

Contract:

* ``mse`` (the default): reconstruction error of their Section 3.4 / Table 1 (b). For each of
  the first ``n`` images of the split, the initial noise ``z`` is fitted by Adam on
  ``||x - M_theta(z)||^2`` through the noise-free K-step chain
  (:func:`~latentebm.shortrun.tools.reconstruct`); the error is the mean squared error per
  pixel of ``M_theta(z)`` against ``x``, on the task's ``[-1, 1]`` scale (and divided by 4, on
  ``[0, 1]``). ``n``, the Adam iterations and learning rate default to the recipe's
  ``trainer.reconstruction_*`` (what training reported at its end).
* ``fid``: the Fréchet distance between the features of ``n_samples`` images
  ``x = M_theta(z)``, ``z ~ p_0`` (their eq. 5, the chain with its noise, as trained), and of the
  reference split, through the feature network of
  :func:`~latentebm.metrics.image_eval.fid_extractor` (MNIST-FID or Inception).
* A metric of the latent EBM (marginal NLL, recon NLL, ...) does not apply: one line says so.

The model is the checkpoint's energy; the task (for the split's images) is built from the
checkpoint's recipe. Nothing here trains or changes the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentebm.config import instantiate
from latentebm.evaluate_output import (
    METRICS_FILE,
    check_output,
    finish_evaluation,
    run_metrics_path,
)
from latentebm.export import HUB_PREFIX, PRETRAINED_PREFIX
from latentebm.metrics.image_eval import ImageEvalSettings
from latentebm.progress import logged_within
from latentebm.shortrun.config import ShortRunRecipe
from latentebm.shortrun.tools import (
    ShortRunModel,
    load_shortrun_checkpoint,
    reconstruct,
    reconstruction_entry,
)
from latentebm.task_contract import DataSpaceTask, check_task

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHORTRUN_METRICS", "SHORTRUN_METRICS", "evaluate_shortrun", "split_images"]

SHORTRUN_METRICS: tuple[str, ...] = ("mse", "fid")
"""The ``latentebm evaluate`` metrics of a short-run EBM run."""
DEFAULT_SHORTRUN_METRICS: tuple[str, ...] = ("mse",)
"""What ``evaluate`` computes on a short-run run when no metric is named (``fid`` needs a
feature network)."""


def check_shortrun_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """The metric names asked for (comma-separated or a list); the default when None.

    Raises:
        ValueError: one line naming a metric that does not apply and those that do.
    """
    if metrics is None:
        return list(DEFAULT_SHORTRUN_METRICS)
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    names = [name.strip() for name in items if name.strip()]
    if not names:
        raise ValueError("no metric named (a short-run EBM run has: mse, fid)")
    for name in names:
        if name not in SHORTRUN_METRICS:
            raise ValueError(
                f"metric {name!r} does not apply to a data-space short-run EBM run (an "
                f"unnormalised density over images, without a latent variable); its metrics: "
                f"{', '.join(SHORTRUN_METRICS)}"
            )
    return list(dict.fromkeys(names))


def split_images(task: Any, split: str, batch_size: int, limit: int | None = None) -> Tensor:
    """The first ``limit`` images of ``split`` in file order (all when None), ``(N, C, H, W)``.

    Raises:
        ValueError: the task has no such split, or it holds no image.
    """
    try:
        batches = task.batches(split, batch_size, seed=0, epoch=0, shuffle=False)
    except (KeyError, ValueError) as error:
        raise ValueError(f"--split {split}: not a split of this run's task ({error})") from None
    out: list[Tensor] = []
    count = 0
    for batch in batches:
        if limit is not None and count >= limit:
            break
        keep = batch if limit is None else batch[: limit - count]
        out.append(keep)
        count += keep.shape[0]
    if not out:
        raise ValueError(f"split {split!r} has no images")
    return torch.cat(out)


def reconstruction_error(
    model: ShortRunModel,
    images: Tensor,
    *,
    n_iters: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Mean squared error per pixel (``[-1, 1]`` scale) of :func:`reconstruct` over
    ``images``, fitted ``batch_size`` images at a time."""
    squared, pixels, n = 0.0, 0, images.shape[0]
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        label = f"mse: noise fit of images {start + 1}-{start + batch.shape[0]} of {n}, iteration"
        with logged_within(logger, label):
            _, mse = reconstruct(model, batch, n_iters, lr, generator=generator)
        squared += mse * batch.numel()
        pixels += batch.numel()
    return squared / pixels


def _mse_entry(
    model: ShortRunModel,
    recipe: ShortRunRecipe,
    task: Any,
    split: str,
    settings: ImageEvalSettings,
    generator: torch.Generator,
) -> dict[str, Any]:
    started = time.perf_counter()
    trainer = recipe.trainer
    n = (
        settings.recon_images
        if settings.recon_images is not None
        else trainer.reconstruction_images
    )
    if n < 1:
        raise ValueError(
            f"mse: reconstruct at least one image (--recon-images, or the recipe's "
            f"trainer.reconstruction_images, is {n})"
        )
    n_iters = (
        settings.recon_steps if settings.recon_steps is not None else trainer.reconstruction_iters
    )
    if n_iters < 1:
        raise ValueError(
            f"mse: --recon-steps counts the noise fit's iterations; at least 1, got {n_iters}"
        )
    images = split_images(task, split, settings.batch_size, n).to(model.device)
    mse = reconstruction_error(
        model,
        images,
        n_iters=n_iters,
        lr=trainer.reconstruction_lr,
        batch_size=settings.batch_size,
        generator=generator,
    )
    entry = reconstruction_entry(
        mse,
        n=images.shape[0],
        split=split,
        iters=n_iters,
        lr=trainer.reconstruction_lr,
        chain_steps=model.chain.n_steps,
    )
    return {
        **entry,
        "batch_size": int(settings.batch_size),
        "seconds": time.perf_counter() - started,
    }


def _fid_entry(
    model: ShortRunModel,
    task: Any,
    split: str,
    settings: ImageEvalSettings,
    generator: torch.Generator,
) -> dict[str, Any]:
    from latentebm.metrics.fid import compute_statistics, frechet_distance
    from latentebm.metrics.image_eval import fid_extractor

    if settings.langevin_steps is not None:
        raise ValueError(
            "--langevin-steps: a short-run EBM samples with the K steps it was trained with"
        )
    if settings.fid_samples < 1:
        raise ValueError(f"fid: --fid-samples must be >= 1, got {settings.fid_samples}")
    extractor, feature_name, about = fid_extractor(settings)  # a missing network: before sampling
    started = time.perf_counter()
    reference_split = settings.fid_reference or split
    reference = split_images(task, reference_split, settings.batch_size)
    samples = []
    for start in range(0, settings.fid_samples, settings.batch_size):
        k = min(settings.batch_size, settings.fid_samples - start)
        label = f"fid: samples {start + 1}-{start + k} of {settings.fid_samples}, chain"
        with logged_within(logger, label):
            samples.append(model.sample(k, generator).cpu())
    mu_gen, sigma_gen = compute_statistics(extractor, torch.cat(samples), settings.batch_size)
    mu_ref, sigma_ref = compute_statistics(extractor, reference, settings.batch_size)
    return {
        "fid": frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref),
        "feature": feature_name,
        "feature_network": about,
        "n_samples": int(settings.fid_samples),
        "n_reference": int(reference.shape[0]),
        "split": reference_split,
        "chain_steps": int(model.chain.n_steps),
        "batch_size": int(settings.batch_size),
        "seconds": time.perf_counter() - started,
    }


def _default_split(task: Any, split: str | None) -> str:
    """``split`` when given, else ``test``, else ``valid``, else ``train``: the first the task
    has (the order the trainer's end-of-training reconstruction uses)."""
    if split is not None:
        return split
    available = getattr(task, "splits", None)
    for candidate in ("test", "valid", "train"):
        if available is None or candidate in available:
            return candidate
    raise ValueError("the run's task has no test, valid or train split")


def evaluate_shortrun(
    run: str | Path,
    split: str | None = None,
    metrics: str | Sequence[str] | None = None,
    *,
    images: ImageEvalSettings | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    output: str | Path | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a short-run run's newest checkpoint (or a checkpoint file) on ``split``.

    Args:
        run: a run directory, a checkpoint file or an exported folder.
        split: the task's split; None: ``test`` (else ``valid``, else ``train``).
        metrics: names or a comma-separated string among :data:`SHORTRUN_METRICS`; None:
            :data:`DEFAULT_SHORTRUN_METRICS`.
        images: ``recon_images`` (images reconstructed), ``recon_steps`` (Adam iterations of the
            noise fit), ``fid_samples``, ``fid_features`` / ``inception``, ``fid_reference``,
            ``batch_size``; the rest does not apply.
        seed: seeds the initial noise of every chain.
        device: where the model runs.
        output: the metrics file; default the run's (``RUN/metrics.json``, merged into as
            ``evaluate`` does, :func:`~latentebm.evaluate_output.run_metrics_path`).
        write: ``False``: only return the result.

    Returns:
        ``{"split", "metrics": {name: {...}}, "checkpoint", "step", "seconds", "output"}``, as
        :func:`latentebm.evaluate.evaluate`.
    """
    names = check_shortrun_metrics(metrics)
    settings = images or ImageEvalSettings()
    if settings.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {settings.batch_size}")
    loaded = load_shortrun_checkpoint(run, map_location=device)
    checkpoint = loaded.checkpoint
    if output is not None:
        out_path = Path(output)
    elif str(run).startswith((PRETRAINED_PREFIX, HUB_PREFIX)):
        raise ValueError(
            f"{run}: a shipped or downloaded model has no run directory to write "
            f"{METRICS_FILE} into; give -o FILE.json"
        )
    else:
        parent = checkpoint.parent
        out_path = run_metrics_path(parent.parent if parent.name == "checkpoints" else parent)
    if write:
        check_output(out_path)  # refused before the work
    started = time.perf_counter()
    recipe = loaded.recipe
    task = instantiate(recipe.task, data_root=recipe.data.root, state=None)
    check_task(task, recipe.task.component, DataSpaceTask)
    split = _default_split(task, split)
    model = loaded.model
    stamp = {
        "seed": int(seed),
        "checkpoint": str(checkpoint),
        "step": loaded.step,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    result: dict[str, Any] = {}
    for name in names:
        generator = torch.Generator(model.device).manual_seed(seed)
        if name == "mse":
            entry = _mse_entry(model, recipe, task, split, settings, generator)
        else:
            entry = _fid_entry(model, task, split, settings, generator)
        result[name] = {**entry, **stamp}
    return finish_evaluation(
        out_path,
        split,
        result,
        checkpoint=checkpoint,
        step=loaded.step,
        seconds=time.perf_counter() - started,
        write=write,
    )
