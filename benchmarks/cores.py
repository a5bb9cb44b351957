"""How to use every CPU core: one process with N threads, or N processes with one thread each.

Runs ``latentebm train`` a few steps in each of these settings, in turn, for several rounds, and
reports the training throughput per second of wall time in the task's own unit (target tokens
for text, images for images; also examples/s), from the run's ``metrics.jsonl``, the first
logging interval left out as warm-up. For text only tokens/s compares settings: its batches are
bucketed by length, a few steps draw batches of very different lengths, and a data-parallel run
draws other batches than one process does:

* ``1 proc x 1 thread``: ``OMP_NUM_THREADS=1``, the baseline;
* ``1 proc x N threads``: ``OMP_NUM_THREADS=N`` (intra-op parallelism);
* ``N procs x 1 thread``: ``torchrun --standalone --nproc_per_node N`` with ``OMP_NUM_THREADS=1``
  (data parallel over gloo; every rank reads its own batch of ``trainer.batch_size``, so an
  update sees N times as many examples);
* ``N procs x 1 thread, batch / N``: the documented command, ``latentebm train --processes N``
  with ``OMP_NUM_THREADS=1``: the same processes with ``trainer.batch_size`` divided by N, so an
  update sees the baseline's number of examples (the same optimisation, only faster).

Modalities (``--modality``):

* ``text``: ``recipes/ptb_reference.yaml`` (embedding 256, LSTM 256, z 32, K0 60, K1 20, batch 32)
  on the PTB training split under ``$LATENTEBM_DATA`` (exits with a message if it is absent);
* ``images``: ``recipes/svhn.yaml`` (batch 100, z 100, ngf 64, K0 60, K1 20) on synthetic
  3x32x32 uint8 images written to a temporary ``array`` data set (no download needed).

    OMP_NUM_THREADS=1 LATENTEBM_DATA=../shared/data python benchmarks/cores.py --modality text \
        --steps 21 --log-every 5 --rounds 2
    python benchmarks/cores.py --modality images --steps 8 --rounds 2 --json out.json

Run it on an otherwise idle machine: every setting uses all the cores it names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import cpu_model as _cpu_model  # noqa: E402
from _machine import git as _git  # noqa: E402
from _machine import load_average as _load  # noqa: E402

RECIPES = {"text": "ptb_reference", "images": "svhn"}
BATCH = {"text": 32, "images": 100}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modality", choices=sorted(RECIPES), default="text")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="N (all cores)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--log-every", type=int, default=3, help="steps per logged interval")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the settings")
    parser.add_argument(
        "--settings",
        default="1x1,1xN,Nx1,Nx1half",
        help="comma-separated subset of 1x1, 1xN, Nx1, Nx1half",
    )
    parser.add_argument("--override", action="append", default=[], help="extra recipe override")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep", type=Path, default=None, help="keep run folders under this")
    args = parser.parse_args(argv)
    if args.steps <= args.log_every:
        parser.error("--steps must exceed --log-every (the first interval is warm-up)")
    if "Nx1half" in args.settings and BATCH[args.modality] % args.cores:
        parser.error(
            f"Nx1half: the {args.modality} recipe's batch of {BATCH[args.modality]} does not "
            f"split into {args.cores} equal shares; pass --cores that divides it"
        )
    if any(o.startswith("trainer.batch_size=") for o in args.override):
        parser.error("--override trainer.batch_size: the settings choose the batch sizes")
    return args


def synthetic_images(folder: Path, n: int = 2000, seed: int = 0) -> Path:
    """``folder/train.npy``: ``n`` uint8 images ``(n, 3, 32, 32)``, a fixed random pattern."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "train.npy", rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    return folder


def command(
    setting: str, args: argparse.Namespace, run_dir: Path, data: Path | None
) -> tuple[list[str], dict[str, str], int]:
    """The command, environment and per-rank batch size of one setting."""
    n = args.cores
    procs, threads = {"1x1": (1, 1), "1xN": (1, n), "Nx1": (n, 1), "Nx1half": (n, 1)}[setting]
    batch = BATCH[args.modality] // (n if setting == "Nx1half" else 1)
    # Nx1half: `latentebm train --processes N` is given the recipe's batch and divides it
    given = BATCH[args.modality] if setting == "Nx1half" else batch
    overrides = [
        f"trainer.run_dir={run_dir}",
        f"trainer.max_steps={args.steps}",
        f"trainer.log_every={args.log_every}",
        f"trainer.batch_size={given}",
        f"trainer.valid_every={args.steps + 1}",
        "trainer.samples_at_end=0",
        f"trainer.checkpoint_every={args.steps + 1}",
        "trainer.tensorboard=false",
        "trainer.progress=false",
    ]
    if data is not None:
        overrides += ["task.dataset=array", f"task.path={data}", "task.valid_fraction=0.0"]
    overrides += args.override
    recipe = RECIPES[args.modality]
    if setting == "Nx1half":
        cmd = [sys.executable, "-m", "latentebm.cli", "train", recipe, "--processes", str(procs)]
        cmd += overrides
    elif procs == 1:
        cmd = [sys.executable, "-m", "latentebm.cli", "train", recipe, *overrides]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={procs}", "-m", "latentebm.cli", "train", recipe, *overrides,
        ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    return cmd, env, batch


