"""Time the MOSES metric suite (``latentebm.metrics.molecules``) on a random sample of MOSES train.

    OMP_NUM_THREADS=2 LATENTEBM_DATA=../shared/data python benchmarks/mol_metrics.py \
        --out /tmp/mol_metrics.json

The "generated" set is a random ``--n`` (30,000) sample of ``moses/train.csv.gz`` (seed
``--seed``; nothing excluded), so the values can be compared with MOSES's published Train row
(which used the whole training set: FCD depends on n). Timed separately: the one-off reference
statistics build (or the cache load), the canonical training set (for Novelty; cached too) and
the suite itself, with per-step seconds. Everything goes to the JSON file given by ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # also when loaded by file path (the tests)
from _machine import cpu_model as _cpu_model  # noqa: E402
from _machine import git as _git  # noqa: E402
from _machine import load_average as _load  # noqa: E402

MOSES_TRAIN_ROW = {
    "FCD/Test": 0.008,
    "FCD/TestSF": 0.476,
    "SNN/Test": 0.642,
    "SNN/TestSF": 0.586,
    "Frag/Test": 1.000,
    "Frag/TestSF": 0.999,
    "Scaf/Test": 0.991,
    "Scaf/TestSF": 0.000,
    "IntDiv": 0.857,
    "IntDiv2": 0.851,
    "Filters": 1.0,
}
"""MOSES paper / README, row "Train" (whole training set as "generated"). Only the two FCD values
are confirmed; the others were written from memory and are unverified."""


def machine_info(load_start: list[float] | None) -> dict[str, Any]:
    import rdkit
    import torch

    status = _git("status", "--porcelain", "--untracked-files=no")
    argv = getattr(sys, "orig_argv", [sys.executable, *sys.argv])
    return {
        "torch": torch.__version__,
        "rdkit": rdkit.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": _load(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": shlex.join(argv),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="PATH", help="JSON output file")
    parser.add_argument("--n", type=int, default=30_000, help="molecules in the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (main process)")
    parser.add_argument("--data-root", default=None, help="default: $LATENTEBM_DATA")
    parser.add_argument("--cache-dir", default=None, help="default: ~/.cache/latentebm")
    parser.add_argument(
        "--ref-max-molecules",
        type=int,
        default=None,
        help="random subset of each test file for the reference (default: all)",
    )
    parser.add_argument("--no-novelty", action="store_true", help="skip the training set")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: n 300, reference subset 1,000"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 300)
        args.ref_max_molecules = args.ref_max_molecules or 1000

    import numpy as np
    import torch

    from latentebm.data import resolve_data_path
    from latentebm.metrics import molecules as mm

    torch.set_num_threads(args.threads)
    load_start = _load()
    result: dict[str, Any] = {"args": vars(args)}

    cache_dir = Path(args.cache_dir or mm.DEFAULT_CACHE_DIR).expanduser()
    before = set(cache_dir.glob("moses_ref_*.npz")) if cache_dir.is_dir() else set()
    t0 = time.perf_counter()
    reference = mm.MosesReference.load_or_build(
        args.data_root,
        args.cache_dir,
        n_jobs=args.n_jobs,
        max_molecules=args.ref_max_molecules,
        seed=args.seed,
        verbose=True,
    )
    ref_seconds = time.perf_counter() - t0
    after = set(cache_dir.glob("moses_ref_*.npz")) if cache_dir.is_dir() else set()
    result["reference"] = {
        "seconds": ref_seconds,
        # peak resident memory of this process so far (KiB on Linux): with --n-jobs 1 the whole
        # build runs here; worker processes (forkserver children) are not counted
        "peak_rss_gib_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "built": bool(after - before),
        "meta": reference.meta,
        "n": {k: r.n for k, r in reference.sets.items()},
    }
    print(
        f"reference: {'built' if after - before else 'loaded'} in {ref_seconds:.1f} s "
        f"({result['reference']['n']})",
        file=sys.stderr,
    )

    train_path = resolve_data_path("moses/train.csv.gz", args.data_root)
    t0 = time.perf_counter()
    train_smiles = mm.read_smiles_file(train_path)
    read_seconds = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(train_smiles), size=min(args.n, len(train_smiles)), replace=False)
    generated = [train_smiles[i] for i in pick]
    result["sample"] = {"file_lines": len(train_smiles), "n": len(generated), "seed": args.seed}

    train_canonical = None
    if not args.no_novelty:
        t0 = time.perf_counter()
        train_canonical = mm.load_canonical_smiles(train_path, args.cache_dir, n_jobs=args.n_jobs)
        result["train_canonical"] = {
            "seconds": time.perf_counter() - t0,
            "read_seconds": read_seconds,
            "n_unique": len(train_canonical),
        }
        print(f"canonical train set: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    del train_smiles

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    metrics = mm.compute_moses_metrics(
        generated,
        reference=reference,
        train=train_canonical,
        train_is_canonical=True,
        n_jobs=args.n_jobs,
        timings=timings,
    )
    total = time.perf_counter() - t0
    result.update(
        metrics=metrics,
        seconds=timings,
        total_seconds=total,
        moses_train_row=MOSES_TRAIN_ROW,
        machine=machine_info(load_start),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")

    print(f"suite on {len(generated)} molecules: {total:.1f} s (n_jobs {args.n_jobs})")
    for key, value in metrics.items():
        ref = MOSES_TRAIN_ROW.get(key)
        extra = f"   (MOSES Train row {ref})" if ref is not None else ""
        print(f"  {key:14s} {value:10.4f}{extra}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
