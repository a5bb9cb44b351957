"""``latentebm evaluate``: test-set metrics of a trained run, written to ``metrics.json``.

Metrics: ``nll`` (importance-sampled ``-log p(x)`` per sentence and perplexity, see
:mod:`latentebm.metrics.nll` for the estimator and what it bounds), and for text tasks ``fppl``,
``rppl`` and ``bleu`` (reconstruction BLEU, self-BLEU, distinct-n, average length), see
:mod:`latentebm.metrics.text_eval` and ``docs/metrics.md`` for the protocol; for molecule
tasks ``moses`` (the MOSES table) and ``molecules`` (validity, uniqueness, novelty), see
:mod:`latentebm.metrics.molecule_eval`. Without ``metrics`` a task's ``default_metrics`` are
evaluated (text: ``nll``; molecules: ``molecules``).

Default settings (``n_importance=30``, ``n_chains=8``, ``chain_steps=0``, ``batch_size=64``,
``log_z_samples=100_000``) were chosen so that the PTB test split (3,761 sentences) with the PTB
recipe's sizes finishes in under 10 minutes on the 2-core development CPU with one thread; the
measurements behind them are in :func:`evaluate`'s docstring.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from latentebm.metrics.image_eval import ImageEvalSettings
from latentebm.metrics.molecule_eval import MoleculeEvalSettings
from latentebm.metrics.text_eval import TextEvalSettings

T = TypeVar("T")

KNOWN_METRICS: tuple[str, ...] = (
    "nll",
    "fppl",
    "rppl",
    "bleu",
    "moses",
    "molecules",
    "anomaly",
    "mse",
    "fid",
)

DEFAULT_N_IMPORTANCE = 30
DEFAULT_N_CHAINS = 8
DEFAULT_CHAIN_STEPS: int | None = 0  # None: the model's K1
DEFAULT_BATCH_SIZE = 64
DEFAULT_LOG_Z_SAMPLES = 100_000
CHUNK_SIZE = 256  # (sentence, latent) pairs per decoder call: 1024 was slower, 3.4x the memory
METRICS_FILE = "metrics.json"


def check_metrics(metrics: str | Iterable[str]) -> list[str]:
    """Parse ``"nll,fppl"`` or a sequence of names; unknown names raise."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [m for m in dict.fromkeys(names) if m]
    if not names:
        raise ValueError(f"no metric given (known: {', '.join(KNOWN_METRICS)})")
    unknown = [m for m in names if m not in KNOWN_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(KNOWN_METRICS)})"
        )
    return names


