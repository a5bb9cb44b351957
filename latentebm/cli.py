"""The ``latentebm`` command: ``train``, ``generate``, ``diagnose``, ``ls``, ``cat``, ``keys``,
``cp``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  latentebm train recipes/quickstart.yaml
  LATENTEBM_DATA=../shared/data latentebm train recipes/ptb.yaml
  latentebm train ptb trainer.max_steps=2000 optim.generator.lr=5e-4 seed=3
  latentebm train ptb trainer.run_dir=runs/ptb/long trainer.resume=auto
  latentebm generate runs/ptb/20261123-101500 -n 20 --decode sample --temperature 0.8
  latentebm diagnose runs/ptb/20261123-101500 --long-chain-steps 2000   # d_t, r_t plots
  latentebm ls
  latentebm cat ptb trainer.max_steps=100      # the resolved recipe
  latentebm keys                               # every recipe key, documented
  latentebm keys shortrun_mnist                # the keys of a short-run recipe
  latentebm cp ptb my_ptb.yaml
"""


OVERRIDES_HELP = (
    "dotted overrides, e.g. seed=3; '~key.path' deletes a key of the recipe (its default "
    "applies, or later items rebuild it), always before the key=value items (quote it: shells "
    "expand ~word)"
)


def builtin_recipes() -> dict[str, Path]:
    """Recipe name -> path of the recipes shipped with the package."""
    folder = resources.files("latentebm.recipes")
    return {
        Path(str(entry)).stem: Path(str(entry))
        for entry in folder.iterdir()
        if str(entry).endswith(".yaml")
    }


def resolve_recipe(name: str) -> Path:
    """A recipe file path, or the name of a built-in recipe (``ptb`` -> recipes/ptb.yaml)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    recipes = builtin_recipes()
    if name in recipes:
        return recipes[name]
    raise FileNotFoundError(
        f"{name}: no such recipe file or built-in recipe (built-in: {', '.join(sorted(recipes))})"
    )


def _describe(path: Path) -> str:
    """First comment line of a recipe."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def cmd_ls(args: argparse.Namespace) -> int:
    for name, path in sorted(builtin_recipes().items()):
        print(f"{name:<16} {_describe(path)}")
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    source = resolve_recipe(args.recipe)
    dest = Path(args.dest)
    if dest.exists():
        raise FileExistsError(f"{dest}: exists; not overwritten")
    shutil.copyfile(source, dest)
    print(f"copied {source} -> {dest}")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    from latentebm.config import load_recipe, recipe_to_yaml

    path = resolve_recipe(args.recipe)
    if recipe_family(path) == "shortrun":
        from latentebm.shortrun import load_shortrun_recipe

        sys.stdout.write(recipe_to_yaml(load_shortrun_recipe(path, args.overrides)))
        return 0
    sys.stdout.write(recipe_to_yaml(load_recipe(path, args.overrides)))
    return 0


FAMILIES = ("latent", "shortrun")
"""Recipe families (the top-level ``family`` key), each with its own schema."""


BUILTIN_COMPONENTS = {
    "task": (
        "latentebm.tasks.text.TextTask",
        "latentebm.tasks.molecules.MoleculeTask",
        "latentebm.tasks.images.ImageTask",
    ),
    "model.generator": (
        "latentebm.generators.lstm.LSTMDecoder",
        "latentebm.generators.transformer.TransformerDecoder",
        "latentebm.generators.conv.ConvGenerator",
    ),
    "model.inference": ("latentebm.inference.SequenceEncoder",),
}
"""The toolkit's components by recipe section (``latentebm keys CLASS`` lists one's keys)."""
_CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _print_keys(rows: list[tuple[str, str, str, str]]) -> None:
    for key, type_name, default, doc in rows:
        print(f"{key:<34} {type_name:<26} {default:<14} {doc}")


def cmd_keys(args: argparse.Namespace) -> int:
    from latentebm.config import Recipe, describe_keys

    name = args.recipe
    if (
        name is not None
        and name not in FAMILIES
        and not Path(name).exists()
        and name not in builtin_recipes()
        and Path(name).suffix not in (".yaml", ".yml")
        and _CLASS_PATH.fullmatch(name)
    ):
        return _component_keys(name)  # latentebm keys latentebm.generators.lstm.LSTMDecoder
    if name is None or name in FAMILIES:
        family, path = name or "latent", None
    else:
        path = resolve_recipe(name)
        family = recipe_family(path)
    if family == "shortrun":
        from latentebm.shortrun import ShortRunRecipe

        _print_keys(describe_keys(ShortRunRecipe))
        return 0
    if path is None:
        _print_keys(describe_keys(Recipe))
        print("\ncomponent keys: latentebm keys RECIPE (its components), or latentebm keys CLASS:")
        for section, classes in BUILTIN_COMPONENTS.items():
            print(f"  {section:<16} {', '.join(classes)}")
        return 0
    from latentebm.config import RecipeError, load_recipe, recipe_components

    try:
        components = recipe_components(load_recipe(path))
    except RecipeError as error:  # e.g. keys left for the command line: the family's keys
        print(
            f"latentebm: {error}\n(listing the schema without its components' keys)",
            file=sys.stderr,
        )
        components = {}
    _print_keys(describe_keys(Recipe, components=components))
    return 0


def _component_keys(target: str) -> int:
    """The keys of one component class's ``Config`` (a class path the user typed: trusted)."""
    from latentebm.config import ComponentConfig, describe_keys

    cls = ComponentConfig(component=target, args=None).resolve()
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise ValueError(f"{target} has no dataclass attribute 'Config' describing its keys")
    _print_keys(describe_keys(config_cls))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from latentebm.config import load_recipe
    from latentebm.malloc_tuning import keep_freed_memory
    from latentebm.train import Trainer

    keep_freed_memory()  # glibc: reuse the chains' freed buffers (LATENTEBM_MALLOC=default: off)

    path = resolve_recipe(args.recipe)
    # family shortrun: the data-space short-run EBM of Nijkamp, Hill, Zhu and Wu (2019), "Learning
    # Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model"
    if recipe_family(path) == "shortrun":
        from latentebm.shortrun import ShortRunTrainer, load_shortrun_recipe

        ShortRunTrainer(load_shortrun_recipe(path, args.overrides)).fit()
        return 0
    recipe = load_recipe(path, args.overrides)
    Trainer(recipe).fit()
    return 0


