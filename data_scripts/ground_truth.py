"""Write the ground-truth benchmark's data: draws of a known latent model (latentebm.ground_truth).

    python data_scripts/ground_truth.py --kind text --out $LATENTEBM_DATA/ground_truth/text
    python data_scripts/ground_truth.py --kind images --z-dim 8 --out DIR
    python data_scripts/ground_truth.py --kind images --image-generator linear --out DIR

Writes train/valid/test sentences (text: ``*.txt``, one per line) or images (``train.npy``,
``test.npy``: float32 (N, 1, 28, 28)), the latent vector behind each example (``*_z.pt``), the
true model (``true_model.pt``) and ``summary.json``. Deterministic in ``--seed``; nothing is
downloaded. Needs the installed package (torch). Refuses a folder holding another true model.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("text", "images"), required=True)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--z-dim", type=int, default=2, help="latent dimension (default 2)")
    parser.add_argument(
        "--image-generator",
        choices=("conv", "linear"),
        default="conv",
        help="images: the true generator, the ConvTranspose one (default) or x = W z + b",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None, help="default 20,000")
    parser.add_argument("--n-test", type=int, default=None, help="default 1,000")
    args = parser.parse_args(argv)
    from latentebm.ground_truth import GroundTruthConfig, write_dataset

    sizes = {"n_train": args.n_train, "n_test": args.n_test}
    try:
        config = GroundTruthConfig(
            kind=args.kind,
            z_dim=args.z_dim,
            image_generator=args.image_generator,
            seed=args.seed,
            **{k: v for k, v in sizes.items() if v is not None},
        )
        summary = write_dataset(config, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary["splits"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
