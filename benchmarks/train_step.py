"""Time one learning iteration of Algorithm 1 against one plain decoder training step.

One learning iteration (:meth:`latentebm.model.LatentEBM.learning_step`) runs the prior chain
(K0 steps on the small energy MLP), the posterior chain (K1 steps, each a decoder forward plus a
backward to z only), then one decoder forward + backward into the weights and the optimiser
steps. Counting a plain training step as 3 units (forward, backward to activations, backward to
weights) and a posterior step as 2 (forward, backward to activations), the floor of the ratio

    iteration time / plain step time  >=  (2 * K1 + 3) / 3      (14.33 for K1 = 20)

and the target is to be within 10% of it. This script measures, in one process and interleaved
(so that a noisy machine affects every piece alike), after warm-up:

a. ``plain``: one plain decoder step, ``-generator.log_likelihood(x, z).mean()`` forward +
   backward into the weights with z fixed (random, no grad), gradient clipping as in the recipe,
   and an Adam step;
b. ``iteration``: one ``model.learning_step(x, optimizers)`` with the recipe's optimisers;
c. ``posterior_step``: one posterior Langevin step alone (forward + ``autograd.grad`` to z,
   parameters frozen), through the library's own sampler;
d. ``prior_chain``: the prior chain alone (K0 steps);
e. ``fwd_bwd``: the decoder forward + backward of (a) without clipping and Adam, for the
   issue's literal "plain forward+backward" (a second ratio is reported against it).

It reports medians and IQRs, the ratio iteration / plain (median of the per-repeat ratios,
which are paired in time), the floor and how far above it the ratio is, target tokens per
second (non-pad tokens after ``<bos>``) and posterior steps per second.

The model is built from ``recipes/ptb.yaml`` (or ``--recipe``) with a synthetic stand-in for
the text task, so no data files are needed; the batch is random token ids with a fixed seed.

    python benchmarks/train_step.py                          # PTB recipe sizes
    python benchmarks/train_step.py --preset reference       # LSTM 256, embedding 256, K1 20
    python benchmarks/train_step.py --threads 2 --json bench.json
    python benchmarks/train_step.py --quick                  # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentebm.build import build_model, build_optimizers, resolve_device
from latentebm.config import Recipe, load_recipe
from latentebm.langevin import frozen
from latentebm.model import LatentEBM

REPO_ROOT = Path(__file__).resolve().parents[1]

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # also when loaded by file path (the tests)
from _machine import cpu_model as _cpu_model  # noqa: E402
from _machine import git as _git  # noqa: E402
from _machine import load_average as _load  # noqa: E402

DEFAULT_RECIPE = REPO_ROOT / "recipes" / "ptb.yaml"

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
"""The text task's fixed special ids (``latentebm.tasks.text``)."""

PRESETS: dict[str, list[str]] = {
    # The recipe as it is (Table 7 PTB: embedding 128, LSTM 512, z 32; K0 60, K1 20).
    "ptb": [],
    # The reference-sized text model (recipes/ptb_reference.yaml's sizes: embedding 256, LSTM 256).
    "reference": [
        "model.generator.embedding_dim=256",
        "model.generator.hidden_dim=256",
        "model.z_dim=32",
        "model.posterior_chain.n_steps=20",
        "model.prior_chain.n_steps=60",
    ],
}
"""Recipe overrides of each ``--preset``; both use a 10,002-word vocabulary."""

QUICK_OVERRIDES = [
    "model.generator.embedding_dim=16",
    "model.generator.hidden_dim=32",
    "model.z_dim=8",
    "model.prior.hidden_dims=[16,16]",
    "model.posterior_chain.n_steps=3",
    "model.prior_chain.n_steps=5",
]
QUICK_SIZES = {
    "vocab_size": 100,
    "batch_size": 4,
    "length": 8,
    "repeats": 2,
    "warmup": 1,
    "threads": 1,
}
"""``--quick``: tiny sizes for a smoke run (explicit flags still win). One thread: on a busy
machine, two OpenMP threads on tiny ops can be 100x slower than one."""

PIECES = ("plain", "iteration", "posterior_step", "prior_chain", "fwd_bwd")
LABELS = {
    "plain": "plain decoder step (fwd + bwd + Adam)",
    "fwd_bwd": "decoder fwd + bwd only (no clip, Adam)",
    "iteration": "learning iteration (learning_step)",
    "posterior_step": "posterior Langevin step (fwd + dz)",
    "prior_chain": "prior chain (K0 steps)",
}