def recipe_family(path: Path) -> str:
    """The recipe file's top-level ``family`` (``shortrun``) or ``latent`` when it has none."""
    from latentebm.config import RecipeError, describe_value, read_yaml

    data = read_yaml(path, str(path))
    family = data.get("family", "latent")
    if not isinstance(family, str) or family not in FAMILIES:
        raise RecipeError(
            f"{path}: family: expected one of {', '.join(FAMILIES)}, got {describe_value(family)}"
        )
    return family


def _not_for_shortrun(command: str, run: str, instead: str) -> None:
    """Refuse, in one line, a command that applies to latent EBM runs only."""
    from latentebm.runs import run_family

    if run_family(run) == "shortrun":
        raise ValueError(
            f"{run}: a data-space short-run EBM run (family: shortrun); `latentebm {command}` "
            f"applies to latent EBM runs. {instead}"
        )


# ------------------------------------------------------------------ argparse types of options
# A bad value is refused while the command line is parsed: argparse prints the usage and
# "latentebm COMMAND: error: argument -n: must be >= 1, got -1" and exits 2, before any model
# is loaded.


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
"""A count that needs at least one (samples, chains, batch size, top-k, beam size ...)."""

non_negative_int = int_at_least(0)
"""A count where 0 means none (chain steps: 0 = no Langevin step; 0 = skip)."""

SEED_RANGE = (-(2**63), 2**64 - 1)
"""The integers ``torch.Generator.manual_seed`` accepts."""


