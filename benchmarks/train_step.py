"""Time one learning iteration of Algorithm 1 against one plain decoder (generator) training step.

(A script of about 750 lines, kept whole: its presets, timed pieces and report share one
measurement loop, and a reader reproducing a RESULTS row should find all of it in one file.)

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
   parameters frozen), through the library's own sampler, timed after one untimed step in the
   same :func:`~latentebm.langevin.frozen` window: a step in the middle of a chain (set-up done
   once per chain, such as the image generator's weight packing, is in the iteration only);
d. ``prior_chain``: the prior chain alone (K0 steps);
e. ``fwd_bwd``: the decoder forward + backward of (a) without clipping and Adam, for the
   issue's literal "plain forward+backward" (a second ratio is reported against it).

It reports medians and IQRs, the ratio iteration / plain (median of the per-repeat ratios,
which are paired in time), the floor and how far above it the ratio is, target tokens (text:
non-pad tokens after ``<bos>``) or images per second, and posterior steps per second.

Text presets (``ptb``, ``reference``) build the model from ``recipes/ptb.yaml`` (or
``--recipe``) with a synthetic stand-in for the text task; the batch is random token ids with
a fixed seed. The image preset ``svhn`` builds it from ``recipes/svhn.yaml`` (Pang et al. 2020's
SVHN settings: batch 100, z 100, ngf 64, K0 60, K1 20) with a synthetic stand-in for the image
task; the batch is uniform noise in ``[-1, 1]`` with a fixed seed. No data files are needed.
With ``--compare-plain-path`` (image generators) the iteration and the posterior step are also
timed, interleaved with the others, on a copy of the model with ``generator.fast_path: false``
(the plain NCHW ``nn.Sequential`` forward), and the paired speed-ups are reported.

    python benchmarks/train_step.py                          # PTB recipe sizes
    python benchmarks/train_step.py --preset reference       # LSTM 256, embedding 256, K1 20
    python benchmarks/train_step.py --preset svhn --threads 1 --compare-plain-path
    python benchmarks/train_step.py --threads 2 --json bench.json
    python benchmarks/train_step.py --quick                  # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
from latentebm.generators.conv import ARCHITECTURES, ConvGenerator
from latentebm.langevin import frozen
from latentebm.malloc_tuning import keep_freed_memory
from latentebm.model import LatentEBM

REPO_ROOT = Path(__file__).resolve().parents[1]

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # also when loaded by file path (the tests)
from _machine import cpu_model as _cpu_model  # noqa: E402
from _machine import git as _git  # noqa: E402
from _machine import load_average as _load  # noqa: E402

DEFAULT_RECIPE = REPO_ROOT / "recipes" / "ptb.yaml"
PRESET_RECIPES = {
    "ptb": DEFAULT_RECIPE,
    "reference": DEFAULT_RECIPE,
    "svhn": REPO_ROOT / "recipes" / "svhn.yaml",
}
"""The recipe each ``--preset`` starts from (``--recipe`` replaces it)."""

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
    # The image model of recipes/svhn.yaml as it is (Tables 5-6: ngf 64, z 100, batch 100).
    "svhn": [],
}
"""Recipe overrides of each ``--preset``; the text ones use a 10,002-word vocabulary."""

QUICK_OVERRIDES = [
    "model.generator.embedding_dim=16",
    "model.generator.hidden_dim=32",
    "model.z_dim=8",
    "model.prior.hidden_dims=[16,16]",
    "model.posterior_chain.n_steps=3",
    "model.prior_chain.n_steps=5",
]
QUICK_OVERRIDES_IMAGE = [
    "model.generator.ngf=4",
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
PLAIN_PATH_PIECES = ("iteration_plain_path", "posterior_step_plain_path")
"""``--compare-plain-path``: the same pieces on a copy with ``generator.fast_path: false``."""
LABELS = {
    "plain": "plain decoder step (fwd + bwd + Adam)",
    "fwd_bwd": "decoder fwd + bwd only (no clip, Adam)",
    "iteration": "learning iteration (learning_step)",
    "posterior_step": "posterior Langevin step (fwd + dz)",
    "prior_chain": "prior chain (K0 steps)",
    "iteration_plain_path": "  the same, fast_path false",
    "posterior_step_plain_path": "  the same, fast_path false",
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


@dataclass
class SyntheticImageTask:
    """Stand-in for ``latentebm.tasks.images.ImageTask``: only what ``build_model`` asks."""

    image_shape: tuple[int, int, int] = (3, 32, 32)

    def generator_kwargs(self) -> dict[str, tuple[int, int, int]]:
        return {"image_shape": self.image_shape}


def image_shape_for(architecture: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the synthetic images: the architecture's side (``auto``: 32, SVHN's),
    one channel for ``mnist28``, three otherwise."""
    side = 32 if architecture == "auto" else ARCHITECTURES[architecture][0]
    return (1 if architecture == "mnist28" else 3, side, side)


def make_image_batch(
    batch_size: int, image_shape: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """``batch_size`` images of uniform noise in ``[-1, 1]`` (the scale of the image tasks)."""
    return torch.rand((batch_size, *image_shape), generator=generator) * 2 - 1


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
            "Time one LatentEBM learning iteration against one plain decoder (generator) "
            "forward+backward on the same batch (PTB recipe sizes by default; --preset svhn: "
            "the SVHN image model)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=None,
        help="recipe YAML (default: the preset's, recipes/ptb.yaml or recipes/svhn.yaml)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="ptb",
        help="ptb: the recipe as is; reference: embedding 256, LSTM 256, z 32, K1 20, K0 60; "
        "svhn: recipes/svhn.yaml as is (image model, batch 100)",
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
    parser.add_argument("--ngf", type=int, default=None, help="override image generator ngf")
    parser.add_argument(
        "--compare-plain-path",
        action="store_true",
        help="image generators: also time the iteration and the posterior step with "
        "generator.fast_path false, interleaved, and report the speed-ups",
    )
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
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="keep glibc's malloc settings (default: those `latentebm train` applies, "
        "latentebm.malloc_tuning)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write results")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny sizes, 2 repeats, seconds"
    )
    args = parser.parse_args(argv)
    if args.recipe is None:
        args.recipe = PRESET_RECIPES[args.preset]

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
        items += QUICK_OVERRIDES_IMAGE if is_image_recipe(args.recipe) else QUICK_OVERRIDES
    flags = {
        "model.generator.embedding_dim": args.embedding_dim,
        "model.generator.hidden_dim": args.hidden_dim,
        "model.generator.ngf": args.ngf,
        "model.z_dim": args.z_dim,
        "model.prior_chain.n_steps": args.k0,
        "model.posterior_chain.n_steps": args.k1,
    }
    items += [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.batch_size is not None:
        items.append(f"trainer.batch_size={args.batch_size}")
    return items + list(args.overrides)


def is_image_recipe(path: Path) -> bool:
    """The recipe's generator is the image generator (ConvGenerator or a subclass)."""
    generator = load_recipe(path, []).model.generator
    return issubclass(generator.resolve(), ConvGenerator)


# ---------------------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds ``fn()`` takes, or the seconds it returns (a piece that times itself)."""
    _synchronize(device)
    start = time.perf_counter()
    own = fn()
    _synchronize(device)
    elapsed = time.perf_counter() - start
    return own if isinstance(own, float) else elapsed


def _chain_step(
    model: LatentEBM,
    density: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    gen: torch.Generator,
    device: torch.device,
) -> float:
    """Seconds of the second of two posterior steps in one frozen window (the first untimed)."""
    with frozen(model):
        model.posterior_chain.run(density, z, generator=gen, n_steps=1)
        _synchronize(device)
        start = time.perf_counter()
        model.posterior_chain.run(density, z, generator=gen, n_steps=1)
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
    model: LatentEBM,
    recipe: Recipe,
    x: torch.Tensor,
    seed: int,
    plain_path_model: LatentEBM | None = None,
) -> dict[str, Callable[[], Any]]:
    """The timed callables (:data:`PIECES`), each one unit of work on the same batch; with
    ``plain_path_model`` also the iteration and the posterior step on it
    (:data:`PLAIN_PATH_PIECES`)."""
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

    def posterior_step() -> float:
        return _chain_step(model, posterior_density, z_post, gen, device)

    def prior_chain() -> None:
        model.sample_prior(x.shape[0], generator=gen)

    pieces: dict[str, Callable[[], Any]] = {
        "plain": plain,
        "fwd_bwd": fwd_bwd,
        "iteration": iteration,
        "posterior_step": posterior_step,
        "prior_chain": prior_chain,
    }
    if plain_path_model is not None:
        other = plain_path_model
        other_optimizers = build_optimizers(recipe, other)
        other_density = other.posterior_log_density(x)

        def iteration_plain_path() -> None:
            other.learning_step(x, other_optimizers, generator=gen)

        def posterior_step_plain_path() -> float:
            return _chain_step(other, other_density, z_post, gen, device)

        pieces["iteration_plain_path"] = iteration_plain_path
        pieces["posterior_step_plain_path"] = posterior_step_plain_path
    return pieces