# ------------------------------------------------------------------------------------ setup
@dataclass
class SyntheticTextTask:
    """Stand-in for ``latentebm.tasks.text.TextTask``: only what ``build_model`` asks of a task."""

    vocab_size: int
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def generator_kwargs(self) -> dict[str, int]:
        return {
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
        }


def make_batch(
    batch_size: int, length: int, task: SyntheticTextTask, generator: torch.Generator
) -> torch.Tensor:
    """``<bos> w_1 .. w_{length-1} <eos>``: shape ``(batch_size, length + 1)``, no padding.

    Words are uniform over the non-special ids, so every row has ``length`` target tokens.
    """
    first_word = max(task.pad_id, task.bos_id, task.eos_id, UNK_ID) + 1
    if task.vocab_size <= first_word:
        raise SystemExit(f"--vocab-size must be > {first_word} (ids 0..3 are specials)")
    if length < 1:
        raise SystemExit("--length must be >= 1 (it counts <eos>)")
    words = torch.randint(
        first_word, task.vocab_size, (batch_size, length - 1), generator=generator
    )
    bos = torch.full((batch_size, 1), task.bos_id, dtype=torch.long)
    eos = torch.full((batch_size, 1), task.eos_id, dtype=torch.long)
    return torch.cat([bos, words, eos], dim=1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time one LatentEBM learning iteration against one plain decoder "
            "forward+backward on the same batch (PTB recipe sizes by default)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="recipe YAML")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="ptb",
        help="ptb: the recipe as is; reference: embedding 256, LSTM 256, z 32, K1 20, K0 60",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted recipe override, repeatable (applied last), e.g. "
        "model.posterior_chain.n_steps=10",
    )
    parser.add_argument("--vocab-size", type=int, default=None, help="vocabulary (10002)")
    parser.add_argument("--embedding-dim", type=int, default=None, help="override embedding")
    parser.add_argument("--hidden-dim", type=int, default=None, help="override LSTM hidden")
    parser.add_argument("--z-dim", type=int, default=None, help="override z dimension")
    parser.add_argument("--k0", type=int, default=None, help="override prior chain steps")
    parser.add_argument("--k1", type=int, default=None, help="override posterior chain steps")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sentences per batch (recipe: 32)"
    )
    parser.add_argument(
        "--length", type=int, default=None, help="target tokens per sentence incl. <eos> (27)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (10)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs of each (2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--device", default=None, help="device (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch and chains")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes, 2 repeats, seconds"
    )
    args = parser.parse_args(argv)

    defaults: dict[str, int | None] = {
        "vocab_size": 10002,
        "length": 27,
        "repeats": 10,
        "warmup": 2,
        "threads": None,
    }
    if args.quick:
        defaults.update(QUICK_SIZES)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("vocab_size", "repeats", "length"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """Preset, then ``--quick``, then the size flags, then ``--set`` (the last one wins)."""
    items = list(PRESETS[args.preset])
    if args.quick:
        items += QUICK_OVERRIDES
    flags = {
        "model.generator.embedding_dim": args.embedding_dim,
        "model.generator.hidden_dim": args.hidden_dim,
        "model.z_dim": args.z_dim,
        "model.prior_chain.n_steps": args.k0,
        "model.posterior_chain.n_steps": args.k1,
    }
    items += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.batch_size is not None:
        items.append(f"trainer.batch_size={args.batch_size}")
    return items + list(args.overrides)


# ---------------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in [0, 1]); works for a single value."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    q25, q75 = _percentile(values, 0.25), _percentile(values, 0.75)
    return {
        "median": _percentile(values, 0.5),
        "q25": q25,
        "q75": q75,
        "iqr": q75 - q25,
        "min": min(values),
        "max": max(values),
        "samples": list(values),
    }


def make_pieces(
    model: LatentEBM, recipe: Recipe, x: torch.Tensor, seed: int
) -> dict[str, Callable[[], Any]]:
    """The four timed callables, each one unit of work on the same batch."""
    device = x.device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 1)
    decoder = model.generator
    optimizers = build_optimizers(recipe, model)
    # The plain step gets its own Adam with the recipe's generator settings, so its moments do
    # not mix with the iteration's.
    plain_optim = build_optimizers(recipe, model).generator
    clip = recipe.optim.generator.grad_clip
    z_plain = model.prior.sample_reference(x.shape[0], generator=gen, device=device)
    z_post = model.prior.sample_reference(x.shape[0], generator=gen, device=device)
    posterior_density = model.posterior_log_density(x)

    def plain() -> None:
        plain_optim.zero_grad(set_to_none=True)
        loss = -decoder.log_likelihood(x, z_plain).mean()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), clip)
        plain_optim.step()

    def fwd_bwd() -> None:
        plain_optim.zero_grad(set_to_none=True)
        (-decoder.log_likelihood(x, z_plain).mean()).backward()

    def iteration() -> None:
        model.learning_step(x, optimizers, generator=gen)

    def posterior_step() -> None:
        with frozen(model):
            model.posterior_chain.run(posterior_density, z_post, generator=gen, n_steps=1)

    def prior_chain() -> None:
        model.sample_prior(x.shape[0], generator=gen)

    return {
        "plain": plain,
        "fwd_bwd": fwd_bwd,
        "iteration": iteration,
        "posterior_step": posterior_step,
        "prior_chain": prior_chain,
    }