def seed_int(text: str) -> int:
    """An argparse ``type``: a random seed ``torch.Generator.manual_seed`` accepts."""
    value = int_at_least(SEED_RANGE[0])(text)
    if value > SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be <= {SEED_RANGE[1]}, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0`` (a temperature)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def unit_interval_float(text: str) -> float:
    """An argparse ``type``: a number in ``(0, 1]`` (a nucleus probability, ``--top-p``)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def share_below_one(text: str) -> float:
    """An argparse ``type``: a number in [0, 1)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number ``>= 0`` (a length penalty)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def chain_steps(text: str) -> list[int]:
    """An argparse ``type``: comma-separated chain steps ``>= 0`` (``0,40,100``), sorted and
    without repeats; at least one."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        steps = [-1]
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated steps >= 0, e.g. 0,40,100, got {text!r}"
        )
    return steps


def _check_trajectory(args: argparse.Namespace) -> None:
    """``--trajectory`` steps must lie on a chain of ``--langevin-steps`` steps when given."""
    last = args.trajectory[-1] if args.trajectory else None
    if last is not None and args.langevin_steps is not None and last > args.langevin_steps:
        raise ValueError(
            f"--trajectory: steps must lie in 0..{args.langevin_steps} (the chain's "
            f"--langevin-steps), got step {last}"
        )


_DECODE_OPTION_MODE = {
    "temperature": "sample",
    "top_k": "sample",
    "top_p": "sample",
    "beam_size": "beam",
    "length_penalty": "beam",
}
"""The decoding mode each decoding option belongs to. ``--repetition-penalty`` (greedy and
sample) is not here: with ``--decode beam`` it is an error, not a warning."""


def _decode_opts(args: argparse.Namespace) -> dict[str, object]:
    """The decoding options of ``generate`` / ``interpolate`` for the generator's ``sample``
    (:meth:`~latentebm.generators.decoding.StepwiseDecoder.sample`); an option given for
    another mode than ``--decode`` (``--temperature`` or ``--top-p`` with the default greedy
    decoding, say) is named in a warning line, not silently ignored. ``--max-new-tokens`` is
    passed as ``max_length`` (the same bound: tokens generated, excluding ``<bos>``)."""
    decode = args.decode or "greedy"
    for name, mode in _DECODE_OPTION_MODE.items():
        if getattr(args, name, None) is not None and args.decode is not None and decode != mode:
            flag = "--" + name.replace("_", "-")
            print(
                f"latentebm: warning: {flag} applies to --decode {mode}; ignored with "
                f"--decode {decode}",
                file=sys.stderr,
            )
    names = ("temperature", "top_k", "top_p", "repetition_penalty")
    if decode == "beam":
        names += ("beam_size", "length_penalty")
    given = {name: getattr(args, name, None) for name in names}
    if getattr(args, "max_new_tokens", None) is not None:
        given["max_length"] = args.max_new_tokens
    given = {name: value for name, value in given.items() if value is not None}
    return {"decode": args.decode, **given}  # what is not given keeps the callee's default


def _add_decode_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode",
        choices=("greedy", "sample", "beam"),
        default="greedy",
        help="decoding of each z (default greedy; generate and evaluate sample molecules)",
    )
    parser.add_argument(
        "--temperature", type=positive_float, default=None, help="for --decode sample (> 0; 1)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=None, help="for --decode sample (>= 1)"
    )
    parser.add_argument(
        "--beam-size",
        type=positive_int,
        default=None,
        metavar="K",
        help="for --decode beam (default 5)",
    )
    parser.add_argument(
        "--length-penalty",
        type=non_negative_float,
        default=None,
        metavar="A",
        help="for --decode beam: rank by log p / length**A (default 0: plain log p)",
    )


def _add_generate_decode_args(parser: argparse.ArgumentParser) -> None:
    """The decoding options of ``generate`` beyond :func:`_add_decode_args`, named as in
    Hugging Face ``generate``."""
    parser.add_argument(
        "--top-p",
        type=unit_interval_float,
        default=None,
        metavar="P",
        help="for --decode sample: nucleus sampling (Holtzman et al. 2020), draw from the "
        "smallest set of most likely tokens holding probability >= P, in (0, 1] (after "
        "--temperature and --top-k)",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=None,
        metavar="R",
        help="for --decode greedy and sample (not beam): CTRL's penalty (Keskar et al. 2019) "
        "on tokens already generated, positive logits / R, negative ones * R (> 0; 1: off)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="most tokens per sample, excluding <bos> (default: the model's max_decode_length)",
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
        args.n, steps, langevin_steps=n_steps, seed=args.seed, **_decode_opts(args)
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
    from latentebm.runs import run_family

    _check_trajectory(args)
    if run_family(args.run) == "shortrun":
        return _generate_shortrun(args)
    model = load(args.run, device=args.device)
    if hasattr(model.task, "save_samples"):
        return _generate_images(args, model)
    if args.grid and not hasattr(model.task, "draw_grid"):
        raise ValueError(f"--grid: the {type(model.task).__name__} cannot draw its samples")
    if args.decode is None:  # as evaluate decodes: molecules sampled, text greedy (FPPL)
        args.decode = "sample" if "molecules" in model.task.default_metrics else "greedy"
    if args.trajectory:
        return _generate_trajectory(args, model)
    sentences = model.generate(
        args.n,
        langevin_steps=args.langevin_steps,
        seed=args.seed,
        progress=args.n > 500,  # more than one batch: a bar on stderr, not a silent wait
        **_decode_opts(args),  # type: ignore[arg-type]
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


def _generate_shortrun(args: argparse.Namespace) -> int:
    """``generate`` for a data-space short-run EBM run: ``-n`` images from fresh chains (K
    Langevin steps from p_0, Nijkamp et al. (2019) eq. 5) as a PNG grid at ``--grid`` or ``-o``."""
    import torch

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
    rng = torch.Generator(model.device)
    if args.seed is None:
        rng.seed()  # a fresh random seed, as for latent EBM runs
    else:
        rng.manual_seed(args.seed)
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

    out = _png_target(args.output, args.force)
    ends = []
    for spec in (args.sentence_a, args.sentence_b):
        split, sep, index = spec.partition(":")
        if not sep or not index.isdigit():
            raise ValueError(f"{spec!r}: an image model takes SPLIT:INDEX, e.g. test:7")
        n = model.task.num_examples(split)
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


def cmd_interpolate(args: argparse.Namespace) -> int:
    from latentebm.pretrained import load

    _not_for_shortrun(
        "interpolate",
        args.run,
        "Its training run wrote interpolation.png (interpolating the initial noise).",
    )
    model = load(args.run, device=args.device)
    if hasattr(model.task, "save_samples"):
        return _interpolate_images(args, model)
    pairs = model.interpolate(
        args.sentence_a,
        args.sentence_b,
        args.points,
        path=args.path,
        posterior_steps=args.posterior_steps,
        n_chains=args.chains,
        seed=args.seed,
        **_decode_opts(args),
    )
    for t, sentence in pairs:
        print(f"{t:.3f}\t{sentence}")
    return 0


def _text_eval_settings(args: argparse.Namespace) -> object:
    """``TextEvalSettings`` from the ``evaluate`` options (``--lm-set`` parsed as YAML)."""
    import yaml

    from latentebm.metrics.lm import LMConfig
    from latentebm.metrics.text_eval import TextEvalSettings

    lm_values: dict[str, object] = {}
    for item in args.lm_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--lm-set {item!r}: expected KEY=VALUE (e.g. epochs=2)")
        lm_values[key.strip()] = yaml.safe_load(value)
    options = {
        "n_samples": args.samples,
        "rppl_samples": args.rppl_samples,
        "self_bleu_samples": args.self_bleu_samples,
        "langevin_steps": args.langevin_steps,
        "reconstruction_sentences": args.recon_sentences,
        "reconstruction_steps": args.recon_steps,
        "reconstruction_chains": args.recon_chains,
        "lm_path": args.lm,
    }
    options = {key: value for key, value in options.items() if value is not None}
    decode = _decode_opts(args)
    decode["decode"] = args.decode or "greedy"  # the public FPPL protocol decodes greedily
    return TextEvalSettings(
        **options,
        **decode,
        lm=LMConfig.from_dict(lm_values),  # type: ignore[arg-type]
    )


def _molecule_eval_settings(args: argparse.Namespace) -> object:
    """``MoleculeEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.molecule_eval import MoleculeEvalSettings

    options = {
        "n_samples": args.samples,
        "langevin_steps": args.langevin_steps,
        "n_jobs": args.jobs,
        "decode": args.decode or "sample",
        "temperature": args.temperature,
        "top_k": args.top_k,
    }
    return MoleculeEvalSettings(**{k: v for k, v in options.items() if v is not None})