def measure(
    pieces: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Warm up every piece, then time them interleaved, rotating the order each repeat.

    The garbage collector is off while timing (as in ``timeit``): a ``gc.collect()`` right
    before a piece cools the caches and adds about 1-2 ms to it.
    """
    names = tuple(pieces)
    for _ in range(warmup):
        for name in names:
            _timed(pieces[name], device)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
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


def derive(
    times: dict[str, list[float]],
    k1: int,
    target_tokens: int | None = None,
    *,
    images: int | None = None,
) -> dict[str, Any]:
    """Ratios, floor and throughputs from the timings: per second of target tokens (text) or
    of ``images`` (image models); with :data:`PLAIN_PATH_PIECES` timed, also the paired
    speed-ups of the generator's fast path (plain-path time / fast-path time)."""
    med = {name: _percentile(times[name], 0.5) for name in PIECES}
    paired = [it / pl for it, pl in zip(times["iteration"], times["plain"], strict=True)]
    ratio = _percentile(paired, 0.5)
    floor = (2 * k1 + 3) / 3
    target = 1.10 * floor
    parts = med["prior_chain"] + k1 * med["posterior_step"] + med["plain"]
    if images is not None:
        unit, count = "images", images
    else:
        if target_tokens is None:
            raise ValueError("derive needs target_tokens (text) or images")
        unit, count = "target_tokens", target_tokens
    results: dict[str, Any] = {
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
        f"{unit}_per_s": count / med["iteration"],
        f"plain_{unit}_per_s": count / med["plain"],
        "posterior_steps_per_s": 1.0 / med["posterior_step"],
        "iterations_per_s": 1.0 / med["iteration"],
    }
    for piece in ("iteration", "posterior_step"):
        other = f"{piece}_plain_path"
        if other in times:
            paired = [a / b for a, b in zip(times[other], times[piece], strict=True)]
            results[f"fast_path_speedup_{piece}"] = _percentile(paired, 0.5)
            results[f"fast_path_speedup_{piece}_iqr"] = _percentile(paired, 0.75) - _percentile(
                paired, 0.25
            )
    return results


def _ms(seconds: float) -> str:
    return f"{1000.0 * seconds:10.1f} ms"


def print_report(result: dict[str, Any]) -> None:
    cfg, mach = result["config"], result["machine"]
    res, tim = result["results"], result["timings_s"]
    dirty = " (uncommitted changes)" if mach["git_dirty"] else ""
    image = cfg.get("kind") == "image"
    print(f"latentebm train-step benchmark: preset {cfg['preset']}, recipe {cfg['recipe']}")
    if image:
        print(
            f"model: generator {cfg['architecture']} ngf {cfg['ngf']} "
            f"(fast_path {str(cfg['fast_path']).lower()}), z {cfg['z_dim']}, "
            f"prior MLP {cfg['prior_hidden_dims']}; K0 {cfg['k0']}, K1 {cfg['k1']}"
        )
        shape = "x".join(map(str, cfg["image_shape"]))
        print(
            f"batch: {cfg['batch_size']} images of {shape} (uniform noise in [-1, 1]); "
            f"{cfg['repeats']} repeats after {cfg['warmup']} warm-up"
        )
    else:
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
    order = ["plain", "fwd_bwd", "iteration", "iteration_plain_path"]
    order += ["posterior_step", "posterior_step_plain_path", "prior_chain"]
    for name in (n for n in order if n in tim):
        stats = tim[name]
        label = LABELS[name].replace("K0", f"K0 = {cfg['k0']}")
        if image:
            label = label.replace("decoder", "generator")
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
    ]
    unit = "images" if image else "target_tokens"
    rows += [
        (f"{unit.replace('_', ' ')} / s (iteration)", f"{res[f'{unit}_per_s']:.1f}"),
        (f"{unit.replace('_', ' ')} / s (plain step)", f"{res[f'plain_{unit}_per_s']:.1f}"),
        ("posterior steps / s", f"{res['posterior_steps_per_s']:.2f}"),
    ]
    for piece in ("iteration", "posterior_step"):
        key = f"fast_path_speedup_{piece}"
        if key in res:
            rows.append(
                (
                    f"fast path speed-up, {piece.replace('_', ' ')} (paired)",
                    f"{res[key]:.3f}  (IQR {res[key + '_iqr']:.3f}; fast_path false / true)",
                )
            )
    for label, value in rows:
        print(f"{label:<50} {value}")


