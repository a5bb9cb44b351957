"""Loading and saving recipes: a file plus overrides validated into a :class:`Recipe`, the
checks across its sections, and the conversions to and from a checkpoint's plain data.

Contract: a recipe file the user runs (:func:`load_recipe`, :func:`load_config`) may name
components from any module; recipe data from elsewhere (:func:`recipe_from_dict`) only from
the trusted prefixes. Every problem is one :class:`RecipeError`.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from latentebm.config.components import COMPONENT_KEY
from latentebm.config.errors import ErrorContext
from latentebm.config.overrides import apply_overrides_with_origins
from latentebm.config.schema import PriorConfig, Recipe
from latentebm.config.typed import convert, to_plain
from latentebm.config.yaml_io import read_yaml, recipe_to_yaml

T = TypeVar("T")

logger = logging.getLogger("latentebm.config")


def _load(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> tuple[T, ErrorContext]:
    source = str(path)
    data = read_yaml(Path(path), source)
    merged, origins, created, deleted = apply_overrides_with_origins(data, overrides)
    # a file the user runs: any module
    ctx = ErrorContext(source, origins, created, deleted, trusted=None)
    result: T = convert(cls, merged, (), ctx)
    return result, ctx


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Read a YAML file, apply command-line overrides and validate it against dataclass ``cls``.

    The schema-agnostic core of :func:`load_recipe` (other recipe families, such as
    :class:`latentebm.shortrun.config.ShortRunRecipe`, use it with their own schema). The file is
    a recipe the user runs, trusted like a script: its components may come from any importable
    module. Raises RecipeError naming the file (or ``command line`` and the override item) and
    the key path.
    """
    return _load(cls, path, overrides)[0]


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe the user runs, apply command-line overrides and validate it.

    ``name`` defaults to the file's stem. Components may come from any importable module (the
    file is trusted like a script). Raises RecipeError naming the file (or ``command line`` and
    the override item) and the key path on any problem.
    """
    recipe, ctx = _load(Recipe, path, overrides)
    _check_recipe(recipe, ctx)
    if recipe.name is None:
        recipe.name = Path(path).stem
    return recipe


def _check_recipe(recipe: Recipe, ctx: ErrorContext) -> None:
    """The checks across sections, after each key was validated on its own."""
    _check_chain_init(recipe, ctx)
    _check_anomaly(recipe, ctx)
    _warn_unused_prior_keys(recipe)


def _warn_unused_prior_keys(recipe: Recipe) -> None:
    """A warning (not an error: a recipe may keep them) for prior keys set to something other
    than their defaults that build nothing."""
    prior = recipe.model.prior
    if prior.energy is None:
        return
    if prior.kind != "ebm":
        logger.warning("model.prior.energy is ignored: model.prior.kind is %s", prior.kind)
        return
    default = PriorConfig()
    for key in ("hidden_dims", "negative_slope"):
        if getattr(prior, key) != getattr(default, key):
            logger.warning(
                "model.prior.%s is ignored: model.prior.energy builds the energy network "
                "(give its sizes there)",
                key,
            )


def _check_chain_init(recipe: Recipe, ctx: ErrorContext) -> None:
    """Each chain's ``init`` must be one it supports; ``amortized`` needs ``model.inference``."""
    model = recipe.model
    if model.prior_chain.init == "amortized":
        raise ctx.error(
            ("model", "prior_chain", "init"),
            "amortized is for the posterior chain; the prior chain takes noise or persistent",
        )
    if model.posterior_chain.init == "amortized" and model.inference is None:
        raise ctx.error(
            ("model", "posterior_chain", "init"),
            "amortized needs model.inference "
            "(e.g. _component_: latentebm.inference.SequenceEncoder)",
            related=[("model", "inference")],
        )


_ANOMALY_KEYWORDS = {
    "anomaly_digit": "digit",
    "anomaly_train_fraction": "train_fraction",
    "anomaly_split_seed": "split_seed",
}
"""The task keyword (and task Config field) each ``anomaly`` key reaches, see ``build_task``."""


