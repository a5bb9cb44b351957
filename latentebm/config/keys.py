"""The recipe keys listing (``latentebm keys``): every key of a schema with its type, default
and documentation.

Contract: :func:`describe_keys` walks a schema dataclass depth first; a key's documentation is
its field's ``doc``, else the first sentence of the attribute docstring below it.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Mapping
from dataclasses import MISSING
from functools import cache
from typing import Any

import yaml

from latentebm.config.components import ComponentConfig
from latentebm.config.schema import Recipe
from latentebm.config.typed import cached_type_hints, to_plain, type_name


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
    hints = cached_type_hints(cls)
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
            rows.append((key, type_name(tp), shown, doc))
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
    text = yaml.safe_dump(to_plain(value), default_flow_style=True).strip()
    return text.removesuffix("...").strip()
