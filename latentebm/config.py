"""Typed recipes: YAML files plus dotted command-line overrides, validated into dataclasses.

A recipe is a YAML file such as ``recipes/ptb.yaml``; the command line may override any key with
``section.sub.key=value`` items (``latentebm train recipes/ptb.yaml trainer.max_steps=100``) and
delete a key or section of the file with ``~section.sub.key`` items (Hydra's syntax; all
deletions are applied before any ``key=value`` item, see :func:`apply_overrides`). The
merged mapping is validated against the :class:`Recipe` dataclass schema below. Every problem is
reported as one :class:`RecipeError` whose message is a single line naming where the bad key came
from (the file, or ``command line`` plus the override item) and its dotted key path, e.g.::

    recipes/ptb.yaml: trainer.max_stpes: unknown key (known: batch_size, ...); did you mean ...
    command line: trainer.max_steps=abc: expected int, got str 'abc'

Component sections (the task, the generator) name a class with ``_component_: pkg.mod.Class``;
the remaining keys of the section are validated against ``Class.Config`` (a dataclass) and the
object is later built with :func:`instantiate` as ``Class(config, **extra)``.

A section whose field has a dataclass default (``model.prior_chain``, ``optim.generator``, ...)
may be given partially: the keys not given keep the values of that default, so
``optim.generator.lr=1e-4`` keeps ``grad_clip: 5.0``.

Which modules a ``_component_`` may import depends on where the recipe came from
(``docs/guarantees.md``): a recipe file the user runs (:func:`load_recipe`, :func:`load_config`)
is trusted like a script, so its components may come from any importable module; a recipe read
from anywhere else (a checkpoint: :func:`recipe_from_dict`, :func:`validate`) may only import
from the toolkit's own packages (:data:`TOOLKIT_PACKAGES`) and from the module prefixes listed in
the environment variable ``LATENTEBM_TRUSTED_MODULES``. That check looks at the dotted name only,
before anything is imported.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import logging
import os
import re
import reprlib
import textwrap
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "AdamConfig",
    "ChainConfig",
    "ComponentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PriorConfig",
    "Recipe",
    "RecipeError",
    "LEGACY_COMPONENTS",
    "TOOLKIT_PACKAGES",
    "TRUSTED_MODULES_ENV",
    "TimeBudgetConfig",
    "TrainerConfig",
    "apply_overrides",
    "check_fields",
    "instantiate",
    "load_config",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "recipe_to_yaml",
    "save_recipe",
    "describe_keys",
    "trusted_module_prefixes",
    "validate",
]

T = TypeVar("T")

COMMAND_LINE = "command line"
"""Source name used in error messages for keys that came from command-line overrides."""

COMPONENT_KEY = "_component_"
"""Key of a component section that holds the dotted path of the class to build."""

logger = logging.getLogger(__name__)

TOOLKIT_PACKAGES: tuple[str, ...] = ("latentebm",)
"""The toolkit's own packages: a recipe from any source may name components in these (the
tasks are installed as ``latentebm.tasks``, from the repository's ``tasks/`` folder)."""

LEGACY_COMPONENTS: dict[str, str] = {
    f"tasks.{module}.{cls}": f"latentebm.tasks.{module}.{cls}"
    for module, cls in (
        ("text", "TextTask"),
        ("images", "ImageTask"),
        ("molecules", "MoleculeTask"),
    )
}
"""Component paths of the toolkit's tasks before they were installed as ``latentebm.tasks``
(checkpoints and recipes written then name ``tasks.text.TextTask``): read as their new names,
never imported under the old ones. Only these exact class paths are translated, so a user's own
package called ``tasks`` (even with a module ``tasks.text``) is not touched."""

TRUSTED_MODULES_ENV = "LATENTEBM_TRUSTED_MODULES"
"""Environment variable: comma-separated module prefixes (``mypkg,other.sub``) whose components
a recipe that the user does not run directly (a checkpoint's) may import."""

MAX_YAML_VALUES = 100_000
"""Most values (scalars, lists, mappings) a YAML recipe may hold with its aliases expanded."""

MAX_YAML_DEPTH = 50
"""Deepest nesting of lists and mappings a YAML recipe may have."""


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class RecipeError(ValueError):
    """The single error type of recipe loading and validation; its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def _short_repr(value: Any) -> str:
    """``repr(value)`` cut to at most 60 characters, built without walking all of ``value``
    (a list of a million entries costs as little as a short one)."""
    text = _SHORT_REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _describe(value: Any) -> str:
    """Short one-line description of a value for error messages: ``str 'abc'``, ``null``."""
    if value is None:
        return "null"
    return f"{type(value).__name__} {_short_repr(value)}"


def _format_path(parts: Sequence[str | int]) -> str:
    """``("model", "prior", "hidden_dims", 1)`` -> ``model.prior.hidden_dims[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class _Context:
    """Where the data being validated came from, to name the right source in errors, and which
    modules its components may import."""

    source: str
    overrides: Mapping[tuple[str, ...], str] = field(default_factory=dict)  # key path -> item
    created: Mapping[tuple[str, ...], str] = field(default_factory=dict)  # new section -> item
    deleted: Mapping[tuple[str, ...], str] = field(default_factory=dict)  # ~key path -> item
    trusted: tuple[str, ...] | None = ()
    """Module prefixes trusted beyond the toolkit's packages and ``LATENTEBM_TRUSTED_MODULES``;
    None: any module (a recipe file the user runs directly, trusted like a script)."""

    def origin(self, parts: Sequence[str | int]) -> tuple[tuple[str, ...], str] | None:
        """The override (key path, item) that set ``parts`` or a section containing it.

        A section that did not exist before an override created it counts here only for errors
        about the section itself (e.g. a misspelt section name); errors about keys inside it
        (a missing required key) are named by :meth:`created_by`.
        """
        exact = tuple(parts)
        if exact in self.created and exact not in self.overrides:
            return exact, self.created[exact]  # type: ignore[return-value]
        for n in range(len(parts), 0, -1):
            prefix = parts[:n]
            if all(isinstance(p, str) for p in prefix):
                key = tuple(str(p) for p in prefix)
                if key in self.overrides:
                    return key, self.overrides[key]
        return None

    def created_by(self, parts: Sequence[str | int]) -> tuple[tuple[str, ...], str] | None:
        """The outermost section above ``parts`` that an override created (it is not in the
        file), with that override's item; None when every section above ``parts`` is the
        file's."""
        for n in range(1, len(parts)):
            prefix = parts[:n]
            if all(isinstance(p, str) for p in prefix):
                key = tuple(str(p) for p in prefix)
                if key in self.created:
                    return key, self.created[key]
        return None

    def overrides_within(self, parts: Sequence[str | int]) -> list[str]:
        """The override items that set or deleted ``parts`` or a key inside it."""
        n = len(parts)
        found = [*self.overrides.items(), *self.deleted.items()]
        return [item for key, item in found if key[:n] == tuple(parts)]

    def deleted_section(self, section: Sequence[str]) -> str | None:
        """The ``~key`` item that deleted ``section`` or a section above it, if any."""
        for key, item in self.deleted.items():
            if tuple(section[: len(key)]) == key:
                return item
        return None

    def raw_override(self, parts: Sequence[str | int]) -> str | None:
        """The unparsed text of the override that set exactly ``parts``, if any."""
        found = self.origin(parts)
        if found is None or len(found[0]) != len(parts):
            return None
        return found[1].partition("=")[2].strip()

    def error(
        self,
        parts: Sequence[str | int],
        message: str,
        related: Iterable[Sequence[str | int]] = (),
    ) -> RecipeError:
        """A RecipeError for the key at ``parts``, prefixed with the key's source.

        A key set by a command-line override names that override; a key inside a section that
        only an override created names that override too; a key that a ``~key`` deletion
        removed (now missing) names that deletion. ``related``: other key paths the problem
        depends on (a check across keys); when the key itself is the file's but one of those
        was set or deleted on the command line, the message names that override as well (a
        deletion inside ``parts`` counts as related).
        """
        found = self.origin(parts)
        if found is not None:
            key, item = found
            if len(key) == len(parts):
                return RecipeError(f"{COMMAND_LINE}: {item}: {message}")
            return RecipeError(f"{COMMAND_LINE}: {_format_path(parts)} (from '{item}'): {message}")
        created = self.created_by(parts)
        if created is not None:
            section, item = created
            deletion = self.deleted_section(section)
            if deletion is not None:
                why = f"'{deletion}' deleted the section '{_format_path(section)}'"
            else:
                why = f"the section '{_format_path(section)}' is not in {self.source}"
            return RecipeError(
                f"{COMMAND_LINE}: {item}: {_format_path(parts)}: {message} ({why}; this "
                "override creates it)"
            )
        exact = tuple(parts)
        if exact in self.deleted:
            return RecipeError(f"{COMMAND_LINE}: {self.deleted[exact]}: {message}")
        where = f"{self.source}: {_format_path(parts)}" if parts else self.source
        items = [i for path in related for i in self.overrides_within(path)]
        n = len(parts)
        items += [i for key, i in self.deleted.items() if key[:n] == exact]
        if items:
            shown = ", ".join(f"'{i}'" for i in dict.fromkeys(items))
            return RecipeError(f"{where}: {message} (with the command-line override {shown})")
        return RecipeError(f"{where}: {message}")


# ---------------------------------------------------------------------------------------------
# Component sections
# ---------------------------------------------------------------------------------------------


@dataclass
class ComponentConfig:
    """A recipe section that names a class (``_component_``) plus that class's own config."""

    component: str
    """Dotted import path of the class, e.g. ``latentebm.generators.lstm.LSTMDecoder``."""
    args: Any
    """Validated instance of the class's ``Config`` dataclass."""

    def resolve(self) -> type:
        """Import and return the component class.

        The module is not checked against the trusted packages again: a ComponentConfig comes
        from validation, which checked it (or from Python code, which is trusted).
        """
        return _import_component(
            self.component, (COMPONENT_KEY,), _Context("component", trusted=None)
        )


def instantiate(component: ComponentConfig, **extra: Any) -> object:
    """Build the component: ``cls(component.args, **extra)``."""
    cls = component.resolve()
    return cls(component.args, **extra)


_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def trusted_module_prefixes(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The module prefixes whose components a recipe not run directly may import.

    The toolkit's packages (:data:`TOOLKIT_PACKAGES`), then the comma-separated entries of the
    environment variable ``LATENTEBM_TRUSTED_MODULES``, then ``extra``. A prefix ``mypkg``
    covers ``mypkg`` and ``mypkg.*``; ``mypkg.models`` covers only that subpackage.

    Raises:
        RecipeError: for an entry that is not a dotted module name.
    """
    env = os.environ.get(TRUSTED_MODULES_ENV, "")
    entries = [e.strip() for e in env.split(",") if e.strip()]
    for entry in entries:
        if not _MODULE_RE.fullmatch(entry):
            raise RecipeError(
                f"{TRUSTED_MODULES_ENV}: {entry!r} is not a module name (expected "
                "comma-separated dotted names, e.g. mypkg,other.components)"
            )
    extras = list(extra)
    for entry in extras:
        if not _MODULE_RE.fullmatch(entry):
            raise RecipeError(f"trusted modules: {entry!r} is not a module name")
    return tuple(dict.fromkeys([*TOOLKIT_PACKAGES, *entries, *extras]))


def _covered(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def current_component_path(target: str) -> str:
    """``target``, or its current name if it is one of :data:`LEGACY_COMPONENTS`
    (``tasks.text.TextTask`` -> ``latentebm.tasks.text.TextTask``)."""
    return LEGACY_COMPONENTS.get(target, target)


def current_component_paths(data: Any) -> Any:
    """A copy of recipe data (nested mappings and lists) with every ``_component_`` value
    through :func:`current_component_path`: an older checkpoint's recipe as it reads now."""
    if isinstance(data, Mapping):
        return {
            key: (
                current_component_path(value)
                if key == COMPONENT_KEY and isinstance(value, str)
                else current_component_paths(value)
            )
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [current_component_paths(item) for item in data]
    return data


def _import_component(target: str, parts: Sequence[str | int], ctx: _Context) -> type:
    target = current_component_path(target)
    module_name, _, attr = target.rpartition(".")
    if not module_name or not attr or not _MODULE_RE.fullmatch(target):
        raise ctx.error(
            parts, f"cannot import {target!r} (expected a dotted path like 'package.module.Class')"
        )
    # checked on the name alone: nothing is imported before
    if ctx.trusted is not None and not _covered(module_name, trusted_module_prefixes(ctx.trusted)):
        raise ctx.error(
            parts,
            f"not importing module {module_name!r}: a recipe that is not a file you run "
            f"only imports the toolkit's packages ({', '.join(TOOLKIT_PACKAGES)}) and those "
            f"listed in {TRUSTED_MODULES_ENV}; if you trust this recipe's code, set "
            f"{TRUSTED_MODULES_ENV}={module_name}",
        )
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, attr)
    except Exception as exc:  # anything raised while importing user code is reported
        raise ctx.error(parts, f"cannot import {target!r} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, type):
        raise ctx.error(parts, f"{target!r} is {_describe(obj)}, not a class")
    return obj


# ---------------------------------------------------------------------------------------------
# Generic validation
# ---------------------------------------------------------------------------------------------

_NO = object()  # sentinel: scalar conversion failed
_SCALARS = (bool, int, float, str)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_scalar_type(tp: Any) -> bool:
    return tp in _SCALARS or get_origin(tp) is Literal


def _type_name(tp: Any) -> str:
    """Human name of an annotation for ``expected ...`` messages."""
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return f"one of {list(get_args(tp))!r}"
    if origin is Union or origin is types.UnionType:
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is ComponentConfig:
        return f"a mapping with a '{COMPONENT_KEY}' key"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in get_args(tp))
        return f"{origin.__name__}[{inner}]"
    return getattr(tp, "__name__", repr(tp))


def _convert_scalar(tp: Any, value: Any, raw: str | None) -> Any:
    """Convert ``value`` to scalar type ``tp``; returns ``_NO`` when it does not fit."""
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if tp is float:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                return _NO
        return _NO
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None and isinstance(value, int | float | bool):
            return raw  # `name=2020` on the command line means the string "2020"
        return _NO
    if get_origin(tp) is Literal:
        for choice in get_args(tp):
            if type(value) is type(choice) and value == choice:
                return choice
        return _NO
    raise TypeError(f"not a scalar annotation: {tp!r}")


def _convert(tp: Any, value: Any, parts: tuple[str | int, ...], ctx: _Context) -> Any:
    """Validate ``value`` against annotation ``tp`` and return the converted value."""
    if tp is Any:
        return value
    origin = get_origin(tp)

    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        members = [a for a in args if a is not type(None)]
        if value is None:
            if len(members) < len(args):
                return None
            raise ctx.error(parts, f"expected {_type_name(tp)}, got null")
        if all(_is_scalar_type(m) for m in members):
            raw = ctx.raw_override(parts)
            for member in members:
                result = _convert_scalar(member, value, raw)
                if result is not _NO:
                    return result
            raise ctx.error(parts, f"expected {_type_name(tp)}, got {_describe(value)}")
        if len(members) == 1:
            return _convert(members[0], value, parts, ctx)
        for member in members:
            try:
                return _convert(member, value, parts, ctx)
            except RecipeError:
                continue
        raise ctx.error(parts, f"expected {_type_name(tp)}, got {_describe(value)}")

    if _is_scalar_type(tp):
        result = _convert_scalar(tp, value, ctx.raw_override(parts))
        if result is _NO:
            raise ctx.error(parts, f"expected {_type_name(tp)}, got {_describe(value)}")
        return result

    if tp is type(None):
        if value is None:
            return None
        raise ctx.error(parts, f"expected null, got {_describe(value)}")

    if tp is list or origin is list:
        if not isinstance(value, list | tuple):
            raise ctx.error(parts, f"expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp,) = get_args(tp) or (Any,)
        return [_convert(item_tp, item, (*parts, i), ctx) for i, item in enumerate(value)]

    if tp is tuple or origin is tuple:
        if not isinstance(value, list | tuple):
            raise ctx.error(parts, f"expected {_type_name(tp)} (a list), got {_describe(value)}")
        args = get_args(tp)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_convert(item_tp, item, (*parts, i), ctx) for i, item in enumerate(value))
        if len(value) != len(args):
            raise ctx.error(
                parts,
                f"expected a list of {len(args)} entries, got {len(value)}: {_short_repr(value)}",
            )
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, item, (*parts, i), ctx) for i, (a, item) in pairs)

    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ctx.error(parts, f"expected a mapping, got {_describe(value)}")
        key_tp, value_tp = get_args(tp) or (Any, Any)
        out: dict[Any, Any] = {}
        for key, item in value.items():
            item_parts = (*parts, str(key))
            out[_convert(key_tp, key, item_parts, ctx)] = _convert(value_tp, item, item_parts, ctx)
        return out

    if tp is ComponentConfig:
        return _convert_component(value, parts, ctx)

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, parts, ctx)

    raise TypeError(f"unsupported annotation {tp!r} for recipe key {_format_path(parts)!r}")


def _did_you_mean(key: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown_key_message(key: Any, known: Iterable[str]) -> str:
    known = sorted(known)
    return f"unknown key (known: {', '.join(known)})" + _did_you_mean(key, known)


def _default_section(f: dataclasses.Field[Any]) -> Any:
    """The dataclass instance a field defaults to (for merging a partial section), or None."""
    if f.default_factory is MISSING:
        return None
    default = f.default_factory()
    if dataclasses.is_dataclass(default) and not isinstance(default, ComponentConfig | type):
        return default
    return None


def _deep_merge(base: dict[str, Any], update: Mapping[Any, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, recursively for nested mappings."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        same_component = not (
            isinstance(value, Mapping)
            and isinstance(old, Mapping)
            and COMPONENT_KEY in value
            and value[COMPONENT_KEY] != old.get(COMPONENT_KEY)
        )
        if isinstance(old, dict) and isinstance(value, Mapping) and same_component:
            out[key] = _deep_merge(old, value)
        else:
            out[key] = value
    return out


def _convert_dataclass(
    cls: type[T],
    value: Any,
    parts: tuple[str | int, ...],
    ctx: _Context,
    extra_keys: tuple[str, ...] = (),
) -> T:
    if isinstance(value, cls):
        value = _to_plain(value)
    if not isinstance(value, Mapping):
        raise ctx.error(parts, f"expected a mapping (section), got {_describe(value)}")
    init_fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = {f.name for f in init_fields}
    for key in value:
        if key not in names and key not in extra_keys:
            shown = key if isinstance(key, str) and len(key) <= 60 else _short_repr(key)
            # related: a _component_ chosen on the command line makes the file's keys unknown
            raise ctx.error(
                (*parts, shown),
                _unknown_key_message(shown, names | set(extra_keys)),
                related=[(*parts, k) for k in extra_keys],
            )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in init_fields:
        key_parts = (*parts, f.name)
        if f.name in value:
            item = value[f.name]
            if isinstance(item, Mapping):
                default = _default_section(f)
                if default is not None:
                    item = _deep_merge(_to_plain(default), item)
            converted = _convert(hints[f.name], item, key_parts, ctx)
            if f.metadata.get("path") and isinstance(converted, str):
                converted = os.path.expanduser(converted)
            check: Callable[[Any], str | None] | None = f.metadata.get("check")
            if check is not None and converted is not None:
                problem = check(converted)
                if problem:
                    raise ctx.error(key_parts, problem)
            kwargs[f.name] = converted
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ctx.error(key_parts, "missing required key")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a check across keys in the dataclass itself
        raise ctx.error(parts, str(exc), related=[parts]) from exc


def _convert_component(value: Any, parts: tuple[str | int, ...], ctx: _Context) -> ComponentConfig:
    if isinstance(value, ComponentConfig):
        value = _to_plain(value)
    if not isinstance(value, Mapping):
        raise ctx.error(
            parts, f"expected a mapping with a '{COMPONENT_KEY}' key, got {_describe(value)}"
        )
    if COMPONENT_KEY not in value:
        raise ctx.error(parts, f"missing '{COMPONENT_KEY}' key (dotted path of the class to build)")
    target = value[COMPONENT_KEY]
    target_parts = (*parts, COMPONENT_KEY)
    if not isinstance(target, str):
        raise ctx.error(
            target_parts, f"expected str (like 'package.module.Class'), got {_describe(target)}"
        )
    target = current_component_path(target)
    cls = _import_component(target, target_parts, ctx)
    config_cls = getattr(cls, "Config", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise ctx.error(
            target_parts, f"{target} has no dataclass attribute 'Config' describing its keys"
        )
    args = _convert_dataclass(config_cls, value, parts, ctx, extra_keys=(COMPONENT_KEY,))
    return ComponentConfig(component=target, args=args)


def validate(
    cls: type[T],
    data: Mapping[str, Any],
    path: str = "",
    source: str = "<recipe>",
    *,
    overrides: Mapping[str, str] | None = None,
    trusted_modules: Iterable[str] | None = (),
) -> T:
    """Build dataclass ``cls`` (or any supported annotation) from ``data``, checking every key.

    Args:
        cls: the dataclass (or ``ComponentConfig``) to build.
        data: the mapping read from YAML (after overrides).
        path: dotted key path of ``data`` inside the recipe (``""`` for the top level); used in
            error messages.
        source: where ``data`` came from (a file name, ``"checkpoint"``), used in error messages.
        overrides: dotted key path (from the recipe root) -> command-line item that set it; errors
            at or below such a key name ``command line`` and the item instead of ``source``.
        trusted_modules: ``data`` is not a recipe file the user runs (it may come from a
            checkpoint), so components may only be imported from the toolkit's packages, the
            prefixes in ``LATENTEBM_TRUSTED_MODULES`` and these prefixes; None: from any module.

    Raises:
        RecipeError: on an unknown key, a wrong type, a missing required key, a bad value or a
            component that cannot (or may not) be imported.
    """
    trusted = None if trusted_modules is None else tuple(trusted_modules)
    origins = {tuple(k.split(".")): v for k, v in (overrides or {}).items()}
    ctx = _Context(source, origins, trusted=trusted)
    parts: tuple[str | int, ...] = tuple(path.split(".")) if path else ()
    return _convert(cls, data, parts, ctx)


# ---------------------------------------------------------------------------------------------
# Plain-dict conversion
# ---------------------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    """Nested python primitives: dataclasses -> dicts, tuples -> lists, components -> mappings."""
    if isinstance(obj, ComponentConfig):
        return {COMPONENT_KEY: obj.component, **_to_plain(obj.args)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {key: _to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(value) for value in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Value checks (attached to schema fields through metadata)
# ---------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def _probability(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"must be in [0, 1], got {value!r}"


def _rate(value: float) -> str | None:
    """A dropout rate: ``[0, 1)``."""
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value!r}"


def check_fields(obj: Any) -> None:
    """Run the value ``check`` of every field of dataclass instance ``obj`` (see ``_field``).

    For a component Config's ``__post_init__``, so that a Config built in Python is checked as
    one read from a recipe (where validation runs the same checks first and names the key).

    Raises:
        ValueError: ``"<field>: <problem>"`` for the first field whose check fails.
    """
    for f in dataclasses.fields(obj):
        check: Callable[[Any], str | None] | None = f.metadata.get("check")
        value = getattr(obj, f.name)
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ValueError(f"{f.name}: {problem}")


def _each_positive(values: Sequence[float]) -> str | None:
    for i, value in enumerate(values):
        if not value > 0:
            return f"entries must be > 0, got {value!r} at index {i}"
    return None


def _betas(values: Sequence[float]) -> str | None:
    for i, value in enumerate(values):
        if not 0.0 <= value < 1.0:
            return f"entries must be in [0, 1), got {value!r} at index {i}"
    return None


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


SEED_LIMIT = 2**32
"""Seeds are in ``0 .. 2**32 - 1``: what every random generator a run seeds accepts (NumPy's
legacy ``np.random.seed`` takes no more), with room for the derived per-process seeds."""


def _seed(value: int) -> str | None:
    if 0 <= value < SEED_LIMIT:
        return None
    return f"must be in 0..{SEED_LIMIT - 1} (2**32 - 1), got {_short_repr(value)}"


def _digit(value: int) -> str | None:
    return None if 0 <= value <= 9 else "must be a class label in 0..9"


def _open_unit(value: float) -> str | None:
    return None if 0.0 < value < 1.0 else "must be in (0, 1)"


def _device(value: str) -> str | None:
    if _DEVICE_RE.fullmatch(value):
        return None
    return f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}"


def _field(
    default: Any = MISSING,
    doc: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    check: Check | None = None,
    path: bool = False,
) -> Any:
    """A dataclass field carrying its documentation (``doc``) and a value ``check``.

    ``path``: the value is a file or directory path; validation expands a leading ``~`` (the
    user's home directory), as a shell would.
    """
    metadata: dict[str, Any] = {"doc": doc}
    if check is not None:
        metadata["check"] = check
    if path:
        metadata["path"] = True
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DataConfig:
    """Where the data sets live."""

    root: str | None = _field(
        None, "Data root directory; null -> environment LATENTEBM_DATA.", path=True
    )


@dataclass(kw_only=True)
class PriorConfig:
    """The latent prior: an energy-based correction of N(0, sigma^2 I), or the Gaussian alone."""

    kind: Literal["ebm", "gaussian", "none"] = _field(
        "ebm",
        "ebm: learned EBM prior; gaussian: N(0, sigma^2 I); none: no latent variable (the "
        "decoder alone, e.g. the CharRNN baseline: z_dim is taken as 0 and no chain runs).",
    )
    hidden_dims: list[int] = _field(
        doc="Hidden layer widths of the energy MLP.",
        factory=lambda: [200, 200],
        check=_each_positive,
    )
    negative_slope: float = _field(
        0.2, "LeakyReLU negative slope of the energy MLP.", check=_non_negative
    )
    prior_sigma: float = _field(1.0, "Std of the Gaussian reference density.", check=_positive)
    energy: ComponentConfig | None = _field(
        None,
        "kind ebm: the energy network f_alpha as a component, e.g. _component_: "
        "latentebm.prior.MLPEnergy (any torch module built as cls(config, z_dim=d) that maps "
        "z (B, d) to (B,) or (B, 1)); null: the MLP of hidden_dims and negative_slope.",
    )


@dataclass(kw_only=True)
class ChainConfig:
    """Short-run Langevin dynamics: z <- z + a^2/2 * grad log p(z) + a * noise."""

    n_steps: int = _field(
        doc="Number of Langevin steps (K); 0 disables the chain.", check=_non_negative
    )
    step_size: float = _field(
        doc="Noise scale a of one step; the drift is a^2/2 times the gradient of the log density.",
        check=_positive,
    )
    noise: bool = _field(True, "Add the Gaussian noise term (false: gradient ascent only).")
    clamp: float | None = _field(
        None, "Clamp z to [-clamp, clamp] after each step; null: off.", check=_positive
    )
    step_schedule: list[float] | None = _field(
        None,
        "Per-step noise scales a_0, a_1, ... replacing step_size (steps past the end use the "
        "last value); null: step_size at every step. The authors' text code uses [0.8, 0.7, "
        "0.6, 0.5, 0.2, 0.2, 0.1, 0.1, 0.05] (then 0.05) for its 20-step posterior chain.",
        check=_each_positive,
    )
    noise_factor: float = _field(
        1.0,
        "Multiply the noise a * eps by this T: 1 is Langevin; T < 1 a colder chain (the "
        "authors' text code: 0.05, raised to 0.2 after 15 epochs).",
        check=_non_negative,
    )
    init: Literal["noise", "persistent", "amortized"] = _field(
        "noise",
        "Where the chain starts: noise (N(0, sigma^2 I), the paper); persistent (prior chain: "
        "a replay buffer of earlier chain ends; posterior chain: each training example's "
        "previous chain end); amortized (posterior chain only: samples of the inference model "
        'q_phi(z|x) of model.inference, as in Cui and Han 2023, "Learning Energy-Based Model '
        'via Dual-MCMC Teaching").',
    )
    buffer_size: int = _field(
        10000, "Prior chain, init persistent: number of stored chain ends.", check=_positive
    )
    reinit_rate: float = _field(
        0.05,
        "Prior chain, init persistent: probability that a drawn chain restarts from "
        "N(0, sigma^2 I).",
        check=_probability,
    )


@dataclass(kw_only=True)
class ModelConfig:
    """The latent-space EBM model: prior, generator and the two Langevin samplers."""

    z_dim: int = _field(32, "Dimension of the latent vector z.", check=_positive)
    prior: PriorConfig = _field(doc="Latent prior.", factory=PriorConfig)
    generator: ComponentConfig = _field(
        doc="Generator p(x|z), e.g. _component_: latentebm.generators.lstm.LSTMDecoder."
    )
    prior_chain: ChainConfig = _field(
        doc="Langevin sampler of the prior (Table 5: K0, s0).",
        factory=lambda: ChainConfig(n_steps=60, step_size=0.4),
    )
    posterior_chain: ChainConfig = _field(
        doc="Langevin sampler of the posterior (Table 5: K1, s1).",
        factory=lambda: ChainConfig(n_steps=20, step_size=0.1),
    )
    inference: ComponentConfig | None = _field(
        None,
        "Inference model q_phi(z|x) for posterior_chain.init: amortized, e.g. "
        "_component_: latentebm.inference.SequenceEncoder; null: none.",
    )
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = _field(
        None,
        "torch.compile the chains' log densities with this mode (reduce-overhead: CUDA graphs on "
        "a GPU); null: eager. Slower on CPU (docs/RESULTS.md, Not measured).",
    )


@dataclass(kw_only=True)
class AdamConfig:
    """Adam optimiser settings for one set of parameters."""

    lr: float = _field(doc="Learning rate.", check=_positive)
    betas: tuple[float, float] = _field((0.9, 0.999), "Adam (beta1, beta2).", check=_betas)
    weight_decay: float = _field(0.0, "L2 weight decay.", check=_non_negative)
    grad_clip: float | None = _field(
        None, "Clip the gradient norm to this; null: no clipping.", check=_positive
    )
    lr_decay: float = _field(1.0, "Multiplicative learning-rate decay per epoch.", check=_positive)


@dataclass(kw_only=True)
class OptimConfig:
    """One optimiser for the prior EBM, one for the generator (and one for an inference model)."""

    prior: AdamConfig = _field(
        doc="Optimiser of the prior EBM.",
        factory=lambda: AdamConfig(lr=1e-4, betas=(0.5, 0.999)),
    )
    generator: AdamConfig = _field(
        doc="Optimiser of the generator.",
        factory=lambda: AdamConfig(lr=1e-3, betas=(0.9, 0.999), grad_clip=5.0),
    )
    inference: AdamConfig = _field(
        doc="Optimiser of the inference model (used only with model.inference).",
        factory=lambda: AdamConfig(lr=1e-3, betas=(0.9, 0.999), grad_clip=5.0),
    )


@dataclass(kw_only=True)
class TimeBudgetConfig:
    """A training budget in time and checkpoints by time (every trainer has these)."""

    max_minutes: float | None = _field(
        None,
        "Also stop (with a checkpoint) once this many minutes of training have been spent, "
        "summed over resumed segments: a fixed compute budget; null: no limit. The run stops "
        "early enough for its final validation and end-of-run samples to fit in the budget "
        "(priced from the measured seconds per step and per validation batch, at most half "
        "the budget; a final validation that still does not fit runs only its first batches, "
        "logged with valid_partial_batches).",
        check=_positive,
    )
    clock: Literal["wall", "cpu"] = _field(
        "wall",
        "What max_minutes and checkpoint_every_minutes count: wall-clock time, or the CPU time "
        "of the training process (all its threads; time.process_time), which other jobs on the "
        "machine barely change: the clock for equal-CPU-budget comparisons.",
    )
    checkpoint_every_minutes: float | None = _field(
        None,
        "Also save a checkpoint each time the training time (clock, summed over resumes) "
        "passes a multiple of this many minutes: quality against compute from one run; null: off.",
        check=_positive,
    )


@dataclass(kw_only=True)
class TrainerConfig(TimeBudgetConfig):
    """Training loop, validation, checkpointing and logging."""

    max_steps: int = _field(40000, "Total number of training steps.", check=_positive)
    batch_size: int = _field(
        32, "Training batch size per process (torchrun: times the process count).", check=_positive
    )
    log_every: int = _field(10, "Log training metrics every this many steps.", check=_positive)
    log_every_minutes: float | None = _field(
        None,
        "Also log them once this many minutes have passed since the last row (slow steps: "
        "long documents, a CPU), so a run is never silent for long; null: by steps only. "
        "Rows then fall at times, not steps: a resumed run's rows differ from an "
        "uninterrupted one's.",
        check=_positive,
    )
    valid_every: int = _field(1000, "Run validation every this many steps.", check=_positive)
    valid_batches: int | None = _field(
        20, "Validation batches per run; null: whole valid split.", check=_positive
    )
    checkpoint_every: int = _field(
        1000, "Save a checkpoint every this many steps.", check=_positive
    )
    keep_checkpoints: int = _field(
        3, "Number of most recent checkpoints kept; 0: keep all.", check=_non_negative
    )
    run_dir: str | None = _field(
        None, "Run directory; null: <runs_root>/<name>/<timestamp>.", path=True
    )
    runs_root: str = _field("runs", "Parent directory of default run directories.", path=True)
    resume: str | None = _field(
        None,
        "Resume from: null (fresh run), auto (newest checkpoint of trainer.run_dir if set, else "
        "of the newest run of this recipe; a fresh run if none), or a checkpoint file or run "
        "directory.",
        path=True,
    )
    init_from: str | None = _field(
        None,
        "A new run starts from this model's weights: a run directory, checkpoint file, "
        "exported folder, pretrained:NAME or hf:OWNER/REPO (the parts in init_parts; the step, "
        "optimisers and chains start anew; when the generator or inference model is copied, "
        "the source's tokenizer is used too). A resumed run ignores it.",
    )
    init_parts: list[Literal["prior", "generator", "inference"]] | None = _field(
        None,
        "The parts init_from copies, e.g. [generator]; null: every part this model has that "
        "the source has weights for.",
    )
    freeze: list[Literal["prior", "generator", "inference"]] = _field(
        doc="Parts whose parameters are never updated, e.g. [generator]: learn the prior (eq. 10) "
        "from the posterior samples of a given generator (with init_from).",
        factory=list,
    )
    nonfinite: Literal["stop", "skip"] = _field(
        "stop", "On a non-finite loss: stop training, or skip the batch."
    )
    samples_at_end: int = _field(
        10, "Number of samples written at the end of training.", check=_non_negative
    )
    sample_decode: Literal["greedy", "sample"] = _field(
        "greedy", "Decoding of the samples written at the end: greedy, or sampled."
    )
    sample_temperature: float = _field(
        1.0, "Softmax temperature when sample_decode is sample.", check=_positive
    )
    tensorboard: bool = _field(True, "Write TensorBoard event files.")
    progress: bool = _field(True, "Show a progress bar.")


@dataclass(kw_only=True)
class AnomalyConfig:
    """Anomaly detection (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
    Energy-Based Prior Model", Section 3.4; the MEG/BiGAN protocol of Table 4): one class is held
    out as anomalous, the model trains on part of the others."""

    digit: int = _field(
        doc="The held-out (anomalous) class, e.g. an MNIST digit 0-9.", check=_digit
    )
    train_fraction: float = _field(
        0.8,
        "Fraction of the normal images (shuffled with split_seed) used for training; the rest "
        "and all anomalous images form the test split.",
        check=_open_unit,
    )
    split_seed: int = _field(0, "Seed of the shuffle that splits the normal images.", check=_seed)


@dataclass(kw_only=True)
class Recipe:
    """A complete training recipe."""

    family: Literal["latent"] = _field(
        "latent",
        "latent: this schema (a latent-space EBM prior model); a recipe with family: shortrun "
        "is the data-space short-run EBM (latentebm.shortrun) and has its own keys.",
    )
    name: str | None = _field(None, "Recipe name; defaults to the recipe file's stem.")
    seed: int = _field(0, "Random seed, 0 .. 2**32 - 1.", check=_seed)
    device: str = _field("auto", "auto | cpu | cuda | cuda:N | mps.", check=_device)
    data: DataConfig = _field(doc="Data location.", factory=DataConfig)
    task: ComponentConfig = _field(doc="The task, e.g. _component_: latentebm.tasks.text.TextTask.")
    model: ModelConfig = _field(doc="The model.")
    optim: OptimConfig = _field(doc="The optimisers.", factory=OptimConfig)
    trainer: TrainerConfig = _field(doc="The training loop.", factory=TrainerConfig)
    anomaly: AnomalyConfig | None = _field(
        None,
        "Anomaly-detection split (passed to the task as anomaly_digit, anomaly_train_fraction, "
        "anomaly_split_seed); null: the task's ordinary splits.",
    )


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")

DELETE_PREFIX = "~"
"""A command-line item ``~section.key`` deletes that key from the recipe (Hydra's syntax)."""


def _parse_key_path(item: str, key: str) -> tuple[str, ...]:
    """The parts of the dotted key path ``key`` of override ``item``."""
    parts = tuple(p.strip() for p in key.strip().split("."))
    if not all(_KEY_RE.fullmatch(p) for p in parts):
        raise RecipeError(f"{COMMAND_LINE}: {item}: invalid key path {key.strip()!r}")
    return parts


def _parse_override(item: Any) -> tuple[tuple[str, ...], Any]:
    if not isinstance(item, str):
        raise RecipeError(f"{COMMAND_LINE}: {item!r}: expected a 'key.path=value' string")
    if "=" not in item:
        raise RecipeError(
            f"{COMMAND_LINE}: {item}: expected key.path=value (no '=' found) or "
            f"{DELETE_PREFIX}key.path"
        )
    key, _, raw = item.partition("=")
    parts = _parse_key_path(item, key)
    try:
        value = _load_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
        raise RecipeError(
            f"{COMMAND_LINE}: {item}: cannot parse value {_short_repr(raw)} as YAML ({problem})"
        ) from None
    return parts, value


def _is_deletion(item: Any) -> bool:
    return isinstance(item, str) and item.lstrip().startswith(DELETE_PREFIX)


def _parse_deletion(item: str) -> tuple[str, ...]:
    """The key path of a ``~key.path`` item."""
    key = item.lstrip()[len(DELETE_PREFIX) :]
    if "=" in key:
        raise RecipeError(
            f"{COMMAND_LINE}: {item}: a deletion takes no value (write "
            f"{DELETE_PREFIX}{key.partition('=')[0].strip()} to delete the key, or key=value "
            "to set it)"
        )
    return _parse_key_path(item, key)


def _delete_key(
    data: dict[str, Any], parts: tuple[str, ...], item: str, deleted: Mapping[tuple[str, ...], str]
) -> None:
    """Remove the key ``parts`` from ``data`` (a deep copy of the recipe) in place.

    Raises:
        RecipeError: naming ``item`` when the key (or a section on the way) is not in ``data``,
            with the keys there and a did-you-mean, or when a section on the way is not a
            mapping.
    """
    node = data
    for i, key in enumerate(parts):
        if key not in node:
            here = parts[:i]
            where = f"in '{_format_path(here)}'" if here else "at the top level"
            earlier = next((d for p, d in deleted.items() if parts[: len(p)] == p), None)
            if earlier is not None:
                raise RecipeError(
                    f"{COMMAND_LINE}: {item}: nothing to delete, '{earlier}' already deleted it"
                )
            known = sorted(str(k) for k in node)
            shown = ", ".join(known) if known else "none"
            raise RecipeError(
                f"{COMMAND_LINE}: {item}: cannot delete '{_format_path(parts)}': the recipe has "
                f"no key '{key}' {where} (keys there: {shown})" + _did_you_mean(key, known)
            )
        if i == len(parts) - 1:
            del node[key]
            return
        child = node[key]
        if not isinstance(child, dict):
            section = _format_path(parts[: i + 1])
            raise RecipeError(
                f"{COMMAND_LINE}: {item}: cannot delete a key inside '{section}', which is "
                f"{_describe(child)}, not a section"
            )
        node = child


def _apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str]
) -> tuple[
    dict[str, Any],
    dict[tuple[str, ...], str],
    dict[tuple[str, ...], str],
    dict[tuple[str, ...], str],
]:
    """Apply overrides: first every ``~key.path`` deletion (in command-line order), then every
    ``key.path=value`` item (in command-line order), wherever the deletions stand.

    Returns the new mapping, the key paths the overrides set (-> item), the sections that
    overrides created because they were missing (-> first item that created them) and the key
    paths that deletions removed (-> item).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    out: dict[str, Any] = copy.deepcopy(dict(data))
    origins: dict[tuple[str, ...], str] = {}
    created: dict[tuple[str, ...], str] = {}
    deleted: dict[tuple[str, ...], str] = {}
    for item in overrides:
        if _is_deletion(item):
            parts = _parse_deletion(item)
            _delete_key(out, parts, item, deleted)
            deleted[parts] = item
    for item in overrides:
        if _is_deletion(item):
            continue
        parts, value = _parse_override(item)
        node = out
        for i, key in enumerate(parts[:-1]):
            child = node.get(key)
            if child is None:
                child = {}
                created.setdefault(parts[: i + 1], item)
            elif isinstance(child, Mapping):
                child = dict(child)
            else:
                section = ".".join(parts[: i + 1])
                raise RecipeError(
                    f"{COMMAND_LINE}: {item}: cannot set a key inside '{section}', which is "
                    f"{_describe(child)}, not a section"
                )
            node[key] = child
            node = child
        node[parts[-1]] = value
        for old in [p for p in origins if p[: len(parts)] == parts]:
            del origins[old]
        for old in [p for p in created if p[: len(parts)] == parts]:
            del created[old]
        for old in [p for p in deleted if p[: len(parts)] == parts]:
            del deleted[old]
        origins[parts] = item
    return out, origins, created, deleted


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with the command-line overrides applied (``data`` is unchanged).

    ``a.b.c=value`` sets a key: values are parsed with ``yaml.safe_load`` (``5``, ``1e-3``,
    ``true``, ``null``, ``[200,200]``); missing sections on the way are created. ``~a.b.c``
    deletes a key (or a whole section) of ``data``, so that it takes its default or can be
    rebuilt from scratch by later items; all deletions are applied before any ``key=value``
    item, whatever their order. Raises RecipeError for an item without ``=``, a bad key path,
    an unparsable value, a key set inside a non-mapping value, or a deletion of a key that
    ``data`` does not have.
    """
    return _apply_overrides(data, overrides)[0]


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


class _YAMLSizeError(yaml.YAMLError):
    """A YAML document too big or too deep once its aliases are expanded (one line)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (PyYAML keeps the last silently) and
    documents that expand beyond :data:`MAX_YAML_VALUES` values or :data:`MAX_YAML_DEPTH` levels
    through aliases (a "billion laughs" of nested ``&a [*b, *b, ...]``), or that refer to
    themselves. The check runs on the composed nodes, before anything is constructed."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {_short_repr(key)}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root: yaml.Node) -> None:
    """Raise _YAMLSizeError when ``root`` expanded (each alias as a copy of its anchor's value)
    has more than MAX_YAML_VALUES nodes, is deeper than MAX_YAML_DEPTH or contains itself.

    Shared nodes are counted once per use but visited once (memoised), so the check costs the
    size of the file, not of the expansion.
    """
    measured: dict[int, tuple[int, int]] = {}  # node -> (expanded size, height below it)
    visiting: set[int] = set()

    def too_deep(node: yaml.Node) -> _YAMLSizeError:
        """The error for ``node`` expanding past MAX_YAML_DEPTH."""
        return _YAMLSizeError(
            f"line {node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep"
        )

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        """``node``'s expanded size and height, used at ``depth``; raises when too big."""
        key = id(node)
        if key in measured:  # a shared node: its expansion counts again, at this depth
            total, height = measured[key]
            if depth + height > MAX_YAML_DEPTH:
                raise too_deep(node)
            return total, height
        if key in visiting:
            raise _YAMLSizeError(f"line {node.start_mark.line + 1}: an alias refers to itself")
        if depth > MAX_YAML_DEPTH:
            raise too_deep(node)
        total, height = 1, 0
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            visiting.add(key)
            children: list[yaml.Node] = []
            for item in node.value:
                children.extend(item if isinstance(item, tuple) else (item,))
            for child in children:
                child_total, child_height = measure(child, depth + 1)
                total += child_total
                height = max(height, child_height + 1)
                if total > MAX_YAML_VALUES:
                    raise _YAMLSizeError(
                        f"expands to more than {MAX_YAML_VALUES} values through aliases "
                        "(write the values out, or use fewer aliases)"
                    )
            visiting.discard(key)
        measured[key] = (total, height)
        return total, height

    measure(root, 0)


def _load_yaml(text: str) -> Any:
    """``text`` parsed with the recipe loader (safe, unique keys, bounded expansion).

    Raises yaml.YAMLError (a too-deep document included: the composer's RecursionError)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _YAMLSizeError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _YAMLSizeError(f"{type(exc).__name__}: {exc}") from None


def read_yaml(path: Path, source: str) -> dict[str, Any]:
    """The top-level mapping of a YAML recipe file.

    Raises:
        RecipeError: naming ``source`` for a file that cannot be read, invalid YAML, duplicate
            keys, aliases that expand beyond MAX_YAML_VALUES values, or a top level that is not a
            mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{source}: recipe file not found") from None
    except IsADirectoryError:
        raise RecipeError(f"{source}: is a directory, not a recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{source}: cannot read recipe ({type(exc).__name__}: {exc})") from None
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = exc.problem or "syntax error"
        if exc.context:
            what += f" ({exc.context})"
        raise RecipeError(f"{source}: {where}invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: invalid YAML: {exc}") from None
    if data is None:
        raise RecipeError(f"{source}: recipe is empty (expected a mapping of recipe keys)")
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}: top level must be a mapping of recipe keys, got {_describe(data)}"
        )
    return data


def _load(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> tuple[T, _Context]:
    source = str(path)
    data = read_yaml(Path(path), source)
    merged, origins, created, deleted = _apply_overrides(data, overrides)
    # a file the user runs: any module
    ctx = _Context(source, origins, created, deleted, trusted=None)
    result: T = _convert(cls, merged, (), ctx)
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


def _check_recipe(recipe: Recipe, ctx: _Context) -> None:
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


def _check_chain_init(recipe: Recipe, ctx: _Context) -> None:
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


def _check_anomaly(recipe: Recipe, ctx: _Context) -> None:
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
    return _to_plain(recipe)


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
    ctx = _Context(source, trusted=trusted)
    recipe: Recipe = _convert(Recipe, data, (), ctx)
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


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing flat lists inline (``betas: [0.5, 0.999]``) and sections as blocks."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    flat = all(isinstance(x, bool | int | float | str) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def recipe_to_yaml(recipe: Any) -> str:
    """The recipe (a :class:`Recipe`, or another family's recipe dataclass such as
    ``ShortRunRecipe``) as YAML text, keys in schema order."""
    return yaml.dump(
        _to_plain(recipe),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the recipe as YAML to ``path`` (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_to_yaml(recipe), encoding="utf-8")


def describe_keys(
    cls: type = Recipe,
    prefix: str = "",
    defaults: Any = None,
    components: Mapping[str, tuple[str, type]] | None = None,
) -> list[tuple[str, str, str, str]]:
    """``(key path, type, default, doc)`` for every key of the recipe schema, depth first.

    A component section (task, generator, inference) lists ``_component_``, then, when
    ``components`` maps its key path to ``(dotted class path, the class's Config)``, the keys
    of that ``Config`` (their documentation: the field's ``doc``, else the first sentence of
    the attribute docstring below it).
    """
    rows: list[tuple[str, str, str, str]] = []
    hints = _hints(cls)
    attribute_docs = _attribute_docs(cls)
    components = components or {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        doc = f.metadata.get("doc", "") or attribute_docs.get(f.name, "")
        if defaults is not None:
            default: Any = getattr(defaults, f.name)
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        if key in components:
            path, config_cls = components[key]
            rows.append((f"{key}._component_", "dotted path", path, doc))
            rows.extend(describe_keys(config_cls, f"{key}."))
        elif tp is ComponentConfig:
            rows.append((f"{key}._component_", "dotted path", "(required)", doc))
        elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
            rows.append((key, "section", "", doc))
            rows.extend(
                describe_keys(tp, f"{key}.", None if default is MISSING else default, components)
            )
        else:
            shown = "(required)" if default is MISSING else _describe_default(default)
            rows.append((key, _type_name(tp), shown, doc))
    return rows


def recipe_components(recipe: Recipe) -> dict[str, tuple[str, type]]:
    """Key path -> ``(class path, Config class)`` of every component section of a loaded recipe
    (for :func:`describe_keys`)."""
    found = {"task": recipe.task, "model.generator": recipe.model.generator}
    if recipe.model.inference is not None:
        found["model.inference"] = recipe.model.inference
    if recipe.model.prior.energy is not None:
        found["model.prior.energy"] = recipe.model.prior.energy
    return {key: (section.component, type(section.args)) for key, section in found.items()}


_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z])")
"""Where a docstring's first sentence ends: a full stop, space, capital (not ``et al. 2020``)."""


@cache
def _attribute_docs(cls: type) -> dict[str, str]:
    """The first sentence of the docstring below each field of the class ``cls`` (PEP 257's
    attribute docstrings), read from its source; ``{}`` where the source is unavailable."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for statement, following in zip(body, body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            text = " ".join(following.value.value.split())
            docs[statement.target.id] = _SENTENCE_END.split(text, maxsplit=1)[0]
    return docs


def _describe_default(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(_to_plain(value), default_flow_style=True).strip()
    return text.removesuffix("...").strip()
