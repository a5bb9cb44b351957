"""The sampling commands: ``generate`` (text and molecules, image grids, short-run EBM runs,
``--trajectory`` along a prior chain) and ``interpolate`` (sentences, or images ``SPLIT:INDEX``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from latentebm.cli.options import decode_options


def _check_trajectory(args: argparse.Namespace) -> None:
    """``--trajectory`` steps must lie on a chain of ``--langevin-steps`` steps when given."""
    last = args.trajectory[-1] if args.trajectory else None
    if last is not None and args.langevin_steps is not None and last > args.langevin_steps:
        raise ValueError(
            f"--trajectory: steps must lie in 0..{args.langevin_steps} (the chain's "
            f"--langevin-steps), got step {last}"
        )


def _generate_trajectory(args: argparse.Namespace, model: object) -> int:
    from datetime import datetime

    from latentebm.generation import format_trajectory, plot_energy
    from latentebm.plotting import PlotDependencyError, fresh_dir

    steps = args.trajectory
    n_steps = args.langevin_steps
    if n_steps is None:  # K0, or longer if a step asks for it
        n_steps = max(model.model.prior_chain.n_steps, steps[-1])  # type: ignore[attr-defined]
    result = model.trajectory(  # type: ignore[attr-defined]
        args.n, steps, langevin_steps=n_steps, seed=args.seed, **decode_options(args)
    )
    if args.trajectory_dir:
        out = fresh_dir(args.trajectory_dir)
    else:
        checkpoint = Path(model.checkpoint)  # type: ignore[attr-defined]
        run = Path(args.run) if Path(args.run).is_dir() else checkpoint.parent.parent
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = fresh_dir(run / "samples" / f"trajectory-{stamp}")
    text = format_trajectory(result)
    (out / "trajectory.txt").write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    try:
        plot_energy(result, out / "energy.png")
    except PlotDependencyError as error:
        print(f"latentebm: error: {error}", file=sys.stderr)
        return 2
    print(f"trajectory.txt and energy.png -> {out}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from latentebm.pretrained import load
    from latentebm.runs import model_family
    from latentebm.task_contract import DrawsSampleGrid, WritesSamples, optional_member

    _check_trajectory(args)
    if model_family(args.run) == "shortrun":
        return _generate_shortrun(args)
    model = load(args.run, device=args.device)
    if isinstance(model.task, WritesSamples):
        return _generate_images(args, model)
    if args.grid and not isinstance(model.task, DrawsSampleGrid):
        raise ValueError(f"--grid: the {type(model.task).__name__} cannot draw its samples")
    if args.decode is None:  # as evaluate decodes: molecules sampled, text greedy (FPPL)
        metrics = optional_member(model.task, "default_metrics")
        args.decode = "sample" if "molecules" in metrics else "greedy"
    if args.trajectory:
        return _generate_trajectory(args, model)
    sentences = model.generate(
        args.n,
        langevin_steps=args.langevin_steps,
        seed=args.seed,
        progress=args.n > 500,  # more than one batch: a bar on stderr, not a silent wait
        **decode_options(args),  # type: ignore[arg-type]
    )
    text = "\n".join(sentences) + "\n"
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            raise FileExistsError(f"{out}: exists; not overwritten (use --force)")
        out.write_text(text, encoding="utf-8")
        print(f"{len(sentences)} samples from {model.checkpoint} -> {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.grid:
        grid = Path(args.grid)
        if grid.exists() and not args.force:
            raise FileExistsError(f"{grid}: exists; not overwritten (use --force)")
        n_valid = model.task.draw_grid(sentences, grid)
        print(f"grid of {len(sentences)} ({n_valid} valid) -> {grid}", file=sys.stderr)
    return 0


def _seeded_generator(device: Any, seed: int | None) -> Any:
    """A torch generator on ``device`` seeded with ``seed``, or with a fresh random seed (as for
    latent EBM runs) when it is ``None``."""
    import torch

    rng = torch.Generator(device)
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(seed)
    return rng


def _generate_shortrun(args: argparse.Namespace) -> int:
    """``generate`` for a data-space short-run EBM run: ``-n`` images from fresh chains (K
    Langevin steps from p_0, Nijkamp et al. (2019) eq. 5) as a PNG grid at ``--grid`` or ``-o``."""
    from latentebm.image_io import save_grid
    from latentebm.shortrun.tools import load_shortrun

    if args.trajectory:
        raise ValueError("--trajectory: not available for a short-run EBM run")
    if args.langevin_steps is not None:
        raise ValueError(
            "--langevin-steps: a short-run EBM samples with the K steps it was trained with"
        )
    out = _png_target(args.grid or args.output, args.force)
    model = load_shortrun(args.run, map_location=args.device)
    rng = _seeded_generator(model.device, args.seed)
    started = time.perf_counter()
    images = model.sample(args.n, generator=rng)
    rate = args.n / max(time.perf_counter() - started, 1e-9)
    save_grid(images.cpu(), out)
    print(
        f"{args.n} samples ({model.chain.n_steps} Langevin steps from p_0) -> {out} "
        f"({rate:.1f} images/s)",
        file=sys.stderr,
    )
    return 0


def _png_target(target: str | None, force: bool) -> Path:
    """The ``.png`` an image command writes; refuses to overwrite without ``force``."""
    if not target:
        raise ValueError("an image model writes a PNG: give -o NAME.png")
    out = Path(target)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: an image model writes a PNG grid; use a .png name")
    if out.exists() and not force:
        raise FileExistsError(f"{out}: exists; not overwritten (use --force)")
    return out


def _generate_images(args: argparse.Namespace, model: Any) -> int:
    """``generate`` for an image model: a PNG grid at ``--grid`` or ``-o`` (``.png``); with
    ``--trajectory`` one row per chain along a long prior chain, and the energy profile next to
    it (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model",
    Fig. 4)."""
    out = _png_target(args.grid or args.output, args.force)
    if args.trajectory:
        from latentebm.image_io import save_grid
        from latentebm.image_tools import (
            chain_record_steps,
            long_run_prior_chain,
            plot_energy_profile,
        )

        steps = args.trajectory
        n_steps = max(steps[-1], 1) if args.langevin_steps is None else args.langevin_steps
        if n_steps < 1:
            raise ValueError("--langevin-steps: an image --trajectory needs a chain of >= 1 step")
        every = math.gcd(*[s for s in steps if s] or [n_steps])
        images, energies = long_run_prior_chain(
            model.model, args.n, n_steps, every, generator=model.random_generator(args.seed)
        )
        recorded = chain_record_steps(n_steps, every)
        rows = [recorded.index(s) for s in steps if s <= n_steps]
        strip = images[rows].transpose(0, 1).reshape(-1, *images.shape[2:])
        save_grid(strip, out, nrow=len(rows))
        energy_png = out.with_name(out.stem + "_energy.png")
        plot_energy_profile(
            energies,
            energy_png,
            steps=recorded,
            training_steps=model.model.prior_chain.n_steps,
        )
        print(f"{args.n} chains x steps {steps} -> {out}, energy -> {energy_png}", file=sys.stderr)
        return 0
    started = time.perf_counter()
    images = model.sample_images(
        args.n, langevin_steps=args.langevin_steps, seed=args.seed, progress=args.n > 500
    )
    rate = args.n / max(time.perf_counter() - started, 1e-9)
    written = model.task.save_samples(images, out)
    print(
        f"{args.n} images from {model.checkpoint} -> {written} ({rate:.1f} images/s)",
        file=sys.stderr,
    )
    return 0


def _interpolate_images(args: argparse.Namespace, model: Any) -> int:
    """``interpolate`` for an image model: ``SPLIT:INDEX`` of two images, a PNG strip (the two
    images at its ends)."""
    import torch

    from latentebm.image_io import save_grid
    from latentebm.image_tools import interpolate
    from latentebm.task_contract import examples_in

    out = _png_target(args.output, args.force)
    ends = []
    for spec in (args.sentence_a, args.sentence_b):
        split, sep, index = spec.partition(":")
        if not sep or not index.isdigit():
            raise ValueError(f"{spec!r}: an image model takes SPLIT:INDEX, e.g. test:7")
        n = examples_in(model.task, split)
        if int(index) >= n:
            raise ValueError(f"{spec!r}: the {split} split has {n} images")
        ends.append(model.task.tensor(split, [int(index)]))
    strip = interpolate(
        model.model,
        ends[0],
        ends[1],
        args.points,
        n_steps=args.posterior_steps,
        generator=model.random_generator(args.seed),
    )
    save_grid(torch.cat([ends[0], strip, ends[1]]), out, nrow=args.points + 2)
    print(
        f"{args.points} points between {args.sentence_a} and {args.sentence_b} -> {out}",
        file=sys.stderr,
    )
    return 0


def _interpolate_shortrun(args: argparse.Namespace) -> int:
    """``interpolate`` for a data-space short-run EBM run: Nijkamp et al. (2019), Section 3.4,
    ``M_theta(rho z_1 + sqrt(1 - rho^2) z_2)`` between two draws of the initial noise (its
    ends are the two chains' images), as a PNG strip of ``--points`` images."""
    from latentebm.image_io import save_grid
    from latentebm.shortrun.tools import interpolate, load_shortrun

    if (args.sentence_a, args.sentence_b) != ("noise", "noise"):
        raise ValueError(
            f"{args.run}: a data-space short-run EBM interpolates between two draws of its "
            "initial noise (it has no posterior for an image): give `noise noise`"
        )
    out = _png_target(args.output, args.force)
    model = load_shortrun(args.run, map_location=args.device)
    rng = _seeded_generator(model.device, args.seed)
    save_grid(interpolate(model, 1, args.points, generator=rng).cpu(), out, nrow=args.points)
    print(f"{args.points} points between two noise draws -> {out}", file=sys.stderr)
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from latentebm.pretrained import load
    from latentebm.runs import model_family
    from latentebm.task_contract import WritesSamples

    if model_family(args.run) == "shortrun":
        return _interpolate_shortrun(args)
    model = load(args.run, device=args.device)
    if isinstance(model.task, WritesSamples):
        return _interpolate_images(args, model)
    pairs = model.interpolate(
        args.sentence_a,
        args.sentence_b,
        args.points,
        path=args.path,
        posterior_steps=args.posterior_steps,
        n_chains=args.chains,
        seed=args.seed,
        **decode_options(args),
    )
    for t, sentence in pairs:
        print(f"{t:.3f}\t{sentence}")
    return 0
