"""MNIST-FID of trained image runs: latent EBM runs (``latentebm train recipes/mnist.yaml``) and
data-space short-run EBM runs (``latentebm train recipes/shortrun_mnist.yaml``), side by side.

    OMP_NUM_THREADS=1 LATENTEBM_DATA=../shared/data python benchmarks/mnist_fid.py \
        --features runs/mnist/mnist_cnn.pt runs/mnist/latent10 runs/mnist/shortrun10 \
        --n 10000 --out docs/bench/mnist_fid.json

Each run generates ``--n`` images from fresh chains (latent EBM: prior chain of K0 steps, then
the generator mean; short-run EBM: K Langevin steps from p_0 = U[-1, 1]), seeded with
``--seed``; their features under the MNIST classifier of ``--features`` (``latentebm
mnist-features``) are compared with those of the 10,000 MNIST test images. MNIST-FID is NOT
comparable to published (Inception) FIDs; it compares runs scored with the same network and n.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import cpu_model, git, load_average  # noqa: E402


def _is_shortrun(run: Path) -> bool:
    import yaml

    config = run / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not a run directory (no config.yaml)")
    return yaml.safe_load(config.read_text(encoding="utf-8")).get("family") == "shortrun"


def sample_run(run: Path, n: int, seed: int, batch_size: int) -> tuple[torch.Tensor, str]:
    """``n`` images from the newest checkpoint of ``run`` and a description of the sampler."""
    generator = torch.Generator().manual_seed(seed)
    if _is_shortrun(run):
        from latentebm.shortrun import load_shortrun

        model = load_shortrun(run)
        parts = [
            model.sample(min(batch_size, n - start), generator).detach()
            for start in range(0, n, batch_size)
        ]
        return torch.cat(parts), f"short-run EBM, {model.chain!r} from U[-1, 1]"
    import latentebm

    pretrained = latentebm.load(run)
    images = pretrained.sample_images(n, seed=seed, batch_size=batch_size)
    model = pretrained.model
    prior = f"prior {model.prior_chain!r}" if model.prior.has_energy else "exact N(0, I) prior"
    return images, f"latent model step {pretrained.step}, {prior}, generator mean"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--features", type=Path, required=True, help="latentebm mnist-features")
    parser.add_argument("--n", type=int, default=10_000, help="generated images per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--data-root", default=None, help="default $LATENTEBM_DATA")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)

    from latentebm.metrics.fid import compute_statistics, frechet_distance
    from latentebm.metrics.mnist_features import load_mnist_feature_net
    from latentebm.tasks.images import ImageTask

    net = load_mnist_feature_net(args.features)
    reference = ImageTask(dataset="mnist", data_root=args.data_root).tensor("test")
    mu_ref, sigma_ref = compute_statistics(net.features, reference, args.batch_size)
    rows: list[dict[str, Any]] = []
    for run in args.runs:
        started = time.perf_counter()
        images, sampler = sample_run(run, args.n, args.seed, args.batch_size)
        sample_seconds = time.perf_counter() - started
        mu, sigma = compute_statistics(net.features, images, args.batch_size)
        fid = frechet_distance(mu, sigma, mu_ref, sigma_ref)
        rows.append(
            {
                "run": str(run),
                "mnist_fid": fid,
                "n_samples": args.n,
                "sampler": sampler,
                "sample_seconds": sample_seconds,
            }
        )
        print(f"{run}: MNIST-FID {fid:.3f} ({args.n} samples, {sample_seconds:.0f} s)")
    result = {
        "command": shlex.join(["python", "benchmarks/mnist_fid.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "features": {"path": str(args.features), **net.info},
        "reference": "MNIST test split (10,000 images)",
        "note": "MNIST-FID: features of a toolkit-trained MNIST classifier; not comparable to "
        "Inception FIDs",
        "rows": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
