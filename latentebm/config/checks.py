"""Value checks of recipe fields, attached to dataclass fields through their metadata.

Contract: a check takes the converted value and returns ``None`` when it is fine, else a
short problem (``must be > 0, got -1``) that validation prefixes with the key's source and
path; :func:`checked_field` declares a field with its documentation and check, and
:func:`check_fields` runs the checks of a dataclass built in Python (a component ``Config``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import MISSING, field
from typing import Any

from latentebm.config.errors import short_repr

Check = Callable[[Any], "str | None"]


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be > 0, got {value!r}"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be >= 0, got {value!r}"


def probability(value: float) -> str | None:
    return None if 0.0 <= value <= 1.0 else f"must be in [0, 1], got {value!r}"


def rate(value: float) -> str | None:
    """A dropout rate: ``[0, 1)``."""
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value!r}"


def check_fields(obj: Any) -> None:
    """Run the value ``check`` of every field of dataclass instance ``obj`` (see ``checked_field``).

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


def each_positive(values: Sequence[float]) -> str | None:
    for i, value in enumerate(values):
        if not value > 0:
            return f"entries must be > 0, got {value!r} at index {i}"
    return None


def each_rate(values: Sequence[float]) -> str | None:
    for i, value in enumerate(values):
        if not 0.0 <= value < 1.0:
            return f"entries must be in [0, 1), got {value!r} at index {i}"
    return None


_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


SEED_LIMIT = 2**32
"""Seeds are in ``0 .. 2**32 - 1``: what every random generator a run seeds accepts (NumPy's
legacy ``np.random.seed`` takes no more), with room for the derived per-process seeds."""


def seed_value(value: int) -> str | None:
    if 0 <= value < SEED_LIMIT:
        return None
    return f"must be in 0..{SEED_LIMIT - 1} (2**32 - 1), got {short_repr(value)}"


def digit_label(value: int) -> str | None:
    return None if 0 <= value <= 9 else "must be a class label in 0..9"


def open_unit(value: float) -> str | None:
    return None if 0.0 < value < 1.0 else "must be in (0, 1)"


def device_name(value: str) -> str | None:
    if _DEVICE_RE.fullmatch(value):
        return None
    return f"expected auto, cpu, cuda, cuda:N or mps, got {value!r}"


def checked_field(
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