UNITS = ("tokens", "images")
"""The throughput units of the toolkit's tasks in ``metrics.jsonl`` (``<unit>_per_s``; a task of
one's own may name another, ``throughput_unit``, which is used when these are absent)."""


def throughput(run_dir: Path, batch: int, procs: int) -> dict[str, Any]:
    """Examples/s, the task's own unit per second (target tokens for text, images for images:
    ``<unit>_per_s`` in ``metrics.jsonl``, summed over the processes) and seconds per update,
    over the logged intervals after the first, each interval weighted by its duration.

    For text the unit is what counts: length-bucketed batches differ in length several-fold,
    so examples/s over a few steps depends on which batches a run drew (a data-parallel run
    draws other batches than one process does), while tokens/s does not."""
    where = run_dir / "metrics.jsonl"
    rows = [
        json.loads(line) for line in where.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    rows = [r for r in rows if "steps_per_s" in r and "step" in r]
    if len(rows) < 2:
        raise SystemExit(f"{where}: no logged interval (with step and steps_per_s) after the first")
    known = [f"{u}_per_s" for u in UNITS if f"{u}_per_s" in rows[0]]
    other = [k for k in rows[0] if k.endswith("_per_s") and k != "steps_per_s"]
    if not known + other:
        raise SystemExit(f"{where}: no <unit>_per_s key besides steps_per_s")
    unit = (known + other)[0]
    steps = [b["step"] - a["step"] for a, b in zip(rows, rows[1:], strict=False)]
    seconds = [n / r["steps_per_s"] for n, r in zip(steps, rows[1:], strict=True)]
    total_seconds, total_steps = sum(seconds), sum(steps)
    units = sum(r[unit] * t for r, t in zip(rows[1:], seconds, strict=True))
    return {
        "examples_per_s": total_steps * batch * procs / total_seconds,
        "unit": unit.removesuffix("_per_s"),
        "units_per_s": units / total_seconds,
        "seconds_per_update": total_seconds / total_steps,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if args.modality == "text" and not os.environ.get("LATENTEBM_DATA"):
        raise SystemExit("text: set LATENTEBM_DATA to the folder holding ptb/ptb.train.txt.gz")
    load_start = _load()
    scratch = Path(tempfile.mkdtemp(prefix="latentebm_cores_"))
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    try:
        data = synthetic_images(scratch / "data") if args.modality == "images" else None
        for round_ in range(args.rounds):
            for setting in settings:
                run_dir = scratch / f"{setting}_{round_}"
                cmd, env, batch = command(setting, args, run_dir, data)
                started = time.perf_counter()
                done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
                    raise SystemExit(f"{setting}: exit status {done.returncode}")
                procs = args.cores if setting.startswith("N") else 1
                row = throughput(run_dir, batch, procs)
                row["wall_s"] = time.perf_counter() - started
                results[setting].append(row)
                print(
                    f"round {round_ + 1} {setting:8s} {row['examples_per_s']:8.2f} examples/s "
                    f"{row['units_per_s']:9.1f} {row['unit']}/s "
                    f"{row['seconds_per_update']:7.3f} s/update",
                    flush=True,
                )
                if args.keep is not None:
                    shutil.copytree(run_dir, args.keep / run_dir.name, dirs_exist_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(r["units_per_s"] for r in results["1x1"]) if "1x1" in results else None
    summary: dict[str, Any] = {}
    for setting, rows in results.items():
        speeds = sorted(r["units_per_s"] for r in rows)
        summary[setting] = {
            "unit": rows[0]["unit"],
            "units_per_s_median": statistics.median(speeds),
            "units_per_s_min": speeds[0],
            "units_per_s_max": speeds[-1],
            "examples_per_s_median": statistics.median(r["examples_per_s"] for r in rows),
            "seconds_per_update_median": statistics.median(r["seconds_per_update"] for r in rows),
            "speedup_vs_1x1": None if base is None else statistics.median(speeds) / base,
        }
    result = {
        "benchmark": "cores",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "rounds": results,
        "machine": {
            "cpu": _cpu_model(),
            "cpus": os.cpu_count(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "load_start": load_start,
            "load_end": _load(),
        },
    }
    unit = next(iter(summary.values()))["unit"] if summary else "examples"
    print(f"\n{'setting':10s} {unit + '/s':>12s} {'(min-max)':>19s}", end=" ")
    print(f"{'examples/s':>11s} {'s/update':>9s} {'x 1x1':>6s}")
    for setting, row in summary.items():
        speedup = "" if row["speedup_vs_1x1"] is None else f"{row['speedup_vs_1x1']:.2f}"
        print(
            f"{setting:10s} {row['units_per_s_median']:12.1f} "
            f"({row['units_per_s_min']:8.1f}-{row['units_per_s_max']:8.1f}) "
            f"{row['examples_per_s_median']:11.2f} {row['seconds_per_update_median']:9.3f} "
            f"{speedup:>6s}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
