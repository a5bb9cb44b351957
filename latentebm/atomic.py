"""Atomic, durable file writes shared by every writer of results, caches and checkpoints.

:func:`atomic_write` gives a handle on a temporary file in the destination's folder; when the
``with`` block ends without an error the bytes are flushed and ``fsync``-ed, the file gets its
permissions, is renamed over the destination (``os.replace``) and the folder is ``fsync``-ed.
A reader, or a machine that loses power, sees the old file or the new one, never a mixture or
a truncated file. When the block raises, the temporary file is removed and the destination is
untouched.

Permissions: a file that already exists keeps its mode; a new file gets the mode an ordinary
``open(path, "w")`` would give it (``0o666`` less the umask, e.g. ``0o644``), not the private
``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_bytes_atomic"]

_NEW_FILE_MODE = 0o666
"""Requested mode of a new file; the kernel applies the umask (and any default ACL)."""


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty file ``folder/.NAME.<pid>.<random>.tmp`` opened for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: could not create a temporary file for {name}")


def _fsync_folder(folder: Path) -> None:
    """``fsync`` a folder so that a rename in it is durable (skipped where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (and platforms) do not fsync folders
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Write ``path`` atomically and durably (see the module docstring).

    Args:
        path: the destination; missing parent folders are created. A symbolic link is
            followed: the file it points to is replaced and the link kept.
        mode: ``"wb"`` (binary) or ``"w"`` (text).
        encoding: text mode only (default ``"utf-8"``).

    Yields:
        The open handle of the temporary file (do not close it).

    Raises:
        OSError: the folder cannot be created or written; the destination is unchanged.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    target = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        keep_mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        keep_mode = None
    fd, tmp = _create_temporary(target.parent, target.name)
    try:
        if keep_mode is not None:
            os.fchmod(fd, keep_mode)
        if mode == "wb":
            handle: IO[Any] = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8")
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` with :func:`atomic_write`; returns ``Path(path)``."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)