def measure(
    pieces: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Warm up every piece, then time them interleaved, rotating the order each repeat.

    The garbage collector is off while timing (as in ``timeit``): a ``gc.collect()`` right
    before a piece cools the caches and adds about 1-2 ms to it.
    """
    for _ in range(warmup):
        for name in PIECES:
            _timed(pieces[name], device)
    times: dict[str, list[float]] = {name: [] for name in PIECES}
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            shift = r % len(PIECES)
            for name in PIECES[shift:] + PIECES[:shift]:
                times[name].append(_timed(pieces[name], device))
    finally:
        gc.enable()
    return times


# ------------------------------------------------------------------------------- reporting
def machine_info(device: torch.device, load_start: list[float] | None) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    argv = getattr(sys, "orig_argv", [sys.executable, *sys.argv])
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_average_start": load_start,
        "load_average_end": _load(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "command": shlex.join(argv),
        "cwd": os.getcwd(),
    }


def derive(times: dict[str, list[float]], k1: int, target_tokens: int) -> dict[str, Any]:
    """Ratios, floor and throughputs from the timings."""
    med = {name: _percentile(times[name], 0.5) for name in PIECES}
    paired = [it / pl for it, pl in zip(times["iteration"], times["plain"], strict=True)]
    ratio = _percentile(paired, 0.5)
    floor = (2 * k1 + 3) / 3
    target = 1.10 * floor
    parts = med["prior_chain"] + k1 * med["posterior_step"] + med["plain"]
    return {
        "ratio": ratio,
        "ratio_iqr": _percentile(paired, 0.75) - _percentile(paired, 0.25),
        "ratio_samples": paired,
        "ratio_of_medians": med["iteration"] / med["plain"],
        "ratio_vs_fwd_bwd": _percentile(
            [it / fb for it, fb in zip(times["iteration"], times["fwd_bwd"], strict=True)], 0.5
        ),
        "floor": floor,
        "above_floor_pct": 100.0 * (ratio / floor - 1.0),
        "target_ratio": target,
        "meets_target": ratio <= target,
        "posterior_step_over_plain": med["posterior_step"] / med["plain"],
        "prior_chain_over_plain": med["prior_chain"] / med["plain"],
        "expected_ratio_from_parts": parts / med["plain"],
        "iteration_overhead_pct": 100.0 * (med["iteration"] / parts - 1.0),
        "target_tokens_per_s": target_tokens / med["iteration"],
        "plain_target_tokens_per_s": target_tokens / med["plain"],
        "posterior_steps_per_s": 1.0 / med["posterior_step"],
        "iterations_per_s": 1.0 / med["iteration"],
    }


def _ms(seconds: float) -> str:
    return f"{1000.0 * seconds:10.1f} ms"


def print_report(result: dict[str, Any]) -> None:
    cfg, mach = result["config"], result["machine"]
    res, tim = result["results"], result["timings_s"]
    dirty = " (uncommitted changes)" if mach["git_dirty"] else ""
    print(f"latentebm train-step benchmark: preset {cfg['preset']}, recipe {cfg['recipe']}")
    print(
        f"model: vocab {cfg['vocab_size']}, embedding {cfg['embedding_dim']}, "
        f"LSTM {cfg['hidden_dim']} x {cfg['num_layers']}, z {cfg['z_dim']}, "
        f"prior MLP {cfg['prior_hidden_dims']}; K0 {cfg['k0']}, K1 {cfg['k1']}"
    )
    print(
        f"batch: {cfg['batch_size']} sentences x {cfg['length']} target tokens = "
        f"{cfg['target_tokens']} target tokens; {cfg['repeats']} repeats after "
        f"{cfg['warmup']} warm-up"
    )
    print(
        f"machine: {mach['cpu_model']} ({mach['cpu_count']} CPUs), {mach['device']}, "
        f"{mach['threads']} threads, torch {mach['torch']}, commit {mach['git_commit']}{dirty}"
    )
    load0, load1 = mach["load_average_start"], mach["load_average_end"]
    if load0 is not None and load1 is not None:
        busy = max(load0[0], load1[0]) > (mach["cpu_count"] or 1)
        note = "  (busy machine: numbers are noisy; see --threads)" if busy else ""
        print(f"load average (1 min): {load0[0]:.2f} at start, {load1[0]:.2f} at end{note}")
    print()
    print(f"{'piece':<40} {'median':>13} {'IQR':>13} {'x plain':>8}")
    plain = tim["plain"]["median"]
    for name in PIECES:
        stats = tim[name]
        label = LABELS[name].replace("K0", f"K0 = {cfg['k0']}")
        print(
            f"{label:<40} {_ms(stats['median'])} {_ms(stats['iqr'])} {stats['median'] / plain:8.2f}"
        )
    print()
    verdict = "met" if res["meets_target"] else "NOT met"
    rows = [
        (
            "ratio iteration / plain (paired median)",
            f"{res['ratio']:.2f}  (IQR {res['ratio_iqr']:.2f})",
        ),
        ("ratio iteration / (fwd + bwd only)", f"{res['ratio_vs_fwd_bwd']:.2f}"),
        ("floor (2*K1 + 3) / 3", f"{res['floor']:.2f}"),
        (
            "above the floor",
            f"{res['above_floor_pct']:+.1f} %  (target <= +10 %, ratio <= "
            f"{res['target_ratio']:.2f}: {verdict})",
        ),
        (
            "posterior step / plain step",
            f"{res['posterior_step_over_plain']:.3f}  (the floor assumes 0.667)",
        ),
        (
            "expected from parts (K0 chain + K1 post. + plain)",
            f"{res['expected_ratio_from_parts']:.2f}  (iteration is "
            f"{res['iteration_overhead_pct']:+.1f} % over the parts)",
        ),
        ("target tokens / s (iteration)", f"{res['target_tokens_per_s']:.1f}"),
        ("target tokens / s (plain step)", f"{res['plain_target_tokens_per_s']:.1f}"),
        ("posterior steps / s", f"{res['posterior_steps_per_s']:.2f}"),
    ]
    for label, value in rows:
        print(f"{label:<50} {value}")


# ------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_start = _load()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = recipe_overrides(args)
    recipe = load_recipe(args.recipe, overrides)
    device = resolve_device(args.device or recipe.device)

    torch.manual_seed(args.seed)
    task = SyntheticTextTask(args.vocab_size)
    model = build_model(recipe, task).to(device)
    model.train()
    batch_gen = torch.Generator().manual_seed(args.seed)
    x = make_batch(recipe.trainer.batch_size, args.length, task, batch_gen).to(device)
    target_tokens = int((x[:, 1:] != task.pad_id).sum())

    pieces = make_pieces(model, recipe, x, args.seed)
    times = measure(pieces, args.repeats, args.warmup, device)

    gen_cfg = recipe.model.generator.args
    k1 = recipe.model.posterior_chain.n_steps
    result: dict[str, Any] = {
        "benchmark": "train_step",
        "config": {
            "preset": args.preset,
            "quick": args.quick,
            "recipe": str(args.recipe),
            "overrides": overrides,
            "vocab_size": args.vocab_size,
            "embedding_dim": gen_cfg.embedding_dim,
            "hidden_dim": gen_cfg.hidden_dim,
            "num_layers": gen_cfg.num_layers,
            "z_dim": recipe.model.z_dim,
            "prior_kind": recipe.model.prior.kind,
            "prior_hidden_dims": list(recipe.model.prior.hidden_dims),
            "k0": recipe.model.prior_chain.n_steps,
            "k1": k1,
            "batch_size": recipe.trainer.batch_size,
            "length": args.length,
            "target_tokens": target_tokens,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "generator_parameters": sum(p.numel() for p in model.generator.parameters()),
            "prior_parameters": sum(p.numel() for p in model.prior.parameters()),
        },
        "timings_s": {name: summarize(times[name]) for name in PIECES},
        "results": derive(times, k1, target_tokens),
        "machine": machine_info(device, load_start),
    }
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
