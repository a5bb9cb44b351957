"""Tests for data_scripts/ptb.py (never downloads)."""

import gzip
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_scripts" / "ptb.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ptb_data_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ptb() -> ModuleType:
    return _load_script()


def _synthetic(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    data = {
        "train": b" the cat sat on the mat \n a <unk> dog \n",
        "valid": b" the dog sat \n",
        "test": b" a cat \n",
    }
    for split, text in data.items():
        (src / f"ptb.{split}.txt").write_bytes(text)
    return src, data


def test_tampered_source_fails(tmp_path: Path, ptb: ModuleType, capsys) -> None:
    src, _ = _synthetic(tmp_path)
    out = tmp_path / "out"
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "ptb.train.txt" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_tampered_source_exit_code_cli(tmp_path: Path) -> None:
    src, _ = _synthetic(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--source", str(src), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "error: checksum mismatch" in proc.stderr


def test_write_gz_and_refuse_overwrite(
    tmp_path: Path, ptb: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, data = _synthetic(tmp_path)
    monkeypatch.setattr(
        ptb, "EXPECTED_MD5", {s: hashlib.md5(b).hexdigest() for s, b in data.items()}
    )
    # gz sources are accepted too
    gz_src = tmp_path / "gzsrc"
    gz_src.mkdir()
    for split, text in data.items():
        (gz_src / f"ptb.{split}.txt.gz").write_bytes(gzip.compress(text))
    out = tmp_path / "out"
    assert ptb.main(["--source", str(gz_src), "--out", str(out)]) == 0
    for split, text in data.items():
        raw = (out / f"ptb.{split}.txt.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        assert gzip.decompress(raw) == text
    before = (out / "ptb.train.txt.gz").read_bytes()
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0  # same content: ok
    assert (out / "ptb.train.txt.gz").read_bytes() == before

    (out / "ptb.valid.txt.gz").write_bytes(gzip.compress(b"something else\n"))
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 1
    assert gzip.decompress((out / "ptb.valid.txt.gz").read_bytes()) == b"something else\n"


def test_missing_source_file(tmp_path: Path, ptb: ModuleType, capsys) -> None:
    src, _ = _synthetic(tmp_path)
    (src / "ptb.test.txt").unlink()
    assert ptb.main(["--source", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "ptb.test.txt" in capsys.readouterr().err


@pytest.mark.real_data
def test_real_ptb_source(tmp_path: Path, ptb: ModuleType) -> None:
    root = os.environ.get("LATENTEBM_DATA")
    if not root:
        pytest.skip("LATENTEBM_DATA is not set; real PTB files unavailable")
    src = Path(root) / "ptb"
    if not all((src / f"ptb.{s}.txt.gz").is_file() for s in ("train", "valid", "test")):
        pytest.skip(f"PTB files ptb.{{train,valid,test}}.txt.gz not found in {src}")
    out = tmp_path / "ptb"
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0
    for split in ("train", "valid", "test"):
        text = gzip.decompress((out / f"ptb.{split}.txt.gz").read_bytes())
        assert hashlib.md5(text).hexdigest() == ptb.EXPECTED_MD5[split]
    # Re-running over identical output is a no-op.
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0
