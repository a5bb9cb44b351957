"""Command-line overrides: ``section.key=value`` items and ``~section.key`` deletions.

Contract: all deletions apply before any ``key=value`` item, each in command-line order;
values are parsed as YAML with the recipe loader; every bad item is one :class:`RecipeError`
naming ``command line`` and the item. :func:`apply_overrides_with_origins` also reports which
item set, created or deleted each key path, for the error messages of validation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from latentebm.config.errors import (
    COMMAND_LINE,
    RecipeError,
    describe_value,
    did_you_mean,
    format_key_path,
    short_repr,
)
from latentebm.config.yaml_io import load_yaml

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
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
        raise RecipeError(
            f"{COMMAND_LINE}: {item}: cannot parse value {short_repr(raw)} as YAML ({problem})"
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
            where = f"in '{format_key_path(here)}'" if here else "at the top level"
            earlier = next((d for p, d in deleted.items() if parts[: len(p)] == p), None)
            if earlier is not None:
                raise RecipeError(
                    f"{COMMAND_LINE}: {item}: nothing to delete, '{earlier}' already deleted it"
                )
            known = sorted(str(k) for k in node)
            shown = ", ".join(known) if known else "none"
            raise RecipeError(
                f"{COMMAND_LINE}: {item}: cannot delete '{format_key_path(parts)}': the recipe has "
                f"no key '{key}' {where} (keys there: {shown})" + did_you_mean(key, known)
            )
        if i == len(parts) - 1:
            del node[key]
            return
        child = node[key]
        if not isinstance(child, dict):
            section = format_key_path(parts[: i + 1])
            raise RecipeError(
                f"{COMMAND_LINE}: {item}: cannot delete a key inside '{section}', which is "
                f"{describe_value(child)}, not a section"
            )
        node = child


def apply_overrides_with_origins(
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
                    f"{describe_value(child)}, not a section"
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
    return apply_overrides_with_origins(data, overrides)[0]
