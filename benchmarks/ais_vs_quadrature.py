"""How far is the AIS marginal NLL from the exact one on a model with multimodal posteriors?

    python benchmarks/ais_vs_quadrature.py --kind text --json docs/bench/ais_vs_quadrature_text.json

The true model of the ground-truth benchmark (:mod:`latentebm.ground_truth`: a ring of 8
Gaussian modes in a 2-D z, a fixed random decoder) has posteriors with several separated
modes, the hard case for an AIS that starts from a Laplace fit. With z in 2-D, ``log p(x)`` is
exact by quadrature (:mod:`latentebm.metrics.quadrature`, a 151 x 151 grid over [-5, 5]^2).
For several AIS settings (:class:`latentebm.metrics.marginal.AISSettings`) this prints the
mean error in nats per example, the largest error of one example, and how often the exact value
lies within the estimate's +-2 standard errors (coverage).

The data are written to ``--data`` on first use (:func:`latentebm.ground_truth.write_dataset`).
NLLs are of the true model itself, without the ``log P(A)`` correction of the benchmark's table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import write_record  # noqa: E402

from latentebm.cli import positive_int  # noqa: E402
from latentebm.ground_truth import (  # noqa: E402
    GroundTruthConfig,
    encode,
    load_true_model,
    write_dataset,
)
from latentebm.metrics.marginal import AISSettings, evaluate_marginal_nll  # noqa: E402
from latentebm.metrics.quadrature import quadrature_log_marginal  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    # the Laplace start's variants (its 8 searches were the default until the pilot start)
    "2 mode searches": {"init": "laplace", "laplace_starts": 2},
    "2 searches, defensive 0.3": {"init": "laplace", "laplace_starts": 2, "defensive": 0.3},
    "8 mode searches (default)": {"init": "laplace", "laplace_starts": 8},
    "2 searches, 32 chains": {"init": "laplace", "laplace_starts": 2, "n_chains": 32},
    "2 searches, 100 temperatures": {"init": "laplace", "laplace_starts": 2, "n_temperatures": 100},
    "8 searches, defensive 0.3": {"init": "laplace", "laplace_starts": 8, "defensive": 0.3},
    "from the reference": {"init": "reference"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("text", "images"), default="text")
    parser.add_argument("--data", type=Path, default=Path("runs/ground_truth/data"))
    parser.add_argument("--examples", type=positive_int, default=300, help="first N test examples")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(
            f"--variants: unknown {', '.join(map(repr, unknown))} (known: {', '.join(VARIANTS)})"
        )
    torch.set_num_threads(args.threads)
    folder = args.data / f"{args.kind}2"
    if not (folder / "summary.json").exists():
        write_dataset(GroundTruthConfig(kind=args.kind), folder)
    model, config = load_true_model(folder)
    if args.kind == "text":
        lines = (folder / "test.txt").read_text(encoding="utf-8").splitlines()[: args.examples]
        x = encode(lines, config)
    else:
        import numpy as np

        x = torch.from_numpy(np.load(folder / "test.npy")[: args.examples])
    print(f"quadrature of {len(x)} examples on a 151 x 151 grid (minutes for text) ...", flush=True)
    exact = quadrature_log_marginal(model, x, limit=5.0, points=151).log_marginal
    rows: dict[str, Any] = {}
    print(f"exact NLL (quadrature) {-float(exact.mean()):.3f} nats per example, {len(x)} examples")
    print("| AIS settings | error (nats/example) | largest error | coverage of +-2 SE | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name in args.variants.split(","):
        settings = AISSettings(**VARIANTS[name])
        started = time.process_time()
        result = evaluate_marginal_nll(
            model,
            [x],
            lambda b: int(b.shape[0]),
            settings,
            generator=torch.Generator().manual_seed(0),
        )
        log_p = torch.tensor(result.log_likelihoods, dtype=torch.float64)
        std_errors = torch.tensor(result.std_errors, dtype=torch.float64)
        rows[name] = {
            "settings": VARIANTS[name],
            "error": float((exact - log_p).mean()),
            "largest_error": float((exact - log_p).abs().max()),
            "coverage": float(((exact - log_p).abs() <= 2 * std_errors).double().mean()),
            "cpu_seconds": time.process_time() - started,
        }
        r = rows[name]
        print(
            f"| {name} | {r['error']:.2f} | {r['largest_error']:.1f} | "
            f"{100 * r['coverage']:.0f} % | {r['cpu_seconds']:.0f} |",
            flush=True,
        )
    if args.json is not None:
        write_record(
            args.json,
            "ais_vs_quadrature.py",
            argv,
            args.threads,
            examples=len(x),
            exact_nll=-float(exact.mean()),
            rows=rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
