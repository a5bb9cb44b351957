"""Data files that cannot be read, caches that cannot be read, and where ``evaluate`` writes.

Every bad file gets one line naming it (and the line, for text that is not UTF-8) and a
non-zero exit, never a traceback; an unreadable cache is rebuilt; every cache and result is
written atomically and durably, with ordinary permissions; ``evaluate`` merges only into a
file it wrote and says so before it evaluates anything.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from latentebm.atomic import atomic_write, write_bytes_atomic

needs_rdkit = pytest.mark.skipif(
    importlib.util.find_spec("rdkit") is None, reason="the molecule task needs RDKit"
)
RunCli = Callable[..., subprocess.CompletedProcess[str]]
SMILES = ["CCO", "CCN", "c1ccccc1", "CC(=O)O", "CCCC", "C1CC1", "CNC", "OCCO", "CC#N", "CCOC"]


def one_error_line(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """The CLI's single error line; asserts exit 2, no traceback, and that it names ``names``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("latentebm: error:")]
    assert len(lines) == 1, result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def latin1_text(lines: list[str], bad_line: int) -> bytes:
    """UTF-8 ``lines`` with a Latin-1 ``é`` (byte 0xe9) appended to line ``bad_line`` (1-based)."""
    raw = [line.encode("utf-8") for line in lines]
    raw[bad_line - 1] += b" caf\xe9"
    return b"\n".join(raw) + b"\n"


@pytest.fixture
def umask_022() -> Iterator[int]:
    """Run with umask 022 (new files 0o644), restored afterwards."""
    old = os.umask(0o022)
    try:
        yield 0o644
    finally:
        os.umask(old)


# --------------------------------------------------------------------------------------------
# The atomic writer every cache, result and grid goes through
# --------------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary left


def test_atomic_write_modes_fsync_and_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: int
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    new = write_bytes_atomic(tmp_path / "sub" / "new.bin", b"x")
    assert stat.S_IMODE(new.stat().st_mode) == umask_022  # not mkstemp's 0o600
    assert len(synced) == 2  # the file and its folder
    old = tmp_path / "old.bin"
    old.write_bytes(b"a")
    old.chmod(0o640)
    write_bytes_atomic(old, b"b")
    assert old.read_bytes() == b"b" and stat.S_IMODE(old.stat().st_mode) == 0o640
    link = tmp_path / "link.bin"
    link.symlink_to(old)
    with atomic_write(link, "w") as handle:
        handle.write("c")
    assert link.is_symlink() and old.read_text() == "c"
