"""The recipe commands: ``ls``, ``cp``, ``cat``, ``keys`` and ``train``, and finding a recipe
by file or built-in name (:func:`resolve_recipe`) and its family (:func:`recipe_family`).

None of these imports torch at module level; ``ls``, ``cat`` and ``keys`` never import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path


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
        "latentebm.generators.linear.LinearGenerator",
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

    keep_freed_memory()  # glibc: reuse the chains' freed buffers (LATENTEBM_MALLOC=default: off)

    path = resolve_recipe(args.recipe)
    # family shortrun: the data-space short-run EBM of Nijkamp, Hill, Zhu and Wu (2019), "Learning
    # Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model"
    family = recipe_family(path)  # the YAML only: a first line before torch and the task load
    launching = args.processes > 1 and int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1
    _say_starting(path)
    if family == "shortrun":
        from latentebm.shortrun import ShortRunTrainer, load_shortrun_recipe

        if args.processes > 1:
            raise ValueError(
                f"--processes {args.processes}: {path} is a short-run recipe, which trains in "
                "one process (use OMP_NUM_THREADS for the cores)"
            )

        ShortRunTrainer(load_shortrun_recipe(path, args.overrides)).fit()
        return 0
    recipe = load_recipe(path, args.overrides)  # imports the recipe's task and generator
    if args.processes > 1 and not launching:
        raise ValueError(
            f"--processes {args.processes}: this command already runs as one of "
            f"{os.environ['WORLD_SIZE']} processes (WORLD_SIZE is set, e.g. by torchrun); "
            "drop --processes or the outer launcher"
        )
    if launching:
        _check_cpu_device(recipe.device, args.processes)
        return _train_in_processes(path, args.overrides, recipe.trainer.batch_size, args.processes)
    from latentebm.train import Trainer

    Trainer(recipe).fit()
    return 0


def _check_cpu_device(device: str, processes: int) -> None:
    """``--processes`` shares out CPU cores; GPU runs start one process per GPU with torchrun."""
    on_gpu = device != "cpu"
    if device == "auto":
        import torch

        on_gpu = torch.cuda.is_available()
    if on_gpu:
        raise ValueError(
            f"--processes {processes}: the recipe trains on {device} (device); --processes "
            "starts CPU processes. On GPUs start one process per GPU with `torchrun "
            "--standalone --nproc_per_node N -m latentebm.cli train ...`, or set device=cpu"
        )


def _train_in_processes(path: Path, overrides: list[str], batch_size: int, processes: int) -> int:
    """``--processes N``: N data-parallel copies of this command (:mod:`latentebm.launch`), each
    with ``trainer.batch_size / N`` examples, so an update sees the recipe's batch as one process
    would (the gradients are averaged over processes)."""
    from latentebm.launch import run_processes, threads_per_process

    if batch_size % processes:
        raise ValueError(
            f"--processes {processes}: trainer.batch_size={batch_size} does not split into "
            f"{processes} equal shares (each process takes batch_size / processes examples of an "
            f"update); set trainer.batch_size to a multiple of {processes}"
        )
    per_process = batch_size // processes
    threads = threads_per_process(processes, os.environ)
    print(
        f"latentebm: {processes} data-parallel processes of {threads} thread(s), "
        f"trainer.batch_size={per_process} each ({batch_size} examples per update)",
        file=sys.stderr,
    )
    command = [sys.executable, "-m", "latentebm.cli", "train", str(path), *overrides]
    command.append(f"trainer.batch_size={per_process}")
    return run_processes(command, processes, threads=threads)


def _say_starting(path: Path) -> None:
    """The first line of a training command, said before the recipe's components (and torch) are
    imported and the data read: seconds that were silent; the main process only under
    torchrun."""
    from latentebm.launch import LAUNCHED_ENV, is_main_process

    if is_main_process() and LAUNCHED_ENV not in os.environ:  # launched: the launcher said it
        print(f"latentebm: training {path}: loading torch, the data and the model", file=sys.stderr)


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
