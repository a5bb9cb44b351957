"""Summarise a run's ``metrics.jsonl`` for docs/RESULTS.md: tables of the validation NLL and of
the training terms over time, and (with matplotlib installed) a PNG of both.

    python benchmarks/summarize_run.py runs/ptb/cpu60 --every 100 --png docs/img/ptb_cpu60.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentebm.diagnostics import read_metrics


def markdown(train: list[dict[str, float]], valid: list[dict[str, float]], every: int) -> str:
    start = train[0]["time"] if train else 0.0
    lines = [
        "| step | minutes | valid recon NLL (nats/sent.) | valid recon PPL |",
        "|---:|---:|---:|---:|",
    ]
    for row in valid:
        minutes = (row["time"] - start) / 60
        lines.append(
            f"| {row['step']} | {minutes:.1f} | {row['valid_recon_nll']:.2f} "
            f"| {row['valid_recon_ppl']:.1f} |"
        )
    lines += [
        "",
        "| step | train recon NLL | d_t = f(z+) - f(z-) | r_t prior | r_t posterior | tokens/s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in train:
        if row["step"] % every == 0 or row is train[-1]:
            lines.append(
                f"| {row['step']} | {row['recon_nll']:.2f} | {row.get('energy_diff', 0.0):.4f} "
                f"| {row.get('prior_grad_norm', 0.0):.3f} | {row['posterior_grad_norm']:.3f} "
                f"| {row.get('tokens_per_s', row.get('images_per_s', 0.0)):.0f} |"
            )
    return "\n".join(lines)


def plot(train: list[dict[str, float]], valid: list[dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["step"] for r in train], [r["recon_nll"] for r in train], label="train")
    axes[0].plot(
        [r["step"] for r in valid], [r["valid_recon_nll"] for r in valid], "o-", label="valid"
    )
    axes[0].set(title="reconstruction NLL (nats / sentence)", xlabel="step")
    axes[0].legend()
    axes[1].plot([r["step"] for r in train], [r.get("energy_diff", 0.0) for r in train])
    axes[1].axhline(0.0, color="grey", lw=0.5)
    axes[1].set(title="d_t = mean f(z+) - mean f(z-)", xlabel="step")
    for key, label in (("prior_grad_norm", "prior chain"), ("posterior_grad_norm", "posterior")):
        axes[2].plot([r["step"] for r in train], [r.get(key, 0.0) for r in train], label=label)
    axes[2].set(title="r_t: mean |grad log pi| along chain", xlabel="step")
    axes[2].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--every", type=int, default=100, help="training-table row interval")
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args()
    train, valid = read_metrics(args.run_dir)
    print(markdown(train, valid, args.every))
    if args.png is not None:
        plot(train, valid, args.png)


if __name__ == "__main__":
    main()
