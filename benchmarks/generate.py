"""Sentences per second of generation: prior chain (K0 Langevin steps on the energy MLP), then
decoding (greedy, sampled or beam) by the LSTM decoder.

    OMP_NUM_THREADS=1 python benchmarks/generate.py --run runs/ptb/cpu60 \
        --json docs/bench/generate_ptb.json
    OMP_NUM_THREADS=1 python benchmarks/generate.py            # untrained PTB-sized model

With ``--run`` the trained model of a run directory decodes (its sentences end where it emits
``<eos>``); without, the PTB recipe's model with fresh weights and a synthetic 10k vocabulary
(``benchmarks/train_step.py``'s stand-in task) decodes, which rarely emits ``<eos>``, so every
sentence runs to ``max_decode_length``: a worst case. The prior chain and the decoding are timed
separately; each setting runs ``--repeats`` times and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import cpu_model, git, load_average  # noqa: E402


def _model(args: argparse.Namespace) -> tuple[Any, str]:
    if args.run is not None:
        import latentebm

        pretrained = latentebm.load(args.run)
        return pretrained.model, f"{pretrained.checkpoint} (step {pretrained.step})"
    from train_step import SyntheticTextTask

    from latentebm.build import build_model
    from latentebm.config import load_recipe

    recipe = load_recipe(args.recipe)
    torch.manual_seed(args.seed)
    model = build_model(recipe, SyntheticTextTask(args.vocab_size))
    return model.eval(), f"{args.recipe} (untrained)"


def _tokens(sequences: Any, eos_id: int) -> int:
    """Tokens emitted up to and including ``<eos>`` (or to the end of the row)."""
    total = 0
    for row in sequences.tolist() if torch.is_tensor(sequences) else sequences:
        total += row.index(eos_id) + 1 if eos_id in row else len(row)
    return total


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run directory")
    parser.add_argument("--recipe", default="recipes/ptb.yaml", help="without --run")
    parser.add_argument("--vocab-size", type=int, default=10_002, help="without --run")
    parser.add_argument("--n", type=int, default=500, help="sentences per measurement")
    parser.add_argument("--decode", default="greedy,sample", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    model, source = _model(args)
    model.eval()
    eos_id = model.generator.eos_id
    rows: list[dict[str, Any]] = []
    for decode in [d.strip() for d in args.decode.split(",") if d.strip()]:
        chain_s, decode_s, tokens = [], [], []
        for repeat in range(args.repeats):
            generator = torch.Generator().manual_seed(args.seed + repeat)
            start = time.perf_counter()
            z = model.sample_prior(args.n, generator=generator).z
            chain_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generator.sample(z, generator=generator, decode=decode)
            decode_s.append(time.perf_counter() - start)
            tokens.append(_tokens(out, eos_id))
        chain, dec = statistics.median(chain_s), statistics.median(decode_s)
        row = {
            "decode": decode,
            "n": args.n,
            "prior_chain_s": chain,
            "decode_s": dec,
            "sentences_per_s": args.n / (chain + dec),
            "tokens_per_s": statistics.median(tokens) / (chain + dec),
            "mean_tokens_per_sentence": statistics.median(tokens) / args.n,
        }
        rows.append(row)
        print(
            f"{decode:>7}: {row['sentences_per_s']:8.1f} sentences/s "
            f"({row['tokens_per_s']:.0f} tokens/s; prior chain {chain:.2f} s, decoding "
            f"{dec:.2f} s for {args.n}; {row['mean_tokens_per_sentence']:.1f} tokens/sentence)"
        )
    result = {
        "benchmark": "generate",
        "model": source,
        "k0": model.prior_chain.n_steps,
        "rows": rows,
        "repeats": args.repeats,
        "commit": git("rev-parse", "--short", "HEAD"),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