def _check_anomaly(recipe: Recipe, ctx: ErrorContext) -> None:
    """An ``anomaly`` section needs a task that takes it (``anomaly_digit``, ... keywords); a
    task whose Config has those fields must accept their values."""
    anomaly = recipe.anomaly
    if anomaly is None:
        return
    task_cls = recipe.task.resolve()
    try:
        params = inspect.signature(task_cls).parameters
    except (TypeError, ValueError):  # no signature to read: leave it to the task
        return
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any and not all(name in params for name in _ANOMALY_KEYWORDS):
        raise ctx.error(
            ("anomaly",),
            f"the task {recipe.task.component} has no anomaly-detection split (an anomaly "
            "section needs an image task with class labels, e.g. "
            "latentebm.tasks.images.ImageTask on mnist); remove the anomaly section",
            related=[("task",)],
        )
    args = recipe.task.args
    if not dataclasses.is_dataclass(args) or isinstance(args, type):
        return
    names = {f.name for f in dataclasses.fields(args)}
    if not set(_ANOMALY_KEYWORDS) <= names:
        return
    task_digit = getattr(args, "anomaly_digit", None)
    if task_digit is not None and task_digit != anomaly.digit:
        raise ctx.error(
            ("anomaly", "digit"),
            f"task.anomaly_digit {task_digit} and anomaly.digit {anomaly.digit} disagree; "
            "set one of them",
            related=[("task",)],
        )
    values = {kw: getattr(anomaly, key) for kw, key in _ANOMALY_KEYWORDS.items()}
    try:
        dataclasses.replace(args, **values)
    except (TypeError, ValueError) as exc:
        raise ctx.error(("anomaly",), str(exc), related=[("task",)]) from exc


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain nested dict of python primitives (YAML- and ``torch.load(weights_only=True)``-safe).

    Tuples become lists and component sections become ``{_component_: path, **args}``.
    """
    return to_plain(recipe)


def recipe_from_dict(
    data: Mapping[str, Any],
    source: str = "checkpoint",
    *,
    trusted_modules: Iterable[str] | None = (),
) -> Recipe:
    """Inverse of :func:`recipe_to_dict` (validates; ``source`` names the origin in errors).

    The recipe is not a file the user runs (a checkpoint's): its components may only come from
    :func:`trusted_module_prefixes` (the toolkit's packages, ``LATENTEBM_TRUSTED_MODULES``) and
    ``trusted_modules``; ``trusted_modules=None`` allows any module.
    """
    trusted = None if trusted_modules is None else tuple(trusted_modules)
    ctx = ErrorContext(source, trusted=trusted)
    recipe: Recipe = convert(Recipe, data, (), ctx)
    _check_recipe(recipe, ctx)
    return recipe


def _component_targets(data: Any) -> set[str]:
    """Every ``_component_`` class path named in recipe data."""
    if isinstance(data, Mapping):
        found = {
            value for key, value in data.items() if key == COMPONENT_KEY and isinstance(value, str)
        }
        for value in data.values():
            found |= _component_targets(value)
        return found
    if isinstance(data, list):
        return set().union(*(_component_targets(item) for item in data)) if data else set()
    return set()


def with_current_defaults(saved: Mapping[str, Any], current: Recipe) -> dict[str, Any]:
    """An older checkpoint's recipe data as this version reads it: keys that a later version
    added (absent from ``saved``) filled with their defaults, so that comparing it with
    ``current`` reports real changes only. (A key added later must therefore default to the
    behaviour from before it existed.)

    Nothing the checkpoint names is imported unless ``current`` (a recipe the user runs) names
    the same class: data naming any other component, or that does not convert (an unknown key,
    a value its class rejects), comes back unchanged, for the caller's comparison to report.
    """
    targets = _component_targets(recipe_to_dict(current))
    if not _component_targets(saved) <= targets:
        return dict(saved)
    modules = {target.rpartition(".")[0] for target in targets}
    try:
        return recipe_to_dict(recipe_from_dict(saved, trusted_modules=modules))
    except Exception:  # noqa: BLE001 - any failure: compare the data as saved
        return dict(saved)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the recipe as YAML to ``path`` (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_to_yaml(recipe), encoding="utf-8")
