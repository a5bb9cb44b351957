"""Task-agnostic helpers for locating and opening data files.

Data files named in recipes are resolved relative to a *data root*: an explicit value (the
recipe's ``data.root`` or a command-line flag), else the ``LATENTEBM_DATA`` environment variable.
Names may also be absolute paths, or ``builtin:FILE`` for small demo files shipped as package
data in ``tasks/data/``.

This module must not import ``tasks`` at import time; builtin files are located lazily.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from pathlib import Path
from typing import TextIO

__all__ = [
    "BUILTIN_PREFIX",
    "DATA_ENV",
    "DataFileError",
    "data_root",
    "open_text",
    "resolve_data_path",
]

DATA_ENV = "LATENTEBM_DATA"
BUILTIN_PREFIX = "builtin:"
_BUILTIN_PACKAGE = "tasks"

# latentebm/data.py -> parents[0] = latentebm/, parents[1] = repository root.
_REPO_ROOT = Path(__file__).resolve().parents[1]


class DataFileError(FileNotFoundError):
    """A data file named in a recipe could not be found (the message is a single line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def data_root(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Return the data root: ``explicit`` if given, else ``$LATENTEBM_DATA``, else ``None``.

    Empty strings count as unset. ``~`` is expanded.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return None


_NEEDS_SOURCE = frozenset({"yahoo", "celeba"})
"""Data scripts that cannot download (no authoritative URL): the user supplies a copy."""


def _script_hint(name_parts: tuple[str, ...], root: Path | None) -> str:
    """Return ``"; get it with: python data_scripts/X.py --out ROOT/X"`` if such a script exists."""
    if len(name_parts) < 2:
        return ""
    first = name_parts[0]
    script = _REPO_ROOT / "data_scripts" / f"{first}.py"
    if not script.is_file():
        return ""
    out = f"{root}/{first}" if root is not None else f"<data root>/{first}"
    source = " --source LOCAL_COPY" if first in _NEEDS_SOURCE else ""
    return f"; get it with: python data_scripts/{first}.py --out {out}{source}"


def _resolve_builtin(name: str) -> Path:
    file = name[len(BUILTIN_PREFIX) :]
    if not file or Path(file).is_absolute() or ".." in Path(file).parts:
        raise DataFileError(f"invalid builtin data name {name!r}: expected builtin:FILE")
    try:
        base = importlib.resources.files(_BUILTIN_PACKAGE) / "data"
    except ModuleNotFoundError as exc:
        raise DataFileError(
            f"builtin data file {file!r} needs the {_BUILTIN_PACKAGE!r} package, "
            f"which is not importable ({exc})"
        ) from exc
    resource = base / file
    if not isinstance(resource, Path):
        # Zipped installs are not supported: the trainer needs a real file path.
        raise DataFileError(
            f"builtin data file {file!r} is not on the file system ({resource}); "
            "install the package unzipped"
        )
    if not resource.is_file():
        raise DataFileError(f"builtin data file {file!r} not found in {resource.parent}")
    return resource


def resolve_data_path(name: str, root: str | os.PathLike[str] | None) -> Path:
    """Resolve a data file name from a recipe to an existing path.

    Args:
        name: a path relative to the data root (e.g. ``ptb/ptb.train.txt.gz``), an absolute path,
            or ``builtin:FILE`` for a file shipped in ``tasks/data/``.
        root: explicit data root (falls back to ``$LATENTEBM_DATA``, see :func:`data_root`).

    Returns:
        The path of the existing file.

    Raises:
        DataFileError: the file does not exist or a relative name has no data root to resolve
            against. The message names the file and the root, and says how to obtain the data.
    """
    if name.startswith(BUILTIN_PREFIX):
        return _resolve_builtin(name)

    base = data_root(root)
    path = Path(name).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path
        parts: tuple[str, ...] = ()
        if base is not None:
            try:
                parts = path.relative_to(base).parts
            except ValueError:
                parts = ()
        hint = _script_hint(parts, base)
        raise DataFileError(f"data file not found: {path}{hint}")

    if base is None:
        hint = _script_hint(path.parts, None)
        raise DataFileError(
            f"data file {name!r} is relative but no data root is set: "
            f"set {DATA_ENV} or data.root{hint}"
        )
    full = base / path
    if full.is_file():
        return full
    hint = _script_hint(path.parts, base)
    raise DataFileError(
        f"data file {name!r} not found under data root {base} (looked for {full}): "
        f"set {DATA_ENV} or data.root to the directory holding it{hint}"
    )


def open_text(path: str | os.PathLike[str]) -> TextIO:
    """Open a ``.txt`` (or any plain) file, or a gzip-compressed ``.gz`` file, as UTF-8 text."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8")
    return open(p, encoding="utf-8")
