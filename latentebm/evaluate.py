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
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from latentebm.atomic import atomic_write
from latentebm.export import HUB_PREFIX, PRETRAINED_PREFIX, resolve_model
from latentebm.metrics.image_eval import ImageEvalSettings
from latentebm.metrics.likelihood_eval import (
    ALIASES,
    LIKELIHOOD_METRICS,
    LikelihoodEvalSettings,
    canonical,
)
from latentebm.metrics.lm import describe_training
from latentebm.metrics.molecule_eval import MoleculeEvalSettings
from latentebm.metrics.text_eval import TextEvalSettings
from latentebm.progress import reporting_within

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
METRICS_FILE = "metrics.json"
FORMAT_KEY = "format"
METRICS_FORMAT = "latentebm-evaluate-metrics"
"""``metrics.json[FORMAT_KEY]``: marks a file ``evaluate`` wrote, the only kind it merges into."""


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
    if not hasattr(task, "splits"):  # a task that does not list its splits: trust the caller
        return split or "test"
    available = list(task.splits)
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
            progress=(lambda items, label: _progress(items, True, f"{label} {split}"))
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
        progress=_count_progress if progress else None,
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

    if write:
        write_metrics(out_path, split, result)
    return {
        "split": split,
        "metrics": result,
        "checkpoint": str(pretrained.checkpoint),
        "step": pretrained.step,
        "seconds": time.perf_counter() - started,
        "output": str(out_path) if write else None,
    }


def default_metrics(task: Any) -> tuple[str, ...]:
    """What ``evaluate`` computes when no metric is named: ``task.default_metrics`` or the
    marginal NLL."""
    return tuple(canonical(getattr(task, "default_metrics", ("marginal_nll",))))


def length_sorted_batches(task: Any, split: str, batch_size: int) -> list[Tensor]:
    """The split's examples (``task.batches(split, shuffle=False)``, file order) stably sorted
    by length and re-cut into batches of ``batch_size``, each trimmed to its longest row.

    Needs a padded text task (``task.pad_id``); otherwise the task's own batches are returned.
    """
    batches = task.batches(split, batch_size, seed=0, epoch=0, shuffle=False)
    pad_id = getattr(task, "pad_id", None)
    if pad_id is None or not batches or batches[0].dim() != 2:
        return batches
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


def _is_metrics_file(data: object) -> bool:
    """Whether parsed JSON is a file :func:`write_metrics` wrote: it carries the format marker,
    or (written before the marker existed) it is ``{split: {metric: entry}}`` with every entry
    holding the ``checkpoint`` and ``step`` that ``evaluate`` records."""
    if not isinstance(data, dict):
        return False
    if data.get(FORMAT_KEY) == METRICS_FORMAT:
        return True
    return bool(data) and all(
        isinstance(section, dict)
        and section
        and all(
            isinstance(entry, dict) and "checkpoint" in entry and "step" in entry
            for entry in section.values()
        )
        for section in data.values()
    )


def read_metrics_file(path: str | Path) -> dict[str, Any]:
    """The content of a metrics file ``evaluate`` wrote at ``path`` (``{}`` if there is none).

    Raises:
        ValueError: ``path`` is a folder, cannot be read, or is not a file that ``evaluate``
            wrote (not JSON, or JSON of another format): merging into it or replacing it
            could lose someone's data. One line naming the file.
    """
    path = Path(path)
    refuse = "not written by latentebm evaluate, so not merged into or replaced: choose another -o"
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give evaluate a file name (-o PATH.json)")
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: exists and is not JSON (not UTF-8 text); {refuse}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: exists and is not JSON ({error.msg} at line {error.lineno}); {refuse}"
        ) from None
    if not _is_metrics_file(data):
        raise ValueError(f"{path}: a JSON file {refuse}")
    return data


def check_output(path: str | Path) -> None:
    """Fail now, not after the evaluation, when ``write_metrics(path, ...)`` would: ``path``
    is a folder or a file ``evaluate`` did not write (:func:`read_metrics_file`), or its folder
    cannot be created or written. Raises ``ValueError`` with one line naming the path."""
    path = Path(path)
    read_metrics_file(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{path}: cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot be written: no write permission in {folder}")


def write_metrics(path: str | Path, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge ``{split: {metric: entry}}`` into the metrics file at ``path`` atomically.

    The file holds ``{"format": METRICS_FORMAT, split: {metric: entry}}``. Only a file this
    function wrote is merged into (:func:`read_metrics_file`; anything else raises
    ``ValueError`` and is left as it is). Other splits and metrics are kept. An earlier entry
    for the same split and metric is not lost: it moves into the new entry's ``history`` list
    (oldest first), together with the earlier entry's own history. Written with
    :func:`latentebm.atomic.atomic_write` (temporary file, fsync, rename): an existing file
    keeps its permissions, a new one gets the umask's. Returns the whole new content.
    """
    path = Path(path)
    if split == FORMAT_KEY:
        raise ValueError(f"{split!r} is reserved in a metrics file; not a split name")
    old = read_metrics_file(path)
    old.pop(FORMAT_KEY, None)
    data: dict[str, Any] = {FORMAT_KEY: METRICS_FORMAT, **old}
    section = data.setdefault(split, {})
    for name, entry in metrics.items():
        entry = dict(entry)
        previous = section.get(name)
        if previous is not None:
            previous = dict(previous)
            history = list(previous.pop("history", []))
            entry["history"] = [*history, previous]
        section[name] = entry
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, allow_nan=True)
        handle.write("\n")
    return data


def format_table(result: dict[str, Any]) -> str:
    """The rows printed by ``latentebm evaluate``."""
    metrics = result["metrics"]
    rows: list[tuple[str, str]] = [
        ("split", result["split"]),
        ("checkpoint", f"{result['checkpoint']} (step {result['step']})"),
    ]
    rows += _likelihood_rows(metrics)
    rows += _text_rows(metrics)
    rows += _molecule_rows(metrics)
    rows += _image_rows(metrics)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _likelihood_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    nll, recon, usage = (metrics.get(k) for k in ("marginal_nll", "recon_nll", "latent_usage"))
    if nll is not None:
        settings = nll["settings"]
        se = nll.get("std_error")
        plus_minus = f" ± {se:.3f}" if se is not None else ""
        log_z = nll["log_z"]
        rows += [
            ("examples", f"{nll['n_examples']} ({nll['total_tokens']} tokens)"),
            ("marginal NLL (nats/example)", f"{nll['nll_per_example']:.3f}{plus_minus}"),
            ("marginal NLL (nats/token)", f"{nll['nll_per_token']:.4f}"),
            ("PPL", f"{nll['ppl']:.2f}"),
            (
                "log Z",
                f"{log_z['value']:.4f} ± {log_z['std_error']:.2g} (AIS, {log_z['n_chains']} "
                f"chains x {log_z['n_temperatures']} temperatures)",
            ),
        ]
        if settings["estimator"] == "exact":
            rows.append(("estimator", "exact (no latent variable)"))
        elif settings["estimator"] == "ais":
            rows.append(
                (
                    "estimator",
                    f"AIS from {settings['init']}, {settings['n_chains']} chains x "
                    f"{settings['n_temperatures']} temperatures, {settings['leapfrog_steps']} "
                    f"leapfrog steps; acceptance {nll['mean_acceptance']:.2f}, mean ESS "
                    f"{nll['mean_ess']:.2f} of {settings['n_chains']}",
                )
            )
        else:
            rows.append(
                (
                    "estimator",
                    f"importance sampling (fast, looser): {nll['n_importance']} samples, proposal "
                    f"fitted to {settings['n_chains']} chains x {settings['chain_steps']} steps; "
                    f"mean ESS {nll['mean_ess']:.2f} of {nll['n_importance']}",
                )
            )
        rows.append(("marginal NLL seconds", f"{nll['seconds']:.1f}"))
        if not nll["complete"]:
            rows.append(("note", f"{nll['batches']} of {nll['batches_in_split']} batches"))
    if recon is not None:
        rows += [
            (
                "recon NLL (Table 2)",
                f"{recon['recon_nll']:.3f} nats/example, {recon['recon_nll_per_token']:.4f}/token "
                f"(posterior chain of {recon['chain_steps']} steps)",
            ),
            ("prior-z NLL", f"{recon['prior_z_nll']:.3f} (recon gain {recon['recon_gain']:.3f})"),
        ]
    if usage is not None:
        rows += [
            (
                "active units",
                f"{usage['active_units']} of {len(usage['mode_variances'])} (Var > "
                f"{usage['threshold']}, {usage['n_examples']} examples)",
            ),
            (
                "I(x; z)",
                f"{usage['mutual_information']:.3f} nats (max log N = "
                f"{usage['mutual_information_max']:.2f})",
            ),
            ("recon gain", f"{usage['recon_gain']:.3f} nats/example"),
        ]
    return rows


def _text_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    fppl, rppl, bleu = metrics.get("fppl"), metrics.get("rppl"), metrics.get("bleu")
    any_entry = fppl or rppl or bleu
    if any_entry is not None:
        gen = any_entry["generation"]
        steps = "K0" if gen["langevin_steps"] is None else gen["langevin_steps"]
        rows.append(("generation", f"decode {gen['decode']}, prior chain {steps} steps"))
    for entry in (fppl, rppl):
        if entry is not None and "lm" in entry:
            cfg, info = entry["lm"]["config"], entry["lm"]["info"]
            name = "FPPL scorer" if entry is fppl else "RPPL LM"
            rows.append(
                (
                    name,
                    f"LSTM {cfg['embedding_dim']}/{cfg['hidden_dim']}, {describe_training(info)}",
                )
            )
    if fppl is not None:
        rows += [
            ("FPPL", f"{fppl['fppl']:.2f} ({fppl['n_samples']} samples)"),
            ("real-data PPL", f"{fppl['real_ppl']:.2f} (the scorer on the split)"),
        ]
    if rppl is not None:
        rows.append(("RPPL", f"{rppl['rppl']:.2f} (LM on {rppl['rppl_samples']} samples)"))
    if bleu is not None:
        rows += [
            (
                "reconstruction BLEU",
                f"{bleu['reconstruction_bleu']:.2f} ({bleu['reconstruction_sentences']} sentences)",
            ),
            (
                "self-BLEU",
                f"{bleu['self_bleu']:.2f} (real: {bleu['real_self_bleu']:.2f}; "
                f"{bleu['self_bleu_samples']} sentences)",
            ),
            (
                "distinct-1/2/3",
                f"{bleu['distinct_1']:.3f} / {bleu['distinct_2']:.3f} / "
                f"{bleu['distinct_3']:.3f} (real: {bleu['real_distinct_1']:.3f} / "
                f"{bleu['real_distinct_2']:.3f} / {bleu['real_distinct_3']:.3f})",
            ),
            (
                "average length",
                f"{bleu['avg_length']:.1f} words (real: {bleu['real_avg_length']:.1f})",
            ),
        ]
    return rows


MOSES_COLUMNS: tuple[str, ...] = (
    "valid",
    "unique@1000",
    "unique@10000",
    "FCD/Test",
    "FCD/TestSF",
    "SNN/Test",
    "SNN/TestSF",
    "Frag/Test",
    "Frag/TestSF",
    "Scaf/Test",
    "Scaf/TestSF",
    "IntDiv",
    "IntDiv2",
    "Filters",
    "Novelty",
    "logP",
    "SA",
    "QED",
    "weight",
)


def _molecule_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name in ("molecules", "moses"):
        entry = metrics.get(name)
        if entry is None:
            continue
        gen = entry["generation"]
        steps = "K0" if gen["langevin_steps"] is None else gen["langevin_steps"]
        rows.append(
            (
                f"{name} samples",
                f"{entry['n_samples']} (decode {gen['decode']}, prior chain {steps} steps, "
                f"{entry['seconds']:.0f} s)",
            )
        )
        keys = MOSES_COLUMNS if name == "moses" else ("validity", "uniqueness", "novelty")
        for key in keys:
            if key in entry:
                rows.append((key, f"{entry[key]:.4f}"))
    return rows


def _image_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    anomaly, mse, fid = metrics.get("anomaly"), metrics.get("mse"), metrics.get("fid")
    if anomaly is not None:
        rows += [
            (
                "AUPRC",
                f"{anomaly['auprc']:.4f} (average precision {anomaly['average_precision']:.4f})",
            ),
            (
                "anomaly split",
                f"{anomaly['n_anomalous']} anomalous / {anomaly['n_normal']} normal; "
                f"{anomaly['n_chains']} chain(s) x {anomaly['n_steps']} posterior steps, "
                f"{anomaly['seconds']:.0f} s",
            ),
        ]
    if mse is not None:
        rows.append(("reconstruction MSE", _mse_text(mse)))
    if fid is not None:
        rows.append(("FID", f"{fid['fid']:.3f} ({fid['feature']}; {fid['n_samples']} samples)"))
    return rows


def _mse_text(entry: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.5f}" for key, value in entry.items() if key.startswith("mse"))


def _run_dir(checkpoint: Path) -> Path:
    """``RUN/checkpoints/step_N.pt`` -> ``RUN``; any other file -> its folder."""
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def _count_progress(items: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    """A tqdm bar over ``total`` items (batches) on stderr."""
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True, leave=False)


def _progress(batches: list[Tensor], enabled: bool, desc: str) -> Iterator[Tensor]:
    """A bar over the examples of ``batches``; within a batch it shows the AIS path's step
    (:func:`latentebm.progress.report_within`), at most twice a second, so a batch that takes
    a minute is not a still bar."""
    if not enabled:
        yield from batches
        return
    from tqdm.auto import tqdm

    total = sum(b.shape[0] for b in batches)
    with tqdm(total=total, desc=desc, unit="sent", dynamic_ncols=True) as bar:
        shown = [0.0]

        def within(done: int, steps: int) -> None:
            now = time.perf_counter()
            if now - shown[0] >= 0.5:
                bar.set_postfix_str(f"batch step {done}/{steps}", refresh=True)
                shown[0] = now

        for batch in batches:
            with reporting_within(within):
                yield batch
            bar.set_postfix_str("", refresh=False)
            bar.update(batch.shape[0])
