"""Pool the ground-truth benchmark over seeds: is the EBM prior's advantage larger than the
seed-to-seed spread?

``benchmarks/ground_truth.py`` scores one pair of models (latent EBM prior, Gaussian prior,
same seed, data, decoder class and updates) against the true model. One pair says little when
two trainings of the same protocol differ by more than the two priors do (docs/RESULTS.md,
12a). This script takes that benchmark's JSON records of several seeds of one protocol and
reports, per seed and pooled:

* each model's gap to the true model, ``NLL(model) - NLL(true)``, nats per example;
* the paired difference ``NLL(EBM) - NLL(Gaussian)`` (negative: the EBM prior is better), with
  its mean, the standard error of that mean over seeds (``sd / sqrt(n)``: the seed-to-seed
  spread, which dwarfs each estimate's own error) and how many seeds favour the EBM prior;
* the share of the Gaussian prior's gap that the EBM prior closes, per seed and for the mean
  gaps, ``1 - mean gap(EBM) / mean gap(Gaussian)`` (the issue's target is at least 80 %).

    python benchmarks/ground_truth_seeds.py docs/bench/ground_truth_images_persistent_10k.json \\
        docs/bench/ground_truth_images_persistent_10k_seed2.json --json pooled.json

Every record must score the same true model on the same test examples (its NLL agrees to
1e-6); a record holding several rows (e.g. text and images) needs ``--kind``. Records of
different update counts are pooled with a warning; that they share the rest of the protocol
(the recipe overrides, which ``--runs`` records leave empty) is the caller's to ensure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

SAME_TRUTH_TOLERANCE = 1e-6
"""Nats per example: records whose true-model NLL differs by more score different data."""


class RecordError(ValueError):
    """A record that cannot be pooled; the message names the file."""


def pick_row(record: Any, path: str, kind: str | None, z_dim: int | None) -> dict[str, Any]:
    """The one row of ``record`` of the given kind and z_dim (any, if not given)."""
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("rows"), list)
        or not all(isinstance(row, dict) for row in record["rows"])
    ):
        raise RecordError(f"{path}: not a ground_truth.py record (no list of 'rows')")
    rows = [
        row
        for row in record.get("rows", [])
        if kind in (None, row.get("kind")) and z_dim in (None, row.get("z_dim"))
    ]
    if len(rows) != 1:
        found = [f"{row.get('kind')}/z_dim {row.get('z_dim')}" for row in record.get("rows", [])]
        raise RecordError(
            f"{path}: {len(rows)} rows match kind={kind} z_dim={z_dim} (rows: {found or 'none'}); "
            "give --kind/--z-dim to choose one"
        )
    row = rows[0]
    for key in ("true", "ebm", "gaussian"):
        nll = row[key].get("nll") if isinstance(row.get(key), dict) else None
        if isinstance(nll, bool) or not isinstance(nll, (int, float)) or not math.isfinite(nll):
            raise RecordError(f"{path}: row has no finite number '{key}.nll'")
    return row


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """The mean and the standard error of the mean (nan for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def pool(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per-seed gaps, paired differences and shares, and their pooled summary; ``rows`` are
    (record path, row) pairs, each labelled in the output by its file's stem."""
    truth = rows[0][1]["true"]["nll"]
    per_seed = []
    for path, row in rows:
        if abs(row["true"]["nll"] - truth) > SAME_TRUTH_TOLERANCE:
            raise RecordError(
                f"{path}: the true model's NLL {row['true']['nll']:.6f} differs from "
                f"{rows[0][0]}'s {truth:.6f}: the records score different data or examples"
            )
        if row.get("steps") != rows[0][1].get("steps"):
            print(
                f"ground_truth_seeds: warning: {path} trained {row.get('steps')} updates, "
                f"{rows[0][0]} {rows[0][1].get('steps')}: not one protocol",
                file=sys.stderr,
            )
        label = Path(path).stem
        gap_gaussian = row["gaussian"]["nll"] - truth
        gap_ebm = row["ebm"]["nll"] - truth
        per_seed.append(
            {
                "label": label,
                "nll_true": truth,
                "nll_ebm": row["ebm"]["nll"],
                "nll_gaussian": row["gaussian"]["nll"],
                "gap_ebm": gap_ebm,
                "gap_gaussian": gap_gaussian,
                "ebm_minus_gaussian": gap_ebm - gap_gaussian,
                "share_closed": (gap_gaussian - gap_ebm) / gap_gaussian
                if gap_gaussian > 0
                else float("nan"),
                "std_errors": [row["ebm"].get("std_error"), row["gaussian"].get("std_error")],
            }
        )
    differences = [s["ebm_minus_gaussian"] for s in per_seed]
    mean_difference, difference_error = mean_and_error(differences)
    mean_gap_gaussian, gap_gaussian_error = mean_and_error([s["gap_gaussian"] for s in per_seed])
    mean_gap_ebm, gap_ebm_error = mean_and_error([s["gap_ebm"] for s in per_seed])
    return {
        "seeds": per_seed,
        "n": len(per_seed),
        "mean_ebm_minus_gaussian": mean_difference,
        "std_error_ebm_minus_gaussian": difference_error,
        "seeds_favouring_ebm": sum(d < 0 for d in differences),
        "mean_gap_gaussian": mean_gap_gaussian,
        "std_error_gap_gaussian": gap_gaussian_error,
        "mean_gap_ebm": mean_gap_ebm,
        "std_error_gap_ebm": gap_ebm_error,
        "share_closed_of_mean_gaps": 1.0 - mean_gap_ebm / mean_gap_gaussian
        if mean_gap_gaussian > 0
        else float("nan"),
    }


def _finite(value: Any) -> Any:
    """``value`` with every NaN replaced by None (null), so that the record is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _plus_minus(error: float) -> str:
    return f"± {error:.3f}" if math.isfinite(error) else "(one seed: no error)"


def markdown(pooled: dict[str, Any]) -> str:
    lines = [
        "| seed (record) | true model | EBM prior | Gaussian prior | EBM - Gaussian "
        "| share closed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in pooled["seeds"]:
        lines.append(
            f"| {s['label']} | {s['nll_true']:.3f} | {s['nll_ebm']:.3f} | {s['nll_gaussian']:.3f} "
            f"| {s['ebm_minus_gaussian']:+.3f} | {100 * s['share_closed']:.0f} % |"
        )
    difference = pooled["mean_ebm_minus_gaussian"]
    difference_error = pooled["std_error_ebm_minus_gaussian"]
    lines.append(
        f"| **mean of {pooled['n']}** | | gap {pooled['mean_gap_ebm']:.3f} "
        f"{_plus_minus(pooled['std_error_gap_ebm'])} | gap {pooled['mean_gap_gaussian']:.3f} "
        f"{_plus_minus(pooled['std_error_gap_gaussian'])} "
        f"| **{difference:+.3f} {_plus_minus(difference_error)}** "
        f"| **{100 * pooled['share_closed_of_mean_gaps']:.0f} %** (of the mean gaps) |"
    )
    lines.append(
        f"\n{pooled['seeds_favouring_ebm']} of {pooled['n']} seeds favour the EBM prior; ± is the "
        "standard error over seeds."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="ground_truth.py JSON records, one per seed")
    parser.add_argument("--kind", choices=("text", "images"), default=None)
    parser.add_argument("--z-dim", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the pooled record here")
    args = parser.parse_args(argv)
    rows = []
    try:
        for path in args.records:
            try:
                record = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                raise RecordError(f"{path}: cannot read a JSON record ({error})") from error
            rows.append((path, pick_row(record, path, args.kind, args.z_dim)))
        pooled = pool(rows)
    except RecordError as error:
        print(f"ground_truth_seeds: {error}", file=sys.stderr)
        return 2
    pooled["records"] = list(args.records)
    print(markdown(pooled))
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(pooled), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
