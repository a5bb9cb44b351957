"""How tight and how costly is the default marginal NLL on a trained model? BDMC and CPU time.

    python benchmarks/bdmc.py RUN_DIR --examples 64 --json docs/bench/bdmc_ptb.json
    python benchmarks/bdmc.py RUN_DIR --ais '{"n_temperatures": 100}'     # other settings

1. Bidirectional Monte Carlo (Grosse et al. 2015; :mod:`latentebm.metrics.bdmc`): ``--examples``
   sentences simulated from the model (exact prior draws, then exact decoder draws), forward AIS
   (a lower bound of ``log (Z p(x))``) and reverse AIS from each sentence's own latent vector
   (an upper bound); the mean gap bounds the estimator's error on such data. ``log Z(alpha)`` is
   bracketed the same way (reverse AIS from exact prior draws). ``--min-length`` and
   ``--max-length`` keep only sentences of those lengths (e.g. those of the real split): a
   selection on ``x`` alone, so each kept sentence's latent vector is still an exact draw from
   its posterior and both bounds still hold.
2. CPU time of the default ``marginal_nll`` on ``--time-batches`` batches of 64 spread over the
   length-sorted test split (process CPU time, ``--threads`` threads), extrapolated to the whole
   split by its token count (marked as an extrapolation), unless ``--full-split`` times it all;
   ``--time-batches 0`` skips it (BDMC alone, e.g. to compare estimator settings).

Prints a summary and writes a JSON record (``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import cpu_model, git, load_average  # noqa: E402

import latentebm  # noqa: E402
from latentebm.cli import positive_int  # noqa: E402
from latentebm.evaluate import length_sorted_batches, spread_batches  # noqa: E402
from latentebm.metrics.bdmc import bdmc, simulate  # noqa: E402
from latentebm.metrics.marginal import (  # noqa: E402
    AISSettings,
    LogPartitionSettings,
    ais_log_partition,
    evaluate_marginal_nll,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory or checkpoint")
    parser.add_argument("--examples", type=positive_int, default=64, help="simulated sentences")
    parser.add_argument(
        "--max-length", type=positive_int, default=60, help="longest simulated sentence"
    )
    parser.add_argument(
        "--min-length",
        type=int,
        default=0,
        help="shortest simulated sentence in tokens before <eos> (shorter ones are rejected: "
        "data of the real split's lengths; the latent vectors stay exact posterior draws)",
    )
    parser.add_argument(
        "--first",
        type=positive_int,
        default=None,
        help="score only the first K of the simulated sentences (the same sentences as a run "
        "with the same --examples and --seed, e.g. to compare settings on a subset)",
    )
    parser.add_argument("--ais", default="{}", help="AISSettings fields as JSON")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--time-batches", type=int, default=4, help="batches of 64 timed (0: no timing)"
    )
    parser.add_argument("--full-split", action="store_true", help="time the whole split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not 0 <= args.min_length < args.max_length:
        parser.error(
            f"--min-length {args.min_length}: must be >= 0 and below --max-length "
            f"{args.max_length} (tokens before <eos>, which itself counts toward --max-length)"
        )
    torch.set_num_threads(args.threads)
    pretrained = latentebm.load(args.run)
    model, task = pretrained.model, pretrained.task
    settings = AISSettings(**json.loads(args.ais))
    generator = torch.Generator().manual_seed(args.seed)
    record: dict[str, Any] = {
        "command": " ".join(["benchmarks/bdmc.py", *(argv if argv is not None else sys.argv[1:])]),
        "checkpoint": str(pretrained.checkpoint),
        "step": pretrained.step,
        "settings": settings.as_dict(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": cpu_model(),
        "threads": args.threads,
        "load_average_start": load_average(),
    }

    try:
        data = simulate(
            model,
            args.examples,
            generator=generator,
            max_length=args.max_length,
            min_length=args.min_length,
        )
    except RuntimeError as error:  # e.g. a prior too tilted for exact draws by rejection
        print(f"bdmc.py: {args.run}: cannot simulate from the model: {error}", file=sys.stderr)
        return 2
    if args.first is not None and args.first < args.examples:
        data = dataclasses.replace(data, x=data.x[: args.first], z=data.z[: args.first])
    scored = int(data.x.shape[0])
    started = time.process_time()
    result = bdmc(
        model,
        data,
        settings,
        generator=generator,
        batch_size=64,
        num_targets_fn=task.num_target_tokens,
    )
    cpu = time.process_time() - started
    record["bdmc"] = {
        **result.summary(),
        "rejected": data.rejected,
        "prior_draws": {
            "bound": data.prior_draws.bound,
            "acceptance": data.prior_draws.acceptance,
            "exceeded": data.prior_draws.exceeded,
        },
        "cpu_seconds": cpu,
        # everything bdmc() did (both directions, both log Z runs) per example and direction
        "cpu_seconds_per_example_per_direction": cpu / scored / 2,
        "per_example": {
            "forward": result.forward.tolist(),
            "reverse": result.reverse.tolist(),
            "length": [int(n) for n in (data.x != model.generator.pad_id).sum(1).tolist()]
            if data.x.dim() == 2
            else None,
        },
    }

    if args.time_batches <= 0 and not args.full_split:
        record["load_average_end"] = load_average()
        _print_bdmc(scored, record["bdmc"])
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return 0

    batches = length_sorted_batches(task, args.split, 64)
    total_tokens = sum(int(task.num_target_tokens(b)) for b in batches)
    total_examples = sum(b.shape[0] for b in batches)
    timed = batches if args.full_split else spread_batches(batches, args.time_batches)
    started = time.process_time()
    log_z = ais_log_partition(model.prior, LogPartitionSettings(), generator=generator)
    log_z_cpu = time.process_time() - started
    started = time.process_time()
    nll = evaluate_marginal_nll(
        model, timed, task.num_target_tokens, settings, log_z=log_z, generator=generator
    )
    cpu = time.process_time() - started
    timed_tokens = nll.total_tokens
    record["timing"] = {
        "split": args.split,
        "examples_timed": nll.n_examples,
        "tokens_timed": timed_tokens,
        "examples_in_split": total_examples,
        "tokens_in_split": total_tokens,
        "cpu_seconds": cpu,
        "log_z_cpu_seconds": log_z_cpu,
        "cpu_seconds_whole_split": log_z_cpu + cpu * total_tokens / timed_tokens,
        "extrapolated": not args.full_split,
        "nll_per_example_timed": nll.nll_per_example,
        "std_error_timed": nll.std_error,
    }
    record["load_average_end"] = load_average()
    t = record["timing"]
    _print_bdmc(scored, record["bdmc"])
    print(
        f"marginal_nll CPU time on {args.split}: {t['cpu_seconds_whole_split']:.0f} s "
        f"({'extrapolated from' if t['extrapolated'] else 'all'} {t['examples_timed']} examples)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


def _print_bdmc(examples: int, b: dict[str, Any]) -> None:
    print(
        f"BDMC on {examples} simulated examples: mean gap {b['mean_gap']:.3f} ± "
        f"{b['gap_std_error']:.3f} nats (median {b['median_gap']:.3f}, max {b['max_gap']:.3f}; "
        f"{b['mean_gap_per_token']:.4f} per token); log Z in [{b['log_z_forward']['value']:.4f}, "
        f"{b['log_z_reverse']['value']:.4f}]; {b['cpu_seconds_per_example_per_direction']:.2f} "
        f"CPU-s per example per direction (incl. the two log Z runs)"
        + (
            ""
            if b.get("reference_share") is None
            else f"; the reference path for {b['reference_share']:.0%} of the examples"
        )
    )


if __name__ == "__main__":
    sys.exit(main())
