"""Typed conversion: recipe data (YAML mappings, lists, scalars) checked and converted into
dataclasses by their annotations, and dataclasses turned back into plain data.

Contract: :func:`validate` (and :func:`convert`, for a given :class:`ErrorContext`) either
returns the converted value or raises one :class:`RecipeError` naming the key; a field's
``check`` metadata (see :mod:`latentebm.config.checks`) runs on the converted value, and a
partial section is merged into its field's dataclass default. :func:`to_plain` is the
inverse: nested python primitives only.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING
from functools import cache
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from latentebm.config.components import (
    COMPONENT_KEY,
    ComponentConfig,
    current_component_path,
    import_component,
)
from latentebm.config.errors import (
    ErrorContext,
    RecipeError,
    describe_value,
    did_you_mean,
    format_key_path,
    short_repr,
)

T = TypeVar("T")


_NO = object()  # sentinel: scalar conversion failed
_SCALARS = (bool, int, float, str)


@cache
def cached_type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_scalar_type(tp: Any) -> bool:
    return tp in _SCALARS or get_origin(tp) is Literal


def type_name(tp: Any) -> str:
    """Human name of an annotation for ``expected ...`` messages."""
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return f"one of {list(get_args(tp))!r}"
    if origin is Union or origin is types.UnionType:
        return " or ".join(type_name(a) for a in get_args(tp))
    if tp is ComponentConfig:
        return f"a mapping with a '{COMPONENT_KEY}' key"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in get_args(tp))
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


def convert(tp: Any, value: Any, parts: tuple[str | int, ...], ctx: ErrorContext) -> Any:
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
            raise ctx.error(parts, f"expected {type_name(tp)}, got null")
        if all(_is_scalar_type(m) for m in members):
            raw = ctx.raw_override(parts)
            for member in members:
                result = _convert_scalar(member, value, raw)
                if result is not _NO:
                    return result
            raise ctx.error(parts, f"expected {type_name(tp)}, got {describe_value(value)}")
        if len(members) == 1:
            return convert(members[0], value, parts, ctx)
        for member in members:
            try:
                return convert(member, value, parts, ctx)
            except RecipeError:
                continue
        raise ctx.error(parts, f"expected {type_name(tp)}, got {describe_value(value)}")

    if _is_scalar_type(tp):
        result = _convert_scalar(tp, value, ctx.raw_override(parts))
        if result is _NO:
            raise ctx.error(parts, f"expected {type_name(tp)}, got {describe_value(value)}")
        return result

    if tp is type(None):
        if value is None:
            return None
        raise ctx.error(parts, f"expected null, got {describe_value(value)}")

    if tp is list or origin is list:
        if not isinstance(value, list | tuple):
            raise ctx.error(parts, f"expected {type_name(tp)}, got {describe_value(value)}")
        (item_tp,) = get_args(tp) or (Any,)
        return [convert(item_tp, item, (*parts, i), ctx) for i, item in enumerate(value)]

    if tp is tuple or origin is tuple:
        if not isinstance(value, list | tuple):
            raise ctx.error(
                parts, f"expected {type_name(tp)} (a list), got {describe_value(value)}"
            )
        args = get_args(tp)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(convert(item_tp, item, (*parts, i), ctx) for i, item in enumerate(value))
        if len(value) != len(args):
            raise ctx.error(
                parts,
                f"expected a list of {len(args)} entries, got {len(value)}: {short_repr(value)}",
            )
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(convert(a, item, (*parts, i), ctx) for i, (a, item) in pairs)

    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ctx.error(parts, f"expected a mapping, got {describe_value(value)}")
        key_tp, value_tp = get_args(tp) or (Any, Any)
        out: dict[Any, Any] = {}
        for key, item in value.items():
            item_parts = (*parts, str(key))
            out[convert(key_tp, key, item_parts, ctx)] = convert(value_tp, item, item_parts, ctx)
        return out

    if tp is ComponentConfig:
        return _convert_component(value, parts, ctx)

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, parts, ctx)

    raise TypeError(f"unsupported annotation {tp!r} for recipe key {format_key_path(parts)!r}")


def _unknown_key_message(key: Any, known: Iterable[str]) -> str:
    known = sorted(known)
    return f"unknown key (known: {', '.join(known)})" + did_you_mean(key, known)


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
    ctx: ErrorContext,
    extra_keys: tuple[str, ...] = (),
) -> T:
    if isinstance(value, cls):
        value = to_plain(value)
    if not isinstance(value, Mapping):
        raise ctx.error(parts, f"expected a mapping (section), got {describe_value(value)}")
    init_fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = {f.name for f in init_fields}
    for key in value:
        if key not in names and key not in extra_keys:
            shown = key if isinstance(key, str) and len(key) <= 60 else short_repr(key)
            # related: a _component_ chosen on the command line makes the file's keys unknown
            raise ctx.error(
                (*parts, shown),
                _unknown_key_message(shown, names | set(extra_keys)),
                related=[(*parts, k) for k in extra_keys],
            )
    hints = cached_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in init_fields:
        key_parts = (*parts, f.name)
        if f.name in value:
            item = value[f.name]
            if isinstance(item, Mapping):
                default = _default_section(f)
                if default is not None:
                    item = _deep_merge(to_plain(default), item)
            converted = convert(hints[f.name], item, key_parts, ctx)
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


def _convert_component(
    value: Any, parts: tuple[str | int, ...], ctx: ErrorContext
) -> ComponentConfig:
    if isinstance(value, ComponentConfig):
        value = to_plain(value)
    if not isinstance(value, Mapping):
        raise ctx.error(
            parts, f"expected a mapping with a '{COMPONENT_KEY}' key, got {describe_value(value)}"
        )
    if COMPONENT_KEY not in value:
        raise ctx.error(parts, f"missing '{COMPONENT_KEY}' key (dotted path of the class to build)")
    target = value[COMPONENT_KEY]
    target_parts = (*parts, COMPONENT_KEY)
    if not isinstance(target, str):
        raise ctx.error(
            target_parts,
            f"expected str (like 'package.module.Class'), got {describe_value(target)}",
        )
    target = current_component_path(target)
    cls = import_component(target, target_parts, ctx)
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
    ctx = ErrorContext(source, origins, trusted=trusted)
    parts: tuple[str | int, ...] = tuple(path.split(".")) if path else ()
    return convert(cls, data, parts, ctx)


def to_plain(obj: Any) -> Any:
    """Nested python primitives: dataclasses -> dicts, tuples -> lists, components -> mappings."""
    if isinstance(obj, ComponentConfig):
        return {COMPONENT_KEY: obj.component, **to_plain(obj.args)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(value) for value in obj]
    return obj