# ------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_start = _load()
    malloc_tuned = False if args.malloc_defaults else keep_freed_memory()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    overrides = recipe_overrides(args)
    recipe = load_recipe(args.recipe, overrides)
    device = resolve_device(args.device or recipe.device)

    gen_cfg = recipe.model.generator.args
    image = issubclass(recipe.model.generator.resolve(), ConvGenerator)
    if args.compare_plain_path and not image:
        raise SystemExit("--compare-plain-path is for image generators (e.g. --preset svhn)")

    torch.manual_seed(args.seed)
    batch_gen = torch.Generator().manual_seed(args.seed)
    task: SyntheticTextTask | SyntheticImageTask
    if image:
        task = SyntheticImageTask(image_shape_for(gen_cfg.architecture))
        x = make_image_batch(recipe.trainer.batch_size, task.image_shape, batch_gen)
    else:
        task = SyntheticTextTask(args.vocab_size)
        x = make_batch(recipe.trainer.batch_size, args.length, task, batch_gen)
    model = build_model(recipe, task).to(device)
    model.train()
    x = x.to(device)
    plain_path_model = None
    if args.compare_plain_path:
        plain_path_model = copy.deepcopy(model)
        plain_path_model.generator.config = dataclasses.replace(gen_cfg, fast_path=False)

    pieces = make_pieces(model, recipe, x, args.seed, plain_path_model)
    times = measure(pieces, args.repeats, args.warmup, device)

    k1 = recipe.model.posterior_chain.n_steps
    config: dict[str, Any] = {
        "kind": "image" if image else "text",
        "preset": args.preset,
        "quick": args.quick,
        "recipe": str(args.recipe),
        "overrides": overrides,
    }
    if image:
        assert isinstance(task, SyntheticImageTask)
        config.update(
            image_shape=list(task.image_shape),
            architecture=model.generator.architecture,
            ngf=gen_cfg.ngf,
            fast_path=gen_cfg.fast_path,
            compare_plain_path=args.compare_plain_path,
        )
        results = derive(times, k1, images=x.shape[0])
    else:
        assert isinstance(task, SyntheticTextTask)
        target_tokens = int((x[:, 1:] != task.pad_id).sum())
        config.update(
            vocab_size=args.vocab_size,
            embedding_dim=gen_cfg.embedding_dim,
            hidden_dim=gen_cfg.hidden_dim,
            num_layers=gen_cfg.num_layers,
        )
        results = derive(times, k1, target_tokens)
    result: dict[str, Any] = {
        "benchmark": "train_step",
        "config": {
            **config,
            "z_dim": recipe.model.z_dim,
            "prior_kind": recipe.model.prior.kind,
            "prior_hidden_dims": list(recipe.model.prior.hidden_dims),
            "k0": recipe.model.prior_chain.n_steps,
            "k1": k1,
            "batch_size": recipe.trainer.batch_size,
            **({} if image else {"length": args.length, "target_tokens": target_tokens}),
            "repeats": args.repeats,
            "warmup": args.warmup,
            "seed": args.seed,
            "generator_parameters": sum(p.numel() for p in model.generator.parameters()),
            "prior_parameters": sum(p.numel() for p in model.prior.parameters()),
        },
        "timings_s": {name: summarize(values) for name, values in times.items()},
        "results": results,
        "machine": {**machine_info(device, load_start), "malloc_tuned": malloc_tuned},
    }
    print_report(result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
