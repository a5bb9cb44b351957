"""Validation NLL against training time, for runs trained with timed checkpoints.

Train each configuration with a CPU-time budget and a checkpoint at every multiple of a time
step, keeping them all, e.g. (docs/RESULTS.md section 11)::

    latentebm train ptb_reference trainer.clock=cpu trainer.max_minutes=12 \\
        trainer.checkpoint_every_minutes=2 trainer.keep_checkpoints=0 \\
        model.posterior_chain.init=persistent model.posterior_chain.n_steps=5 \\
        trainer.run_dir=runs/ptb_ref/persist5

then, for every run and every time mark, take the first checkpoint whose training time
(``train_seconds``) has reached the mark, evaluate its marginal NLL on the same subset of the
valid split with the same estimator settings (``latentebm evaluate``'s defaults: AIS from a
Laplace start, seed 0; ``--estimator is`` for the fast importance-sampling option), and print a
markdown table::

    python benchmarks/quality_per_compute.py runs/ptb_ref/* --minutes 4,8,12 \\
        --max-batches 10 --json docs/bench/ptb_reference_chain_init.json

Each evaluation is cached as ``RUN/nll_<split>_<m>min.json`` (``latentebm evaluate``'s
format) and reused if it names the same checkpoint, subset and estimator settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from latentebm.checkpoint import list_checkpoints
from latentebm.evaluate import evaluate
from latentebm.metrics.likelihood_eval import LikelihoodEvalSettings

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # also when loaded by file path (the tests)
from _machine import cpu_model, git  # noqa: E402


def checkpoint_times(run: Path) -> list[tuple[Path, int, float]]:
    """``(checkpoint, step, train_seconds)`` of every checkpoint of ``run``, oldest first."""
    rows = []
    for path in list_checkpoints(run):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        rows.append((path, int(saved["step"]), float(saved.get("train_seconds", 0.0))))
    return rows


def first_at(times: list[tuple[Path, int, float]], seconds: float) -> tuple[Path, int, float]:
    """The first checkpoint whose training time has reached ``seconds`` (else the last)."""
    for row in times:
        if row[2] >= seconds - 1e-6:
            return row
    return times[-1]


def nll_at(
    run: Path,
    minutes: float,
    split: str,
    max_batches: int | None,
    spread: bool,
    likelihood: LikelihoodEvalSettings | None = None,
) -> dict[str, Any]:
    times = checkpoint_times(run)
    if not times:
        raise SystemExit(f"{run}: no checkpoints")
    path, step, seconds = first_at(times, 60.0 * minutes)
    likelihood = likelihood or LikelihoodEvalSettings()
    out = run / f"nll_{split}_{minutes:g}min.json"
    entry = None
    if out.is_file():
        cached = json.loads(out.read_text(encoding="utf-8")).get(split, {}).get("marginal_nll")
        wanted = json.loads(json.dumps(likelihood.as_dict()))  # as JSON stores it
        if not cached or cached.get("likelihood_settings") != wanted:
            same_subset = False
        elif max_batches is None:  # the whole split
            same_subset = bool(cached.get("complete"))
        else:
            same_subset = cached.get("batches") == max_batches and bool(
                cached.get("spread") or cached.get("complete")
            )
        if same_subset and Path(cached["checkpoint"]).name == path.name:
            entry = cached
    if entry is None:
        result = evaluate(
            path,
            split,
            ["marginal_nll"],
            likelihood=likelihood,
            max_batches=max_batches,
            spread=spread,
            progress=False,
            output=out,
        )
        entry = result["metrics"]["marginal_nll"]
    return {
        "run": str(run),
        "minutes": minutes,
        "checkpoint": path.name,
        "step": step,
        "train_seconds": seconds,
        "nll_per_sentence": entry["nll_per_example"],
        "ppl": entry["ppl"],
        "std_error": entry.get("std_error"),
        "sentences": entry["n_examples"],
        "tokens": entry["total_tokens"],
        "mean_ess": entry["mean_ess"],
    }


def markdown(rows: list[dict[str, Any]], marks: list[float]) -> str:
    head = " | ".join(f"{m:g} min: NLL (updates)" for m in marks)
    lines = [f"| run | {head} |", "|---|" + "---:|" * len(marks)]
    for run in dict.fromkeys(r["run"] for r in rows):
        cells = []
        for m in marks:
            row = next(r for r in rows if r["run"] == run and r["minutes"] == m)
            cells.append(f"{row['nll_per_sentence']:.2f} ({row['step']:,})")
        lines.append(f"| {Path(run).name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--minutes", default="4,8,12", help="time marks, comma-separated")
    parser.add_argument("--split", default="valid")
    parser.add_argument(
        "--max-batches", type=int, default=10, help="batches of 64 spread over the split"
    )
    parser.add_argument("--all", action="store_true", help="the whole split (no subset)")
    parser.add_argument(
        "--estimator",
        choices=("ais", "is"),
        default="ais",
        help="marginal NLL by AIS (default, tight) or importance sampling (fast)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    marks = [float(m) for m in args.minutes.split(",")]
    max_batches = None if args.all else args.max_batches
    likelihood = LikelihoodEvalSettings(estimator=args.estimator)
    rows = [
        nll_at(run, m, args.split, max_batches, not args.all, likelihood)
        for run in args.runs
        if run.is_dir()
        for m in marks
    ]
    print(markdown(rows, marks))
    if args.json is not None:
        record = {
            "rows": rows,
            "split": args.split,
            "max_batches": max_batches,
            "spread": not args.all,
            "likelihood": likelihood.as_dict(),
            "machine": cpu_model(),
            "commit": git("rev-parse", "--short", "HEAD"),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
