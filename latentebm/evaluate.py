"""``latentebm evaluate``: test-set metrics of a trained run, written to ``metrics.json``.

Metrics: ``marginal_nll`` (``-log p(x)`` per example and perplexity by annealed importance
sampling, ``nll`` is its alias; see :mod:`latentebm.metrics.marginal`), ``recon_nll`` (the
reconstruction NLL of Pang et al. 2020, Table 2) and ``latent_usage`` (active units, ``I(x; z)``,
reconstruction gain), see :mod:`latentebm.metrics.likelihood_eval`; for text tasks ``fppl``,
``rppl`` and ``bleu`` (reconstruction BLEU, self-BLEU, distinct-n, average length), see
:mod:`latentebm.metrics.text_eval` and ``docs/metrics.md`` for the protocol; for molecule tasks
``moses`` (the MOSES table) and ``molecules`` (validity, uniqueness, novelty), see
:mod:`latentebm.metrics.molecule_eval`; for images ``anomaly``, ``mse`` and ``fid``. Without
``metrics`` a task's ``default_metrics`` are evaluated (text: ``marginal_nll``; molecules:
``molecules``).

This module chooses the metrics, split and batches and dispatches to the metrics' modules; the
metrics file it writes is :mod:`latentebm.evaluate_output`'s, the table it prints
:mod:`latentebm.evaluate_table`'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from latentebm.evaluate_output import (
    FORMAT_KEY,
    METRICS_FILE,
    METRICS_FORMAT,
    check_output,
    finish_evaluation,
    read_metrics_file,
    write_metrics,
)
from latentebm.evaluate_table import MOSES_COLUMNS, format_table
from latentebm.export import HUB_PREFIX, PRETRAINED_PREFIX, resolve_model
from latentebm.metrics.image_eval import ImageEvalSettings
from latentebm.metrics.likelihood_eval import (
    ALIASES,
    LIKELIHOOD_METRICS,
    LikelihoodEvalSettings,
    canonical,
)
from latentebm.metrics.molecule_eval import MoleculeEvalSettings
from latentebm.metrics.text_eval import TextEvalSettings
from latentebm.progress_bars import count_bar, example_bar
from latentebm.task_contract import DecodesSequences, optional_member

__all__ = [  # the metrics file and the table moved out; still importable from here
    "DEFAULT_BATCH_SIZE",
    "FORMAT_KEY",
    "KNOWN_METRICS",
    "METRICS_FILE",
    "METRICS_FORMAT",
    "MOSES_COLUMNS",
    "check_metrics",
    "check_output",
    "choose_split",
    "default_metrics",
    "evaluate",
    "format_table",
    "length_sorted_batches",
    "read_metrics_file",
    "spread_batches",
    "write_metrics",
]

T = TypeVar("T")

KNOWN_METRICS: tuple[str, ...] = (
    *LIKELIHOOD_METRICS,
    *ALIASES,
    "fppl",
    "rppl",
    "bleu",
    "moses",
    "molecules",
    "anomaly",
    "mse",
    "fid",
)

DEFAULT_BATCH_SIZE = 64


def check_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Parse ``"marginal_nll,fppl"`` or a sequence of names; unknown names raise; aliases
    (``nll``) become their metric (``marginal_nll``)."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [m for m in dict.fromkeys(names) if m]
    if not names:
        raise ValueError(f"no metric given (known: {', '.join(KNOWN_METRICS)})")
    unknown = [m for m in names if m not in KNOWN_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(KNOWN_METRICS)})"
        )
    return canonical(names)


def spread_batches(batches: Sequence[T], count: int) -> list[T]:
    """``count`` of ``batches`` at evenly spaced positions, first and last included (all of
    them if ``count`` is not smaller): from length-sorted batches, a subset with every length."""
    n = len(batches)
    if count >= n:
        return list(batches)
    if count == 1:
        return [batches[n // 2]]
    return [batches[round(i * (n - 1) / (count - 1))] for i in range(count)]


def choose_split(task: Any, split: str | None) -> str:
    """The split to evaluate: ``split`` when given (it must exist), else ``test``, else
    ``valid`` (the quick start has no test split), said on stderr.

    Raises:
        ValueError: ``split`` is not a split of the task, or the task has neither.
    """
    available = list(task.splits)  # the task contract's (latentebm.task_contract.Task)
    if split is not None:
        if split not in available:
            raise ValueError(
                f"--split {split}: not a split of this task (it has: {', '.join(available)})"
            )
        return split
    for candidate in ("test", "valid"):
        if candidate in available:
            if candidate != "test":
                print(
                    f"evaluate: the task has no test split; evaluating {candidate} "
                    "(choose with --split)",
                    file=sys.stderr,
                )
            return candidate
    raise ValueError(f"the task has no test or valid split (it has: {', '.join(available)})")


def evaluate(
    run_dir: str | Path,
    split: str | None = None,
    metrics: str | Sequence[str] | None = None,
    *,
    likelihood: LikelihoodEvalSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    spread: bool = False,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
    output: str | Path | None = None,
    write: bool = True,
    text: TextEvalSettings | None = None,
    molecules: MoleculeEvalSettings | None = None,
    images: ImageEvalSettings | None = None,
) -> dict[str, Any]:
    """Evaluate a run's newest checkpoint on ``split`` and record the result.

    ``marginal_nll``: ``-log p(x)`` per example in nats (a sentence's summed over its tokens incl.
    ``<eos>``), per token and ``PPL = exp(total NLL / total tokens)``, by AIS with its standard
    error (:func:`latentebm.metrics.marginal.evaluate_marginal_nll`) or, with
    ``likelihood.estimator = "is"``, importance sampling
    (:func:`latentebm.metrics.nll.evaluate_nll`);
    ``log Z(alpha)`` by AIS. Examples are scored in batches of similar length (the split in file
    order, stably sorted by length: padding costs time, not accuracy). Cost and tightness of the
    defaults are measured in docs/RESULTS.md (BDMC on data simulated from a trained PTB model).

    Args:
        run_dir: a run directory (newest checkpoint) or a checkpoint file.
        split: the task's split (``test``, ``valid``, ``train``); None: ``test``, or ``valid``
            when the task has no test split (said on stderr).
        metrics: names or a comma-separated string (module docstring); None: the task's
            ``default_metrics`` (else ``marginal_nll``).
        likelihood: settings of ``marginal_nll``, ``recon_nll`` and ``latent_usage``
            (default :class:`~latentebm.metrics.likelihood_eval.LikelihoodEvalSettings`).
        batch_size: examples per batch; their chains go through the decoder in chunks of at
            most ``likelihood.ais.batch_size`` (example, chain) pairs.
        max_batches: evaluate only ``max_batches`` batches: the first ones (the shortest
            sentences; timing, smoke tests), or with ``spread`` ones spread evenly over the
            length-sorted split (a subset with the split's mix of lengths).
        spread: see ``max_batches``.
        seed: seeds every chain and draw.
        progress: a tqdm progress bar over batches (on stderr).
        device: where the model runs.
        output: where to write; default ``RUN_DIR/metrics.json`` (the checkpoint's run
            directory). Existing entries are merged (see :func:`write_metrics`); a file
            ``evaluate`` did not write is refused before anything is evaluated
            (:func:`check_output`).
        write: ``False``: only return the result.
        text: sampling and language-model settings of ``fppl``, ``rppl`` and ``bleu``
            (default :class:`~latentebm.metrics.text_eval.TextEvalSettings`).
        molecules: sampling settings of ``moses`` and ``molecules``
            (default :class:`~latentebm.metrics.molecule_eval.MoleculeEvalSettings`).
        images: settings of ``anomaly``, ``mse`` and ``fid``
            (default :class:`~latentebm.metrics.image_eval.ImageEvalSettings`).

    Returns:
        ``{"split", "metrics": {name: {...}}, "checkpoint", "step", "seconds", "output"}``;
        each entry holds the values and every setting.
    """
    from latentebm.metrics.image_eval import evaluate_image_metrics
    from latentebm.metrics.likelihood_eval import evaluate_likelihood_metrics
    from latentebm.metrics.molecule_eval import evaluate_molecule_metrics
    from latentebm.metrics.text_eval import evaluate_text_metrics
    from latentebm.pretrained import load

    if metrics is not None:
        check_metrics(metrics)  # fail before loading anything
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    likelihood = likelihood or LikelihoodEvalSettings()
    if output is not None:
        out_path = Path(output)
    elif str(run_dir).startswith((PRETRAINED_PREFIX, HUB_PREFIX)):
        resolve_model(run_dir)  # an unknown name is reported as such first
        raise ValueError(
            f"{run_dir}: a shipped or downloaded model has no run directory to write "
            f"{METRICS_FILE} into; give -o FILE.json"
        )
    else:
        out_path = _run_dir(resolve_model(run_dir)) / METRICS_FILE
    if write:
        check_output(out_path)  # a file evaluate cannot merge into: refused before the work

    started = time.perf_counter()
    pretrained = load(run_dir, device=device)
    model, task = pretrained.model, pretrained.task
    names = check_metrics(metrics if metrics is not None else default_metrics(task))
    split = choose_split(task, split)
    result: dict[str, Any] = {}
    wanted = [name for name in names if name in LIKELIHOOD_METRICS]
    others = [name for name in names if name not in LIKELIHOOD_METRICS]
    if max_batches is not None and others:
        print(
            f"evaluate: warning: --max-batches limits {', '.join(sorted(LIKELIHOOD_METRICS))} "
            f"only; {', '.join(others)} use their own counts (see --help)",
            file=sys.stderr,
        )
    if wanted:
        batches = length_sorted_batches(task, split, batch_size)
        n_batches_total = len(batches)
        if max_batches is not None:
            batches = spread_batches(batches, max_batches) if spread else batches[:max_batches]
        generator = torch.Generator(device=model.device)
        generator.manual_seed(seed)
        entries = evaluate_likelihood_metrics(
            model,
            batches,
            task.num_target_tokens,
            wanted,
            likelihood,
            generator=generator,
            progress=(lambda items, label: example_bar(items, True, f"{label} {split}"))
            if progress
            else None,
        )
        n_examples = sum(b.shape[0] for b in batches)
        for name, entry in entries.items():
            entry.update(
                {
                    "seed": seed,
                    "split": split,
                    "examples": n_examples,
                    "batch_size": batch_size,
                    "batches": len(batches),
                    "batches_in_split": n_batches_total,
                    "complete": len(batches) == n_batches_total,
                    "spread": spread and len(batches) < n_batches_total,
                    "likelihood_settings": likelihood.as_dict(),
                    "checkpoint": str(pretrained.checkpoint),
                    "step": pretrained.step,
                    "device": str(model.device),
                    "torch_threads": torch.get_num_threads(),
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            result[name] = entry

    run_dir = _run_dir(pretrained.checkpoint)
    text_entries = evaluate_text_metrics(
        pretrained,
        names,
        split,
        text or TextEvalSettings(),
        run_dir=run_dir,
        seed=seed,
        progress=count_bar if progress else None,
    )
    stamp = {
        "split": split,
        "checkpoint": str(pretrained.checkpoint),
        "step": pretrained.step,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    molecule_entries = evaluate_molecule_metrics(
        pretrained,
        names,
        molecules or MoleculeEvalSettings(),
        data_root=pretrained.recipe.data.root,
        seed=seed,
        progress=progress,
    )
    image_entries = evaluate_image_metrics(
        model, task, names, split, images or ImageEvalSettings(), seed=seed
    )
    for name, entry in {**text_entries, **molecule_entries, **image_entries}.items():
        result[name] = {**entry, **stamp}

    return finish_evaluation(
        out_path,
        split,
        result,
        checkpoint=pretrained.checkpoint,
        step=pretrained.step,
        seconds=time.perf_counter() - started,
        write=write,
    )


def default_metrics(task: Any) -> tuple[str, ...]:
    """What ``evaluate`` computes when no metric is named: ``task.default_metrics`` or the
    marginal NLL."""
    return tuple(canonical(optional_member(task, "default_metrics")))


def length_sorted_batches(task: Any, split: str, batch_size: int) -> list[Tensor]:
    """The split's examples (``task.batches(split, shuffle=False)``, file order) stably sorted
    by length and re-cut into batches of ``batch_size``, each trimmed to its longest row.

    Needs a task of token sequences (:class:`~latentebm.task_contract.DecodesSequences`, for its
    ``pad_id``); otherwise the task's own batches are returned.
    """
    batches = task.batches(split, batch_size, seed=0, epoch=0, shuffle=False)
    if not isinstance(task, DecodesSequences) or not batches or batches[0].dim() != 2:
        return batches
    pad_id = task.pad_id
    width = max(b.shape[1] for b in batches)
    rows = torch.cat(
        [torch.nn.functional.pad(b, (0, width - b.shape[1]), value=pad_id) for b in batches]
    )
    lengths = (rows != pad_id).sum(dim=1)
    order = torch.sort(lengths, stable=True).indices
    out = []
    for start in range(0, rows.shape[0], batch_size):
        idx = order[start : start + batch_size]
        out.append(rows[idx, : int(lengths[idx].max())].contiguous())
    return out


def _run_dir(checkpoint: Path) -> Path:
    """``RUN/checkpoints/step_N.pt`` -> ``RUN``; any other file -> its folder."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent
