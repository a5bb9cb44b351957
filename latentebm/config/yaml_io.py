"""YAML reading and writing: the safe recipe loader, its limits, and recipes as YAML text.

Contract: :func:`load_yaml` parses with a SafeLoader that rejects duplicate keys and
documents expanding (through aliases) past :data:`MAX_YAML_VALUES` values or
:data:`MAX_YAML_DEPTH` levels, raising only ``yaml.YAMLError``; :func:`read_yaml` turns every
problem with a recipe file into one :class:`RecipeError`; :func:`recipe_to_yaml` writes keys
in schema order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from latentebm.config.errors import RecipeError, describe_value, short_repr
from latentebm.config.typed import to_plain

MAX_YAML_VALUES = 100_000
"""Most values (scalars, lists, mappings) a YAML recipe may hold with its aliases expanded."""

MAX_YAML_DEPTH = 50
"""Deepest nesting of lists and mappings a YAML recipe may have."""


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
                    f"found duplicate key {short_repr(key)}",
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


def load_yaml(text: str) -> Any:
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
        data = load_yaml(text)
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
            f"{source}: top level must be a mapping of recipe keys, got {describe_value(data)}"
        )
    return data


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
        to_plain(recipe),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )
