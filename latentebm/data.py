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
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TextIO

__all__ = [
    "BUILTIN_PREFIX",
    "DATA_ENV",
    "DataFileError",
    "DataFormatError",
    "TextFile",
    "data_root",
    "open_text",
    "resolve_data_path",
]

DATA_ENV = "LATENTEBM_DATA"
BUILTIN_PREFIX = "builtin:"
_BUILTIN_PACKAGE = "latentebm.tasks"

# latentebm/data.py -> parents[0] = latentebm/, parents[1] = repository root.
_REPO_ROOT = Path(__file__).resolve().parents[1]


class DataFileError(FileNotFoundError):
    """A data file named in a recipe could not be found (the message is a single line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataFormatError(ValueError):
    """A data file exists but cannot be read: not gzip, a truncated or corrupt gzip stream, not
    UTF-8 text, or a read error. The message is one line naming the file (and the line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


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


_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _locate_decode_error(path: Path) -> str:
    """``"line N: "`` and the offending byte of the first line of ``path`` that is not UTF-8
    (searched again from the start: a text stream decodes ahead in chunks)."""
    try:
        with _open_binary(path) as raw:
            for number, line in enumerate(raw, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = line[exc.start : exc.start + 1].hex()
                    return f"line {number}: byte 0x{bad} at column {exc.start + 1}"
    except (OSError, EOFError, zlib.error):
        pass
    return ""


def _read_error(path: Path, exc: BaseException) -> DataFormatError:
    """The one-line error for a failure while reading the text file ``path``."""
    gz = path.suffix == ".gz"
    if isinstance(exc, UnicodeDecodeError):
        where = _locate_decode_error(path)
        hint = "; convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        if not gz:
            try:
                with open(path, "rb") as raw:
                    if raw.read(2) == _GZIP_MAGIC:
                        hint = "; it is gzip-compressed: name it with a .gz suffix"
            except OSError:
                pass
        detail = where or str(exc)
        return DataFormatError(f"{path}: not UTF-8 text ({detail}){hint}")
    if gz and isinstance(exc, EOFError):
        return DataFormatError(f"{path}: truncated gzip file ({exc})")
    if gz and isinstance(exc, gzip.BadGzipFile) and str(exc).startswith("Not a gzipped file"):
        return DataFormatError(f"{path}: not a valid gzip file ({exc})")
    if gz and isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return DataFormatError(f"{path}: corrupt gzip file ({exc})")
    return DataFormatError(f"{path}: cannot read ({exc})")


_READ_ERRORS = (UnicodeDecodeError, EOFError, zlib.error, OSError)


class TextFile:
    """A data file open as UTF-8 text (see :func:`open_text`): iterate over its lines, or
    ``read``/``readline``, in a ``with`` block. Any failure to read or decode becomes a
    :class:`DataFormatError` naming the file, and the line for text that is not UTF-8."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO
        if path.suffix == ".gz":
            self._handle = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115 - see close()
        else:
            self._handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by close()

    def _checked(self, read: Callable[[], str]) -> str:
        try:
            return read()
        except _READ_ERRORS as exc:
            raise _read_error(self.path, exc) from exc

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._handle)
        except _READ_ERRORS as exc:
            raise _read_error(self.path, exc) from exc

    def read(self, size: int = -1) -> str:
        """Up to ``size`` characters (all with ``-1``)."""
        return self._checked(lambda: self._handle.read(size))

    def readline(self) -> str:
        """The next line with its newline (``""`` at the end)."""
        return self._checked(self._handle.readline)

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> TextFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_text(path: str | os.PathLike[str]) -> TextFile:
    """Open a ``.txt`` (or any plain) file, or a gzip-compressed ``.gz`` file, as UTF-8 text.

    Reading a file that is not valid gzip (for ``.gz``), a truncated or corrupt gzip stream,
    or bytes that are not UTF-8 raises :class:`DataFormatError` (a ``ValueError``) with one
    line naming the file, e.g. ``data/ptb/train.txt.gz: truncated gzip file (...)`` or
    ``data/x.txt: not UTF-8 text (line 6: byte 0xe9 at column 24); ...``.
    """
    return TextFile(Path(path))
