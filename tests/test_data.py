"""Tests for latentebm.data (data root, path resolution, text opening)."""

import gzip
from pathlib import Path

import pytest

from latentebm.data import DataFileError, data_root, open_text, resolve_data_path


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    assert data_root(None) is None
    assert data_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path / "env"))
    assert data_root(None) == tmp_path / "env"
    assert data_root(str(tmp_path)) == tmp_path  # explicit wins


def test_resolve_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "a.txt"
    f.write_text("hello\n")
    assert resolve_data_path("sub/a.txt", str(tmp_path)) == f
    assert resolve_data_path(str(f), None) == f
    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path))
    assert resolve_data_path("sub/a.txt", None) == f


def test_resolve_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    p = resolve_data_path("builtin:wordnet30_examples.txt.gz", None)
    assert p.is_file() and p.parent.name == "data"
    assert (p.parent / "LICENSE.wordnet30.txt").is_file()
    with pytest.raises(DataFileError, match="nope.txt"):
        resolve_data_path("builtin:nope.txt", None)


def test_missing_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    with pytest.raises(DataFileError) as info:
        resolve_data_path("ptb/ptb.train.txt.gz", str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg
    assert "ptb/ptb.train.txt.gz" in msg and str(tmp_path) in msg
    assert "LATENTEBM_DATA" in msg
    assert f"python data_scripts/ptb.py --out {tmp_path}/ptb" in msg
    assert "--source" not in msg  # ptb.py downloads
    with pytest.raises(DataFileError) as info:
        resolve_data_path("yahoo/yahoo.train.txt.gz", str(tmp_path))
    assert f"python data_scripts/yahoo.py --out {tmp_path}/yahoo --source LOCAL_COPY" in str(
        info.value
    )

    with pytest.raises(DataFileError) as info:
        resolve_data_path("other/x.txt", str(tmp_path))
    assert "data_scripts" not in str(info.value)  # no script for "other"


def test_missing_root_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    with pytest.raises(DataFileError) as info:
        resolve_data_path("ptb/ptb.valid.txt.gz", None)
    msg = str(info.value)
    assert "ptb/ptb.valid.txt.gz" in msg
    assert "no data root" in msg and "LATENTEBM_DATA" in msg


def test_missing_absolute(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="missing.txt"):
        resolve_data_path(str(tmp_path / "missing.txt"), None)


def test_open_text_plain_and_gzip(tmp_path: Path) -> None:
    text = "a b c\nnaïve ü\n"
    plain = tmp_path / "x.txt"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "x.txt.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    for p in (plain, packed):
        with open_text(p) as f:
            assert f.read() == text


def test_core_does_not_import_tasks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, latentebm.data; "
        "assert not {'tasks', 'latentebm.tasks'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
