"""Recipe errors: the one error type, the context that names where a bad key came from, and
the helpers that format values and key paths for one-line messages.

Contract: every problem in a recipe is one :class:`RecipeError` whose message is a single line
naming the source (a file, ``checkpoint``, or ``command line`` plus the override item) and the
dotted key path; :class:`ErrorContext` builds those messages.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

COMMAND_LINE = "command line"
"""Source name used in error messages for keys that came from command-line overrides."""


class RecipeError(ValueError):
    """The single error type of recipe loading and validation; its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to at most 60 characters, built without walking all of ``value``
    (a list of a million entries costs as little as a short one)."""
    text = _SHORT_REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def describe_value(value: Any) -> str:
    """Short one-line description of a value for error messages: ``str 'abc'``, ``null``."""
    if value is None:
        return "null"
    return f"{type(value).__name__} {short_repr(value)}"


def format_key_path(parts: Sequence[str | int]) -> str:
    """``("model", "prior", "hidden_dims", 1)`` -> ``model.prior.hidden_dims[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def did_you_mean(key: Any, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``key``, or ``""``."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass
class ErrorContext:
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
            return RecipeError(
                f"{COMMAND_LINE}: {format_key_path(parts)} (from '{item}'): {message}"
            )
        created = self.created_by(parts)
        if created is not None:
            section, item = created
            deletion = self.deleted_section(section)
            if deletion is not None:
                why = f"'{deletion}' deleted the section '{format_key_path(section)}'"
            else:
                why = f"the section '{format_key_path(section)}' is not in {self.source}"
            return RecipeError(
                f"{COMMAND_LINE}: {item}: {format_key_path(parts)}: {message} ({why}; this "
                "override creates it)"
            )
        exact = tuple(parts)
        if exact in self.deleted:
            return RecipeError(f"{COMMAND_LINE}: {self.deleted[exact]}: {message}")
        where = f"{self.source}: {format_key_path(parts)}" if parts else self.source
        items = [i for path in related for i in self.overrides_within(path)]
        n = len(parts)
        items += [i for key, i in self.deleted.items() if key[:n] == exact]
        if items:
            shown = ", ".join(f"'{i}'" for i in dict.fromkeys(items))
            return RecipeError(f"{where}: {message} (with the command-line override {shown})")
        return RecipeError(f"{where}: {message}")