def spread_batches(batches: Sequence[T], count: int) -> list[T]:
    """``count`` of ``batches`` at evenly spaced positions, first and last included (all of
    them if ``count`` is not smaller): from length-sorted batches, a subset with every length."""
    n = len(batches)
    if count >= n:
        return list(batches)
    if count == 1:
        return [batches[n // 2]]
    return [batches[round(i * (n - 1) / (count - 1))] for i in range(count)]


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    metrics: str | Sequence[str] | None = None,
    *,
    n_importance: int = DEFAULT_N_IMPORTANCE,
    n_chains: int = DEFAULT_N_CHAINS,
    chain_steps: int | None = DEFAULT_CHAIN_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    log_z_samples: int = DEFAULT_LOG_Z_SAMPLES,
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

    NLL (``"nll"``): ``-log p_hat(x)`` per sentence in nats (summed over tokens incl.
    ``<eos>``) by importance sampling (:func:`latentebm.metrics.nll.evaluate_nll`) with
    ``n_importance`` samples from a Gaussian proposal per sentence, fitted (widened 1.5x, shrunk
    covariance) to the ends of ``n_chains`` posterior Langevin chains of ``chain_steps`` steps
    (``None``: the model's K1; ``0``: the chains' N(0, sigma^2 I) starting points), and
    ``log Z(alpha)`` from ``log_z_samples`` reference draws; PPL is
    ``exp(total NLL / total tokens)``. Both are stochastic *upper bounds*: more importance
    samples or an x-informed proposal (``chain_steps`` > 0, longer chains) can only tighten them
    in expectation. Sentences are scored in batches of similar length (the split in file order,
    stably sorted by length: padding costs time, not accuracy).

    Cost per sentence: ``n_chains * chain_steps`` posterior steps (a gradient w.r.t. z each,
    ~0.31 ms per token on one thread at the PTB sizes) plus ``n_importance`` no-grad decoder
    forwards (~0.19 ms per token). Why the defaults (8 chains, 0 steps, 30 samples): measured
    on ``runs/ptb/cpu60`` (PTB recipe, step 540), PTB test, one thread of a 2-core AMD EPYC,
    ``benchmarks/eval_nll.py --max-batches 3 --spread`` (192 sentences), extrapolated to the
    82,430 test tokens:

    ======================  =========  ===============  ===========
    chains x steps, M       NLL/sent.  extrapolated s   mean ESS
    ======================  =========  ===============  ===========
    4 x 20 (K1), 20         90.11      2228             1.61
    2 x 5, 15               216.2      614              1.53
    4 x 2, 20               89.80      510              1.61
    4 x 2, 40               88.78      821              1.88
    8 x 1, 20               86.62      512              1.75
    8 x 0, 20               86.68      320              1.82
    8 x 0, 30 (default)     86.28      467              2.06
    8 x 0, 60               85.75      973              2.44
    ======================  =========  ===============  ===========

    K1 = 20 chains do not fit in 10 minutes and, at this checkpoint, do not tighten the bound
    (the chains barely leave N(0, I)); the number of chains (the covariance fit) matters. The
    full default run (``latentebm evaluate runs/ptb/cpu60``, all 3,761 sentences) took 436 s
    (2.0 GB peak memory): NLL 125.83 nats/sentence, PPL 311.5, mean ESS 1.98 of 30. On the
    192-sentence subset, doubling M from 30 to 60 lowers the NLL by 0.53 nats per sentence
    (0.6 %): the default is loose by at least that.
    For a better-trained model, whose posteriors move away from the prior, raise
    ``chain_steps`` (e.g. to K1 or more) and ``n_importance``.

    Args:
        run_dir: a run directory (newest checkpoint) or a checkpoint file.
        split: the task's split (``test``, ``valid``, ``train``).
        metrics: names or a comma-separated string: ``nll``, ``fppl``, ``rppl``, ``bleu``,
            ``moses``, ``molecules``; None: the task's ``default_metrics`` (else ``nll``).
        n_importance, n_chains, chain_steps, log_z_samples: the estimator's settings.
        batch_size: sentences per batch; their chains and importance samples go through the
            decoder in chunks of at most ``CHUNK_SIZE`` (256) (sentence, latent) pairs.
        max_batches: evaluate only ``max_batches`` batches: the first ones (the shortest
            sentences; timing, smoke tests), or with ``spread`` ones spread evenly over the
            length-sorted split (a subset with the split's mix of lengths).
        spread: see ``max_batches``.
        seed: seeds chains, proposal draws and ``log Z``.
        progress: a tqdm progress bar over batches (on stderr).
        device: where the model runs.
        output: where to write; default ``RUN_DIR/metrics.json`` (the checkpoint's run
            directory). Existing entries are merged (see :func:`write_metrics`).
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
    from latentebm.metrics.molecule_eval import evaluate_molecule_metrics
    from latentebm.metrics.nll import evaluate_nll, log_partition
    from latentebm.metrics.text_eval import evaluate_text_metrics
    from latentebm.pretrained import load

    if metrics is not None:
        check_metrics(metrics)  # fail before loading anything
    for name, value in (("n_importance", n_importance), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if n_chains < 2:
        raise ValueError(f"n_chains must be >= 2, got {n_chains}")
    if chain_steps is not None and chain_steps < 0:
        raise ValueError(f"chain_steps must be >= 0 (or None: K1), got {chain_steps}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")

    started = time.perf_counter()
    pretrained = load(run_dir, device=device)
    model, task = pretrained.model, pretrained.task
    names = check_metrics(metrics if metrics is not None else default_metrics(task))
    if split not in getattr(task, "splits", [split]):
        raise ValueError(f"split {split!r} not in the task (has: {', '.join(task.splits)})")
    result: dict[str, Any] = {}
    if "nll" in names:
        batches = length_sorted_batches(task, split, batch_size)
        n_batches_total = len(batches)
        if max_batches is not None:
            batches = spread_batches(batches, max_batches) if spread else batches[:max_batches]
        generator = torch.Generator(device=model.device)
        generator.manual_seed(seed)
        t0 = time.perf_counter()
        log_z = log_partition(model.prior, log_z_samples, generator=generator)
        log_z_seconds = time.perf_counter() - t0
        chunk = CHUNK_SIZE
        nll = evaluate_nll(
            model,
            _progress(batches, progress, f"nll {split}"),
            task.num_target_tokens,
            n_importance=n_importance,
            n_chains=n_chains,
            chain_steps=chain_steps,
            log_z=log_z,
            generator=generator,
            batch_size=chunk,
        )
        seconds = time.perf_counter() - t0
        entry = nll.as_dict()
        settings = entry.pop("settings")
        settings["batch_size"] = batch_size
        settings["chunk_size"] = chunk
        entry.update(
            {
                "n_chains": n_chains,
                "chain_steps": settings["chain_steps"],
                "settings": settings,
                "seed": seed,
                "split": split,
                "sentences": nll.n_examples,
                "tokens": nll.total_tokens,
                "batches": len(batches),
                "batches_in_split": n_batches_total,
                "complete": len(batches) == n_batches_total,
                "spread": spread and len(batches) < n_batches_total,
                "checkpoint": str(pretrained.checkpoint),
                "step": pretrained.step,
                "seconds": seconds,
                "log_z_seconds": log_z_seconds,
                "device": str(model.device),
                "torch_threads": torch.get_num_threads(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
        )
        result["nll"] = entry

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

    out_path = Path(output) if output is not None else run_dir / METRICS_FILE
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
    """What ``evaluate`` computes when no metric is named: ``task.default_metrics`` or nll."""
    return tuple(getattr(task, "default_metrics", ("nll",)))


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


def write_metrics(path: str | Path, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge ``{split: {metric: entry}}`` into the JSON file at ``path`` atomically.

    Other splits and metrics are kept. An earlier entry for the same split and metric is not
    lost: it moves into the new entry's ``history`` list (oldest first), together with the
    earlier entry's own history. Written to a temporary file in the same folder, then
    ``os.replace``. Returns the whole new content.
    """
    path = Path(path)
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a JSON object; not overwritten")
    section = data.setdefault(split, {})
    for name, entry in metrics.items():
        entry = dict(entry)
        previous = section.get(name)
        if previous is not None:
            previous = dict(previous)
            history = list(previous.pop("history", []))
            entry["history"] = [*history, previous]
        section[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, allow_nan=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return data


def format_table(result: dict[str, Any]) -> str:
    """The rows printed by ``latentebm evaluate``."""
    metrics = result["metrics"]
    rows: list[tuple[str, str]] = [
        ("split", result["split"]),
        ("checkpoint", f"{result['checkpoint']} (step {result['step']})"),
    ]
    nll = metrics.get("nll")
    if nll is not None:
        rows += [
            ("NLL sentences", f"{nll['sentences']} ({nll['tokens']} tokens)"),
            ("NLL (nats/sentence)", f"{nll['nll_per_example']:.3f}"),
            ("NLL (nats/token)", f"{nll['nll_per_token']:.4f}"),
            ("PPL", f"{nll['ppl']:.2f}"),
            (
                "log Z",
                f"{nll['log_z']:.4f} ± {nll['log_z_std_error']:.2g} "
                f"({nll['log_z_samples']} samples)",
            ),
            ("mean ESS", f"{nll['mean_ess']:.2f} of {nll['n_importance']}"),
            (
                "NLL settings",
                f"{nll['n_importance']} importance samples, {nll['n_chains']} chains x "
                f"{nll['chain_steps']} steps, seed {nll['seed']}",
            ),
            ("NLL seconds", f"{nll['seconds']:.1f}"),
        ]
        if not nll["complete"]:
            rows.append(("note", f"first {nll['batches']} of {nll['batches_in_split']} batches"))
    rows += _text_rows(metrics)
    rows += _molecule_rows(metrics)
    rows += _image_rows(metrics)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


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
                    f"LSTM {cfg['embedding_dim']}/{cfg['hidden_dim']}, {info['epochs']} "
                    f"epoch(s) on {info['train_sentences']} sentences, {info['seconds']:.0f} s",
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
    if not enabled:
        yield from batches
        return
    from tqdm.auto import tqdm

    total = sum(b.shape[0] for b in batches)
    with tqdm(total=total, desc=desc, unit="sent", dynamic_ncols=True) as bar:
        for batch in batches:
            yield batch
            bar.update(batch.shape[0])
