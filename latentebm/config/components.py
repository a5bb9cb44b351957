"""Component sections: a recipe section naming a class with ``_component_``, building it, and
the trust check on which modules a recipe may import.

Contract: :class:`ComponentConfig` holds the dotted class path and the validated ``Config``;
:func:`import_component` checks the module name against :func:`trusted_module_prefixes` (the
toolkit's packages, ``LATENTEBM_TRUSTED_MODULES`` and the context's own prefixes) before
anything is imported, unless the recipe is a file the user runs (trusted like a script).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latentebm.config.errors import ErrorContext, RecipeError, describe_value

COMPONENT_KEY = "_component_"
"""Key of a component section that holds the dotted path of the class to build."""


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
        return import_component(
            self.component, (COMPONENT_KEY,), ErrorContext("component", trusted=None)
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


def import_component(target: str, parts: Sequence[str | int], ctx: ErrorContext) -> type:
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
        raise ctx.error(parts, f"{target!r} is {describe_value(obj)}, not a class")
    return obj