def _image_eval_settings(args: argparse.Namespace) -> object:
    """``ImageEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.image_eval import ImageEvalSettings

    options = {
        "anomaly_steps": args.anomaly_steps,
        "anomaly_chains": args.anomaly_chains,
        "recon_images": args.recon_images,
        "recon_steps": args.recon_steps,
        "fid_samples": args.samples,
        "langevin_steps": args.langevin_steps,
        "fid_features": args.fid_features,
        "inception": args.inception,
    }
    settings = ImageEvalSettings(**{k: v for k, v in options.items() if v is not None})
    if args.fid_authors:
        settings = settings.authors_fid_protocol()
        if args.samples is not None:
            settings = dataclasses.replace(settings, fid_samples=args.samples)
    return settings


def cmd_mnist_features(args: argparse.Namespace) -> int:
    import torch

    from latentebm.build import resolve_device
    from latentebm.metrics.mnist_features import (
        classification_accuracy,
        save_mnist_feature_net,
        train_mnist_feature_net,
    )
    from latentebm.tasks.images import ImageTask

    out = Path(args.output)
    if out.exists():
        raise FileExistsError(f"{out}: exists; not overwritten")
    task = ImageTask(dataset="mnist", data_root=args.data_root)
    train_x, test_x = task.tensor("train"), task.tensor("test")
    train_y = torch.as_tensor(task.labels("train"))
    test_y = torch.as_tensor(task.labels("test"))
    device = resolve_device(args.device)
    net = train_mnist_feature_net(
        train_x, train_y, epochs=args.epochs, seed=args.seed, device=device
    )
    accuracy = classification_accuracy(net, test_x, test_y)
    save_mnist_feature_net(out, net, test_accuracy=accuracy)
    print(
        f"MNIST feature net: {args.epochs} epoch(s), {net.info['train_seconds']:.0f} s, "
        f"test accuracy {accuracy:.4f} -> {out}",
        file=sys.stderr,
    )
    return 0


def _likelihood_settings(args: argparse.Namespace) -> object:
    """``LikelihoodEvalSettings`` from the ``evaluate`` options."""
    from latentebm.metrics.likelihood_eval import LikelihoodEvalSettings
    from latentebm.metrics.marginal import AISSettings, LogPartitionSettings

    def given(**values: object) -> dict[str, object]:
        return {key: value for key, value in values.items() if value is not None}

    is_mode = args.estimator == "is"
    ais = AISSettings(
        **given(  # type: ignore[arg-type]
            init=args.ais_init,
            n_chains=None if is_mode else args.chains,
            n_temperatures=args.temperatures,
            leapfrog_steps=args.leapfrog,
            laplace_starts=args.laplace_starts,
            laplace_steps=args.laplace_steps,
            defensive=args.defensive,
        )
    )
    log_z = LogPartitionSettings(
        **given(n_chains=args.log_z_chains, n_temperatures=args.log_z_temperatures)  # type: ignore[arg-type]
    )
    return LikelihoodEvalSettings(
        estimator=args.estimator,
        ais=ais,
        log_z=log_z,
        **given(  # type: ignore[arg-type]
            n_importance=args.importance_samples,
            is_chains=args.chains if is_mode else None,
            is_chain_steps=args.chain_steps,
            recon_steps=args.recon_steps,
            usage_examples=args.usage_examples,
            per_example=args.per_example,
        ),
    )


def cmd_export(args: argparse.Namespace) -> int:
    """``latentebm export RUN DIR``: the model as a small folder to share or load."""
    from latentebm.export import export_model, read_card_fields

    _not_for_shortrun("export", args.run, "Copy its checkpoint instead.")
    card = read_card_fields(args.card)
    out = export_model(args.run, args.out, card=card)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"exported to {out} ({size / 1e6:.1f} MB): load it with latentebm.load({str(out)!r})")
    return 0


def cmd_score_molecules(args: argparse.Namespace) -> int:
    """``latentebm score-molecules FILE``: the MOSES suite and/or the QM9 table of any file of
    SMILES (MOSES's ``get_all_metrics(gen)``, from the command line)."""
    import json

    from latentebm.atomic import write_bytes_atomic
    from latentebm.metrics.molecule_eval import MoleculeEvalSettings, score_molecules
    from latentebm.metrics.molecules import read_generated_smiles

    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = sorted(set(names) - {"moses", "molecules"})
    if unknown or not names:
        raise ValueError(f"--metrics: unknown {', '.join(unknown)} (choose moses, molecules)")
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        raise FileExistsError(f"{out}: exists; not overwritten (use --force)")
    needed = ["rdkit", *(["fcd_torch"] if "moses" in names else [])]
    for module in needed:
        try:
            __import__(module)
        except ImportError as error:
            raise ValueError(
                f"score-molecules needs {module} ({error}): pip install 'latentebm[mol]'"
            ) from error
    samples = read_generated_smiles(args.file, args.column)
    if not samples:
        raise ValueError(f"{args.file}: no molecules")
    train = read_generated_smiles(args.train) if args.train else None
    print(
        f"scoring {len(samples):,} molecules of {args.file}"
        + (f" (novelty against {len(train):,} of {args.train})" if train is not None else ""),
        file=sys.stderr,
    )
    settings = MoleculeEvalSettings(
        n_jobs=args.n_jobs,
        cache_dir=args.cache_dir,
        reference_molecules=args.reference_molecules,
    )
    scores = score_molecules(
        samples, names, settings, train=train, data_root=args.data_root, progress=True
    )
    for name, values in scores.items():
        print(f"{name}:")
        for key, value in values.items():
            if isinstance(value, float):
                print(f"  {key:<16} {value:.4g}")
            elif isinstance(value, int) and not isinstance(value, bool):
                print(f"  {key:<16} {value}")
    if out is not None:
        record = {"file": str(args.file), "train": args.train, **scores}
        write_bytes_atomic(out, (json.dumps(record, indent=1, default=str) + "\n").encode())
        print(f"written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from latentebm.evaluate import evaluate, format_table
    from latentebm.malloc_tuning import keep_freed_memory

    keep_freed_memory()  # the estimators' chains, as in cmd_train

    _not_for_shortrun(
        "evaluate",
        args.run,
        "Score its samples with benchmarks/mnist_fid.py; its reconstruction error is in the "
        "run's metrics.json.",
    )
    options = {"batch_size": args.batch_size}
    options = {key: value for key, value in options.items() if value is not None}
    result = evaluate(
        args.run,
        args.split,
        args.metrics,
        likelihood=_likelihood_settings(args),  # type: ignore[arg-type]
        max_batches=args.max_batches,
        spread=args.spread,
        seed=args.seed,
        device=args.device,
        output=args.output,
        progress=not args.no_progress,
        text=_text_eval_settings(args),  # type: ignore[arg-type]
        molecules=_molecule_eval_settings(args),  # type: ignore[arg-type]
        images=_image_eval_settings(args),  # type: ignore[arg-type]
        **options,
    )
    print(format_table(result))
    print(f"written to {result['output']}")
    return 0


def _fmt(value: object, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def cmd_plot(args: argparse.Namespace) -> int:
    """``plot``: the training curves of a run as a PNG (:mod:`latentebm.curves`)."""
    from latentebm.curves import plot_training_curves
    from latentebm.plotting import PlotDependencyError

    out = Path(args.output) if args.output else Path(args.run) / "curves.png"
    keys = [k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None
    try:
        drawn = plot_training_curves(args.run, out, keys)
    except PlotDependencyError as error:
        print(f"latentebm: error: {error}", file=sys.stderr)
        return 2
    print(f"{', '.join(drawn)} -> {out}", file=sys.stderr)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    """``diagnose``: the learning diagnostics of Nijkamp, Hill, Han, Zhu and Wu (2020), "On the
    Anatomy of MCMC-Based Maximum Likelihood Learning of Energy-Based Models" (``d_t``, ``r_t``,
    oscillation, a long prior chain), plus latent usage; see :mod:`latentebm.diagnostics`."""
    from latentebm.diagnostics import diagnose
    from latentebm.plotting import PlotDependencyError

    try:
        result = diagnose(
            args.run,
            out_dir=args.output,
            n_chains=args.chains,
            n_steps=args.long_chain_steps,
            seed=args.seed,
            usage_examples=args.usage_examples,
            device=args.device,
        )
    except PlotDependencyError as error:
        print(f"latentebm: error: {error}", file=sys.stderr)
        return 2
    osc = result["oscillation"] or {}
    chain = result["long_chain"] or {}
    rows = [
        ("logged training rows", _fmt(result["n_train_rows"], "d")),
        ("d_t mean", _fmt(osc.get("mean"))),
        ("d_t std", _fmt(osc.get("std"))),
        ("d_t sign-change fraction", _fmt(osc.get("sign_change_fraction"), ".3f")),
        ("d_t lag-1 autocorrelation", _fmt(osc.get("lag1_autocorrelation"), ".3f")),
        ("oscillation (Nijkamp et al. 2020)", osc.get("label", "-")),
        ("r_t prior chain (mean)", _fmt(result["r_t"]["prior"])),
        ("r_t posterior chain (mean)", _fmt(result["r_t"]["posterior"])),
    ]
    nijkamp = result["nijkamp"]
    rows += [
        ("d_t, Nijkamp et al. 2020 sign", _fmt(nijkamp["d_t_mean"])),
        ("r_t prior, Nijkamp scale", _fmt(nijkamp["r_t_prior"])),
        ("r_t posterior, Nijkamp scale", _fmt(nijkamp["r_t_posterior"])),
        ("  (mapping)", nijkamp["mapping"]),
    ]
    usage = result.get("latent_usage")
    if usage:
        rows += [
            (
                f"active units ({usage['n_examples']} valid examples)",
                f"{usage['active_units']} of {len(usage['mode_variances'])}",
            ),
            ("I(x; z) (nats)", _fmt(usage["mutual_information"], ".3f")),
            ("recon gain (nats/example)", _fmt(usage["recon_gain"], ".3f")),
        ]
    if chain:
        rows += [
            (f"long chain f(z), step 0 ({chain['n_chains']} chains)", _fmt(chain["energy_start"])),
            (f"long chain f(z), step {chain['n_steps']}", _fmt(chain["energy_end"])),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"plots and diagnostics.json -> {result['out_dir']}")
    return 0


def _version() -> str:
    """``latentebm X (torch Y, Python Z)`` for ``--version`` (torch's version from its installed
    metadata: importing torch would cost every command's start-up two seconds)."""
    import platform
    from importlib import metadata

    from latentebm import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"latentebm {__version__} (torch {torch_version}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentebm",
        description="Latent-space energy-based prior models trained with short-run Langevin.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model from a recipe",
        epilog="examples:\n  latentebm train recipes/quickstart.yaml\n"
        "  latentebm train ptb trainer.max_steps=100 model.posterior_chain.n_steps=10\n"
        "  latentebm train ptb trainer.resume=auto\n"
        "  latentebm train qm9 '~model.generator' "
        "model.generator._component_=latentebm.generators.transformer.TransformerDecoder\n"
        "  torchrun --nproc_per_node 2 -m latentebm.cli train ptb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("recipe", help="a recipe file, or a built-in recipe name (latentebm ls)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    train.set_defaults(func=cmd_train)

    gen = sub.add_parser(
        "generate",
        help="sample from a trained model",
        epilog="examples:\n  latentebm generate runs/ptb/20261123-101500 -n 20\n"
        "  latentebm generate RUN_DIR -n 1000 --decode sample --top-k 40 -o samples.txt\n"
        "  latentebm generate RUN_DIR -n 20 --decode beam --beam-size 5\n"
        "  latentebm generate RUN_DIR -n 100 --decode sample --top-p 0.9 "
        "--repetition-penalty 1.2\n"
        "  latentebm generate RUN_DIR -n 5 --langevin-steps 100 --trajectory 0,40,100\n"
        "--trajectory writes trajectory.txt and energy.png (mean f(z) along the chain) into\n"
        "RUN_DIR/samples/trajectory-<timestamp>/ (or --trajectory-dir DIR; never overwritten).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    gen.add_argument(
        "-n", type=positive_int, default=10, help="number of samples / chains (default 10)"
    )
    _add_decode_args(gen)
    gen.set_defaults(decode=None)  # molecules: sample; text: greedy (as evaluate)
    _add_generate_decode_args(gen)
    gen.add_argument(
        "--langevin-steps",
        type=non_negative_int,
        default=None,
        help="prior chain length (default: K0; 0: z from N(0, sigma^2 I))",
    )
    gen.add_argument(
        "--trajectory",
        type=chain_steps,
        default=None,
        metavar="STEPS",
        help="decode z at these chain steps, e.g. 0,40,100, and plot the energy along the chain",
    )
    gen.add_argument("--trajectory-dir", default=None, metavar="DIR", help="see --trajectory")
    gen.add_argument("--seed", type=seed_int, default=None)
    gen.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    gen.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    gen.add_argument("--force", action="store_true", help="overwrite --output/--grid if they exist")
    gen.add_argument(
        "--grid", default=None, metavar="PNG", help="also draw the samples (molecule tasks)"
    )
    gen.set_defaults(func=cmd_generate)

    interp = sub.add_parser(
        "interpolate",
        help="decode a path between the posterior z of two sentences",
        epilog="examples:\n"
        "  latentebm interpolate RUN_DIR 'the cat sees a fish' 'a dog eats some milk'\n"
        "  latentebm interpolate RUN_DIR 'a b' 'c d' --points 10 --path slerp --decode beam\n"
        "  latentebm interpolate MNIST_RUN test:3 test:17 -o strip.png   # image models\n"
        "prints t<TAB>sentence lines; z of a sentence = mean of --chains posterior chains.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    interp.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    interp.add_argument("sentence_a")
    interp.add_argument("sentence_b")
    interp.add_argument(
        "--points", type=int_at_least(2), default=8, help="points on the path (default 8)"
    )
    interp.add_argument("--path", choices=("linear", "slerp"), default="linear")
    interp.add_argument(
        "--chains",
        type=positive_int,
        default=8,
        help="posterior chains averaged per sentence (default 8)",
    )
    interp.add_argument(
        "--posterior-steps",
        type=non_negative_int,
        default=None,
        help="posterior chain length (default: K1)",
    )
    _add_decode_args(interp)
    interp.add_argument("--seed", type=seed_int, default=None)
    interp.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    interp.add_argument("-o", "--output", default=None, help="image models: the PNG strip to write")
    interp.add_argument("--force", action="store_true", help="overwrite -o")
    interp.set_defaults(func=cmd_interpolate)

    diag = sub.add_parser(
        "diagnose",
        help="plot d_t, r_t and a long prior chain of a run (Nijkamp et al. 2020)",
        epilog="examples:\n  latentebm diagnose runs/ptb/20261123-101500\n"
        "  latentebm diagnose RUN_DIR --long-chain-steps 0 --usage-examples 0   # no checkpoint\n"
        "writes RUN_DIR/diagnostics/ (or -o DIR); existing files are never overwritten: a\n"
        "second run writes into diagnostics-2/ (DIR-2/), and so on.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diag.add_argument("run", help="a run directory (metrics.jsonl and checkpoints)")
    diag.add_argument(
        "--long-chain-steps",
        type=non_negative_int,
        default=2000,
        metavar="N",
        help="Langevin steps of the long prior chain (default 2000; 0: skip it)",
    )
    diag.add_argument(
        "--chains",
        type=positive_int,
        default=64,
        metavar="N",
        help="long-chain chains (default 64)",
    )
    diag.add_argument("--seed", type=seed_int, default=0, help="long-chain seed (default 0)")
    diag.add_argument(
        "--usage-examples",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="active units, I(x;z), recon gain on N valid examples (default 100; 0: skip)",
    )
    diag.add_argument(
        "-o", "--output", default=None, metavar="DIR", help="default: RUN_DIR/diagnostics"
    )
    diag.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    diag.set_defaults(func=cmd_diagnose)

    plot = sub.add_parser(
        "plot",
        help="training curves of a run as a PNG (recon NLL, energies, d_t, throughput)",
        epilog="examples:\n  latentebm plot runs/ptb/latest\n"
        "  latentebm plot RUN_DIR --keys recon_nll,posterior_grad_norm -o curves.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plot.add_argument("run", help="a run directory (its metrics.jsonl)")
    plot.add_argument(
        "-o", "--output", default=None, help="the PNG (default RUN/curves.png; never overwritten)"
    )
    plot.add_argument(
        "--keys", default=None, help="comma-separated metrics, one panel each (default: a set)"
    )
    plot.set_defaults(func=cmd_plot)

    ev = sub.add_parser(
        "evaluate",
        help="marginal NLL, recon NLL, latent usage, FPPL, RPPL, BLEU ... of a trained model "
        "on a split (writes metrics.json)",
        epilog="examples:\n  latentebm evaluate runs/ptb/20261123-101500\n"
        "  latentebm evaluate RUN_DIR --metrics marginal_nll,recon_nll,latent_usage\n"
        "  latentebm evaluate RUN_DIR --estimator is --chain-steps 100   # fast, looser NLL\n"
        "  latentebm evaluate RUN_DIR --max-batches 2 -o /tmp/metrics.json   # quick look\n"
        "  latentebm evaluate RUN_DIR --metrics fppl,rppl,bleu --lm runs/ptb/lm_real.pt \\\n"
        "      --lm-set epochs=2 --lm-set hidden_dim=256   # the same scorer for every model\n"
        "metrics: marginal_nll (alias nll), recon_nll, latent_usage, fppl, rppl, bleu\n"
        "(reconstruction BLEU, self-BLEU, distinct-n, length);\n"
        "protocol in docs/metrics.md. Writes RUN_DIR/metrics.json (or -o PATH), merging: an\n"
        "earlier result for the same split and metric moves into the new entry's history.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("run", help="a run directory (newest checkpoint) or a checkpoint file")
    ev.add_argument(
        "--split", default=None, help="default: test (valid when the task has no test split)"
    )
    ev.add_argument(
        "--metrics",
        default=None,
        help="comma-separated (default: the task's, marginal_nll for text, molecules for "
        "molecules)",
    )
    like = ev.add_argument_group(
        "marginal_nll (alias nll), recon_nll, latent_usage (docs/metrics.md)"
    )
    like.add_argument(
        "--estimator",
        choices=("ais", "is"),
        default="ais",
        help="ais: annealed importance sampling (default, tight); is: importance sampling "
        "(fast, looser)",
    )
    like.add_argument(
        "--chains",
        type=int_at_least(2),
        default=None,
        metavar="C",
        help="AIS chains per example (12); is: posterior chains the proposal is fitted to (16)",
    )
    like.add_argument(
        "--temperatures",
        type=positive_int,
        default=None,
        metavar="T",
        help="AIS temperatures of the likelihood path (25)",
    )
    like.add_argument(
        "--ais-init",
        choices=("laplace", "reference"),
        default=None,
        help="AIS start: a Laplace fit per example (default: exact for Gaussian-like posteriors) "
        "or N(0, sigma^2 I) (with --temperatures 500: tight on the rugged posteriors of text "
        "models that use z, at about 12x the cost; docs/RESULTS.md section 12b)",
    )
    like.add_argument(
        "--defensive",
        type=share_below_one,
        default=None,
        metavar="F",
        help="laplace: share of N(0, sigma^2 I) in the start density (0.3)",
    )
    like.add_argument(
        "--leapfrog", type=positive_int, default=None, metavar="L", help="HMC leapfrog (2)"
    )
    like.add_argument(
        "--laplace-starts", type=positive_int, default=None, metavar="S", help="mode searches (8)"
    )
    like.add_argument(
        "--laplace-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="Adam steps of each mode search (50)",
    )
    like.add_argument(
        "--log-z-chains",
        type=int_at_least(2),
        default=None,
        metavar="N",
        help="log Z AIS chains (1024)",
    )
    like.add_argument(
        "--log-z-temperatures",
        type=positive_int,
        default=None,
        metavar="T",
        help="log Z AIS (1000)",
    )
    like.add_argument(
        "--importance-samples",
        type=positive_int,
        default=None,
        metavar="M",
        help="is: samples (100)",
    )
    like.add_argument(
        "--chain-steps",
        type=positive_int,
        default=None,
        metavar="K",
        help="is: chain steps (K1; >= 1)",
    )
    like.add_argument(
        "--usage-examples",
        type=int_at_least(2),
        default=None,
        metavar="N",
        help="latent_usage: N examples spread over the split (1000)",
    )
    like.add_argument(
        "--per-example",
        action="store_true",
        default=None,
        help="marginal_nll: also record every example's log p(x) and standard error, in the "
        "order of the length-sorted split (for paired comparisons of two models)",
    )
    ev.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help="default 64")
    ev.add_argument(
        "--max-batches", type=positive_int, default=None, metavar="N", help="first N only"
    )
    ev.add_argument(
        "--spread",
        action="store_true",
        help="with --max-batches: N batches spread over the length-sorted split, not the first",
    )
    ev.add_argument("--seed", type=seed_int, default=0)
    ev.add_argument("-o", "--output", default=None, metavar="PATH", help="default RUN/metrics.json")
    ev.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    text = ev.add_argument_group("fppl, rppl, bleu (text); moses, molecules (molecules)")
    text.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="generated samples (fppl 10000, moses 30000, molecules 10000)",
    )
    text.add_argument(
        "--jobs", type=positive_int, default=None, metavar="J", help="RDKit worker processes (2)"
    )
    text.add_argument(
        "--rppl-samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="default: train split size",
    )
    text.add_argument(
        "--self-bleu-samples", type=int_at_least(2), default=None, metavar="N", help="default 1000"
    )
    text.add_argument(
        "--langevin-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="prior chain (default K0)",
    )
    _add_decode_args(text)
    text.set_defaults(decode=None)  # text: greedy (FPPL protocol); molecules: sample
    text.add_argument(
        "--recon-sentences",
        type=positive_int,
        default=None,
        metavar="N",
        help="BLEU: first N (all)",
    )
    text.add_argument(
        "--recon-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="BLEU, recon_nll: posterior chain (K1)",
    )
    text.add_argument(
        "--recon-chains", type=positive_int, default=None, metavar="C", help="default 1"
    )
    text.add_argument(
        "--lm",
        default=None,
        metavar="PATH",
        help="the real-data scorer: loaded if it exists, else trained and saved there "
        "(default RUN/eval/lm_real.pt)",
    )
    text.add_argument(
        "--lm-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="language-model setting (embedding_dim, hidden_dim, num_layers, dropout, "
        "batch_size, lr, epochs, max_seconds, grad_clip, seed); repeatable",
    )
    image = ev.add_argument_group("anomaly, mse, fid (images)")
    image.add_argument(
        "--anomaly-steps",
        type=non_negative_int,
        default=None,
        metavar="K",
        help="posterior chain (K1)",
    )
    image.add_argument(
        "--anomaly-chains",
        type=positive_int,
        default=None,
        metavar="C",
        help="chains per image (1)",
    )
    image.add_argument(
        "--recon-images", type=positive_int, default=None, metavar="N", help="mse: first N (all)"
    )
    image.add_argument(
        "--fid-features",
        default=None,
        metavar="PATH",
        help="fid: a net from `latentebm mnist-features PATH` (MNIST-FID)",
    )
    image.add_argument(
        "--fid-authors",
        action="store_true",
        help="fid: the authors' protocol, 50,000 samples against the training split",
    )
    image.add_argument(
        "--inception",
        default=None,
        metavar="PATH",
        help="fid: NVIDIA's inception-2015-12-05.pt TorchScript file (standard FID)",
    )
    ev.set_defaults(func=cmd_evaluate)

    export = sub.add_parser(
        "export",
        help="write a trained model as a small folder to share or load",
        description=(
            "Write RUN's newest checkpoint (or CHECKPOINT) to the folder OUT without what only "
            "training needs: model.pt (recipe, tokenizer, weights), config.yaml and a model "
            "card README.md. Any command or latentebm.load() takes the folder in place of a run."
        ),
    )
    export.add_argument("run", help="run directory or checkpoint")
    export.add_argument("out", help="new folder (never overwritten)")
    export.add_argument(
        "--card",
        default=None,
        help="JSON file of model card fields: title, description, data, licence, budget, "
        "metrics (an object), metrics_command, load_as",
    )
    export.set_defaults(func=cmd_export)

    score = sub.add_parser(
        "score-molecules",
        help="the MOSES metric suite of any SMILES file (MOSES's get_all_metrics)",
        description=(
            "Score a file of generated molecules: the MOSES suite (valid, unique@k, FCD, SNN, "
            "Frag, Scaf, IntDiv, Filters, property distances, novelty with --train) against the "
            "MOSES test sets under the data root, and/or the QM9 table (validity, uniqueness, "
            "novelty). Every row is one sample; empty or unparsable ones count as invalid."
        ),
        epilog=(
            "examples:\n  latentebm score-molecules samples.smi --reference-molecules 20000\n"
            "  latentebm score-molecules gen.csv --column SMILES --metrics molecules "
            "--train train.smi\nThe MOSES reference statistics are built once from "
            "DATA_ROOT/moses/ (minutes; see docs/datasets.md) and cached."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("file", help=".smi/.txt (one per line) or .csv, optionally .gz")
    score.add_argument("--column", default=None, help=".csv: the SMILES column (default smiles)")
    score.add_argument("--metrics", default="moses", help="moses, molecules, or both (comma)")
    score.add_argument("--train", default=None, help="training molecules, for novelty")
    score.add_argument(
        "--reference-molecules",
        type=positive_int,
        default=None,
        help="moses: build the reference from this many molecules of each test set (default "
        "all, MOSES's protocol; FCD always uses MOSES's own statistics)",
    )
    score.add_argument("--n-jobs", type=positive_int, default=2, help="RDKit worker processes")
    score.add_argument("--data-root", default=None, help="holds moses/ (default $LATENTEBM_DATA)")
    score.add_argument("--cache-dir", default=None, help="default ~/.cache/latentebm")
    score.add_argument("-o", "--output", default=None, help="write the scores as JSON")
    score.add_argument("--force", action="store_true", help="overwrite --output")
    score.set_defaults(func=cmd_score_molecules)

    feats = sub.add_parser(
        "mnist-features",
        help="train the MNIST classifier whose features give MNIST-FID",
        epilog="MNIST-FID is not comparable to Inception FIDs; see docs/metrics.md.",
    )
    feats.add_argument("output", help="where to save the network (.pt); never overwritten")
    feats.add_argument("--epochs", type=positive_int, default=2)
    feats.add_argument("--seed", type=seed_int, default=0)
    feats.add_argument("--data-root", default=None, help="default $LATENTEBM_DATA")
    feats.add_argument(
        "--device", default="auto", help="auto (default): a GPU when there is one, else cpu"
    )
    feats.set_defaults(func=cmd_mnist_features)

    cat = sub.add_parser("cat", help="print a recipe resolved with overrides and defaults")
    cat.add_argument("recipe", help="a recipe file, or a built-in recipe name")
    cat.add_argument("overrides", nargs="*", metavar="key=value", help=OVERRIDES_HELP)
    cat.set_defaults(func=cmd_cat)

    keys = sub.add_parser(
        "keys",
        help="list every recipe key with its type, default and meaning",
        epilog="examples:\n  latentebm keys                  # the latent-EBM recipe keys\n"
        "  latentebm keys ptb              # ... with the keys of ptb's task and generator\n"
        "  latentebm keys latentebm.generators.conv.ConvGenerator   # one component's keys\n"
        "  latentebm keys shortrun_mnist   # the keys of that recipe's family (shortrun)\n"
        "  latentebm keys shortrun",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    keys.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="a recipe file or built-in recipe name (its family's keys and its components'), "
        "a family (latent, shortrun), or a component class path (its keys); default: latent. "
        "The defaults shown are the schema's and the classes' (latentebm cat RECIPE shows the "
        "recipe's values)",
    )
    keys.set_defaults(func=cmd_keys)

    ls = sub.add_parser("ls", help="list the built-in recipes")
    ls.set_defaults(func=cmd_ls)

    cp = sub.add_parser("cp", help="copy a built-in recipe to edit it")
    cp.add_argument("recipe")
    cp.add_argument("dest")
    cp.set_defaults(func=cmd_cp)
    return parser


class _StderrLines(logging.Handler):
    """The toolkit's log records (``latentebm.*``, the tasks included) as plain lines on the
    ``sys.stderr`` of the moment (so that a run's console log, which replaces it, keeps them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a log line must never stop a command
            self.handleError(record)


def _show_toolkit_logs() -> None:
    """INFO and above of the ``latentebm`` loggers on stderr: what a task is loading, building
    or caching is said, never silent (once per process; under torchrun on the first process
    only). A program that configured logging itself (handlers on the root logger) keeps its
    own setup: nothing is added then, and records always propagate."""
    if logging.getLogger().handlers or os.environ.get("RANK", "0").strip() not in ("", "0"):
        return
    log = logging.getLogger("latentebm")
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines())
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and exit non-zero (LATENTEBM_DEBUG=1: traceback)."""
    from latentebm.config import RecipeError
    from latentebm.errors import CheckpointError, Interrupted, TrainingError

    args = build_parser().parse_args(argv)
    _show_toolkit_logs()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("latentebm: interrupted", file=sys.stderr)
        return 130
    except Interrupted as error:
        print(f"latentebm: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError as error:
        if not _stdout_closed():  # a pipe of something else broke: a real failure
            print(f"latentebm: error: {one_line(str(error))}", file=sys.stderr)
            return 2
        # the reader of stdout went away (`latentebm cat x | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except (RecipeError, TrainingError, CheckpointError, OSError, ValueError) as error:
        if os.environ.get("LATENTEBM_DEBUG"):
            raise
        print(f"latentebm: error: {one_line(str(error))}", file=sys.stderr)
        return 2


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (``poll`` reports an error on it)."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # no file descriptor, or no poll here
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined with ``"; "``, runs of blanks made one (the
    CLI's contract is one error line, whatever a library's exception text looks like)."""
    parts = [" ".join(line.split()) for line in message.splitlines()]
    return "; ".join(part for part in parts if part) or "unknown error"


if __name__ == "__main__":
    sys.exit(main())
