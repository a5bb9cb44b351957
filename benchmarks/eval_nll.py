"""Time ``latentebm evaluate`` (the NLL) on a run directory and extrapolate to the full split.

    OMP_NUM_THREADS=1 LATENTEBM_DATA=../shared/data python benchmarks/eval_nll.py runs/ptb/cpu60 \
        --max-batches 4 --json /tmp/eval_nll.json

Nothing is written into the run directory. The extrapolation assumes the remaining batches cost
what the timed ones did per sentence; batches are sorted by length, so timing the first
batches (the shortest sentences) underestimates: use ``--spread`` to time batches spread over
the split instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from latentebm.evaluate import (
    CHUNK_SIZE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_N_CHAINS,
    DEFAULT_N_IMPORTANCE,
    length_sorted_batches,
    spread_batches,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory or checkpoint")
    parser.add_argument("--split", default="test")
    parser.add_argument("--importance-samples", type=int, default=DEFAULT_N_IMPORTANCE)
    parser.add_argument("--chains", type=int, default=DEFAULT_N_CHAINS)
    parser.add_argument("--chain-steps", type=int, default=None, help="default: K1")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--max-batches", type=int, default=4, help="batches to time")
    parser.add_argument(
        "--spread", action="store_true", help="time batches evenly spread over the split"
    )
    parser.add_argument("--log-z-samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)

    from latentebm.metrics.nll import evaluate_nll, log_partition
    from latentebm.pretrained import load

    if args.threads:
        torch.set_num_threads(args.threads)
    pretrained = load(args.run)
    model, task = pretrained.model, pretrained.task
    batches = length_sorted_batches(task, args.split, args.batch_size)
    n_total = sum(b.shape[0] for b in batches)
    count = args.max_batches
    timed = spread_batches(batches, count) if args.spread else batches[:count]
    n_timed = sum(b.shape[0] for b in timed)
    tokens_timed = sum(task.num_target_tokens(b) for b in timed)
    tokens_total = sum(task.num_target_tokens(b) for b in batches)

    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    log_z = log_partition(model.prior, args.log_z_samples, generator=generator)
    log_z_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = evaluate_nll(
        model,
        timed,
        task.num_target_tokens,
        n_importance=args.importance_samples,
        n_chains=args.chains,
        chain_steps=args.chain_steps,
        log_z=log_z,
        generator=generator,
        batch_size=CHUNK_SIZE,
    )
    seconds = time.perf_counter() - t0
    # Cost grows with tokens, so extrapolate per token (per sentence is printed too).
    per_token = seconds / tokens_timed
    extrapolated = log_z_seconds + per_token * tokens_total
    out: dict[str, Any] = {
        "run": str(args.run),
        "checkpoint": str(pretrained.checkpoint),
        "step": pretrained.step,
        "split": args.split,
        "n_importance": args.importance_samples,
        "n_chains": args.chains,
        "chain_steps": result.settings["chain_steps"],
        "batch_size": args.batch_size,
        "spread": args.spread,
        "timed_sentences": n_timed,
        "timed_tokens": tokens_timed,
        "split_sentences": n_total,
        "split_tokens": tokens_total,
        "seconds": seconds,
        "log_z_seconds": log_z_seconds,
        "sentences_per_s": n_timed / seconds,
        "tokens_per_s": tokens_timed / seconds,
        "extrapolated_full_split_s": extrapolated,
        "extrapolated_by_sentences_s": log_z_seconds + seconds / n_timed * n_total,
        "nll_per_example": result.nll_per_example,
        "ppl": result.ppl,
        "mean_ess": result.mean_ess,
        "log_z": result.log_z,
        "log_z_std_error": result.log_z_std_error,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"{n_timed} sentences ({tokens_timed} tokens) in {seconds:.1f} s: "
        f"{out['sentences_per_s']:.2f} sentences/s, {out['tokens_per_s']:.1f} tokens/s; "
        f"log Z {log_z_seconds:.1f} s\n"
        f"extrapolated full {args.split} split ({n_total} sentences, {tokens_total} tokens): "
        f"{extrapolated:.0f} s by tokens, {out['extrapolated_by_sentences_s']:.0f} s by sentences\n"
        f"NLL {result.nll_per_example:.3f} nats/sentence, PPL {result.ppl:.2f} on the timed "
        f"subset, mean ESS {result.mean_ess:.2f} of {args.importance_samples}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
