"""Data files that cannot be read, caches that cannot be read, and where ``evaluate`` writes.

Every bad file gets one line naming it (and the line, for text that is not UTF-8) and a
non-zero exit, never a traceback; an unreadable cache is rebuilt; every cache and result is
written atomically and durably, with ordinary permissions; ``evaluate`` merges only into a
file it wrote and says so before it evaluates anything.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from latentebm.atomic import atomic_write, write_bytes_atomic
from latentebm.data import DataFormatError, open_text
from latentebm.evaluate import METRICS_FORMAT, evaluate, write_metrics
from tests.conftest import tiny_recipe_dict, tiny_sentences, train_tiny_run

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


# --------------------------------------------------------------------------------------------
# Case 1: molecule caches
# --------------------------------------------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    if how == "zero bytes":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:700])
    elif how == "wrong keys":
        np.savez(path.with_suffix(""), foo=np.zeros(2))  # np.savez adds the .npz
    else:  # arrays that do not fit together
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["offsets"] = arrays["offsets"][:-1]
        np.savez(path.with_suffix(""), **arrays)


@needs_rdkit
@pytest.mark.parametrize("how", ["zero bytes", "truncated", "wrong keys", "inconsistent"])
def test_unreadable_molecule_cache_is_rebuilt(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    (tmp_path / "m.csv").write_text("SMILES\n" + "\n".join(SMILES * 3) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"
    config = MoleculeTask.Config(train="m.csv", valid_fraction=0.2, n_jobs=1, cache_dir=str(cache))
    first = MoleculeTask(config, str(tmp_path))
    (cache_file,) = cache.glob("*.npz")
    _corrupt(cache_file, how)
    with caplog.at_level(logging.WARNING, logger="latentebm.tasks.molecules"):
        again = MoleculeTask(config, str(tmp_path))  # the original raised here, every run
    assert not again._files["m.csv"].from_cache
    assert again.sentences("train") == first.sentences("train")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert str(cache_file) in warned[0] and "rebuilding it" in warned[0]
    third = MoleculeTask(config, str(tmp_path))  # the rebuilt cache is read
    assert third._files["m.csv"].from_cache
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]  # no temporary left


@needs_rdkit
def test_molecule_cache_is_written_durably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask_022: int
) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    (tmp_path / "m.smi").write_text("\n".join(SMILES) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"
    MoleculeTask(MoleculeTask.Config(train="m.smi", n_jobs=1, cache_dir=str(cache)), tmp_path)
    (cache_file,) = cache.glob("*.npz")
    assert synced, "the cache was not fsync-ed before the rename"
    assert stat.S_IMODE(cache_file.stat().st_mode) == umask_022


@needs_rdkit
@pytest.mark.slow
def test_train_with_a_zero_byte_molecule_cache_rebuilds_it(tmp_path: Path, run_cli: RunCli) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    data = tmp_path / "data"
    data.mkdir()
    (data / "m.csv").write_text("SMILES\n" + "\n".join(SMILES * 3) + "\n", encoding="utf-8")
    recipe = tiny_recipe_dict(
        "m.csv",
        data={"root": str(data)},
        task={
            "_component_": "latentebm.tasks.molecules.MoleculeTask",
            "valid_fraction": 0.2,
            "n_jobs": 1,
        },
        trainer={"max_steps": 1, "samples_at_end": 0, "valid_every": 1, "batch_size": 8},
    )
    (tmp_path / "mol.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    cache_folder = data / ".cache" / "molecules"  # the default: under the data root
    MoleculeTask(MoleculeTask.Config(train="m.csv", valid_fraction=0.2, n_jobs=1), data)
    (cache_file,) = cache_folder.glob("*.npz")
    cache_file.write_bytes(b"")  # what a crash during the old, unsynced write could leave
    second = run_cli("train", "mol.yaml", f"trainer.run_dir={tmp_path / 'run'}")
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    warned = [line for line in second.stderr.splitlines() if str(cache_file) in line]
    assert len(warned) == 1 and "unreadable molecule cache" in warned[0], second.stderr
    assert cache_file.stat().st_size > 0


@needs_rdkit
@pytest.mark.parametrize("how", ["zero bytes", "truncated"])
def test_unreadable_novelty_cache_is_rebuilt(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    from latentebm.metrics.molecules import load_canonical_smiles

    train = tmp_path / "train.csv"
    train.write_text("SMILES\n" + "\n".join(SMILES) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"
    first = load_canonical_smiles(train, cache, n_jobs=1)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"" if how == "zero bytes" else cache_file.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="latentebm.metrics.molecules"):
        assert load_canonical_smiles(train, cache, n_jobs=1) == first
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(cache_file) in warned[0] and "rebuilding it" in warned[0]
    assert load_canonical_smiles(train, cache, n_jobs=1) == first  # the rebuilt cache reads
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]


# --------------------------------------------------------------------------------------------
# Cases 2 and 3: gzip files that are not gzip or are cut short; text that is not UTF-8
# --------------------------------------------------------------------------------------------


@pytest.fixture
def text_recipe(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """``text_recipe(name, content)``: ``data/NAME`` holding ``content`` and a tiny text recipe
    training on it (data root ``data/``)."""

    def make(name: str, content: bytes) -> Path:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        (data / name).write_bytes(content)
        recipe = tiny_recipe_dict(name, data={"root": str(data)})
        path = tmp_path / "text.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return make


CORPUS = ("\n".join(tiny_sentences()) + "\n").encode("utf-8")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("train.txt.gz", gzip.compress(CORPUS)[:300], "truncated gzip file"),
        ("train.txt.gz", CORPUS, "not a valid gzip file"),
        ("train.txt", latin1_text(tiny_sentences(), 6), "not UTF-8 text (line 6: byte 0xe9"),
    ],
    ids=["truncated-gz", "not-gzip", "latin1"],
)
def test_unreadable_text_corpus_is_one_line(
    text_recipe: Callable[[str, bytes], Path],
    run_cli: RunCli,
    name: str,
    content: bytes,
    expected: str,
) -> None:
    recipe = text_recipe(name, content)
    result = run_cli("train", recipe, "trainer.run_dir=run")
    line = one_error_line(result, f"data/{name}", expected)
    assert line.count(name) == 1  # named once, not repeated by nested messages


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("t.txt.gz", gzip.compress(latin1_text(tiny_sentences(), 9)), r"\(line 9: byte 0xe9"),
        ("t.txt", gzip.compress(CORPUS), "gzip-compressed: name it with a .gz suffix"),
    ],
    ids=["latin1-in-gz", "gzip-without-gz"],
)
def test_text_task_names_file_and_line(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    from latentebm.tasks.text import TextTask

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / name).write_bytes(content)
    for train in (name, "corpus"):  # one file, and a folder of files
        source = tmp_path / "corpus" if train == "corpus" else tmp_path / "corpus" / name
        with pytest.raises(DataFormatError, match=rf"corpus/{re.escape(name)}: .*{expected}"):
            TextTask(TextTask.Config(train=str(source)))


def test_open_text_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(latin1_text(["a", "b", "c"], 2))
    with (
        pytest.raises(DataFormatError, match=r"x\.txt: not UTF-8 text \(line 2: byte 0xe9 at"),
        open_text(path) as f,
    ):
        f.read()  # json.load reads this way
    corrupt = bytearray(gzip.compress(CORPUS))
    corrupt[20:40] = bytes(20)  # a damaged deflate stream
    bad = tmp_path / "y.txt.gz"
    bad.write_bytes(bytes(corrupt))
    with (
        pytest.raises(DataFormatError, match=r"y\.txt\.gz: corrupt gzip file"),
        open_text(bad) as f,
    ):
        list(f)


@needs_rdkit
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("m.csv", latin1_text(["SMILES", *SMILES], 4), r"m\.csv: not UTF-8 text \(line 4: "),
        ("m.smi", latin1_text(SMILES, 3), r"m\.smi: not UTF-8 text \(line 3: "),
        ("m.csv.gz", gzip.compress(b"SMILES\nCCO\n" * 500)[:-4], r"m\.csv\.gz: truncated gzip"),
        ("m.csv", b"SMILES\nCCO\n" + b"C" * 200_000 + b"\n", r"m\.csv: line 3: not a CSV file"),
    ],
    ids=["csv-latin1", "smi-latin1", "csv-gz-truncated", "csv-huge-field"],
)
def test_unreadable_smiles_file_is_one_line(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    (tmp_path / name).write_bytes(content)
    config = MoleculeTask.Config(train=name, n_jobs=1, cache=False)
    with pytest.raises(ValueError, match=expected) as error:
        MoleculeTask(config, str(tmp_path))
    assert "\n" not in str(error.value)


def test_moses_reference_file_not_utf8_names_file(tmp_path: Path) -> None:
    from latentebm.metrics.molecules import read_smiles_file

    path = tmp_path / "test.csv.gz"
    path.write_bytes(gzip.compress(latin1_text(["SMILES", *SMILES], 5)))
    with pytest.raises(ValueError, match=r"test\.csv\.gz: not UTF-8 text \(line 5: byte 0xe9"):
        read_smiles_file(path)


@needs_rdkit
def test_held_out_index_not_utf8_names_file(tmp_path: Path) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    (tmp_path / "m.csv").write_text("SMILES\n" + "\n".join(SMILES) + "\n", encoding="utf-8")
    (tmp_path / "idx.json").write_bytes(b'{"valid_idxs": [1, 2]}\n"\xe9"\n')
    config = MoleculeTask.Config(train="m.csv", held_out_index="idx.json", n_jobs=1, cache=False)
    with pytest.raises(ValueError, match=r"idx\.json: not UTF-8 text \(line 2: byte 0xe9"):
        MoleculeTask(config, str(tmp_path))


def test_image_files_that_cannot_be_read_name_the_file(tmp_path: Path) -> None:
    from latentebm.image_io import read_idx
    from latentebm.tasks.image_data import ImageDataError, ImageFiles, celeba_partition, read_array

    array = tmp_path / "array"
    array.mkdir()
    (array / "train.npy").write_bytes(b"")
    with pytest.raises(ImageDataError, match=r"train\.npy: not a readable \.npy array"):
        read_array(array)
    raw = bytearray(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 200]) + bytes(200)))
    raw[12:30] = b"\xff" * 18  # a damaged deflate stream: zlib.error
    idx = tmp_path / "train-labels-idx1-ubyte.gz"
    idx.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: cannot decompress"):
        read_idx(idx)
    celeba = tmp_path / "celeba"
    celeba.mkdir()
    (celeba / "list_eval_partition.txt").write_bytes(b"000001.jpg 0\n000002.jp\xe9 2\n")
    files = ImageFiles(celeba, ["000001.jpg"], archive=False)
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt: not UTF-8 text \(line 2"):
        celeba_partition(celeba, files)


# --------------------------------------------------------------------------------------------
# Case 4: where evaluate writes
# --------------------------------------------------------------------------------------------

EVAL_FAST = (
    "--split",
    "valid",
    "--max-batches",
    "1",
    "--batch-size",
    "4",
    "--chains",
    "2",
    "--temperatures",
    "2",
    "--laplace-starts",
    "1",
    "--log-z-chains",
    "4",
    "--log-z-temperatures",
    "2",
    "--no-progress",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text run (2 steps) trained once for this module."""
    root = tmp_path_factory.mktemp("data_errors_run")
    return train_tiny_run(
        root,
        f"trainer.run_dir={root / 'run'}",
        task={"valid_fraction": 0.2},
        trainer={"max_steps": 2, "samples_at_end": 0, "checkpoint_every": 2, "valid_every": 2},
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"my notes\n", "exists and is not JSON"),
        (json.dumps({"other": {"x": 1}}).encode(), "a JSON file not written by latentebm evaluate"),
    ],
    ids=["text", "unrelated-json"],
)
def test_evaluate_refuses_a_file_it_did_not_write(
    tiny_run: Path, run_cli: RunCli, tmp_path: Path, content: bytes, expected: str
) -> None:
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    out.chmod(0o640)
    result = run_cli("evaluate", tiny_run, "-o", out.name, *EVAL_FAST)
    one_error_line(result, "notes.txt", expected, "choose another -o")
    assert out.read_bytes() == content and stat.S_IMODE(out.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"caf\xe9\n", "exists and is not JSON (not UTF-8 text)"),
        (b"[1, 2]\n", "a JSON file not written by latentebm evaluate"),
        (b"{}", "a JSON file not written by latentebm evaluate"),
        (json.dumps({"valid": {"x": 1}}).encode(), "a JSON file not written by latentebm evaluate"),
    ],
    ids=["binary", "json-list", "empty-object", "split-like-json"],
)
def test_write_metrics_refuses_a_file_it_did_not_write(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    out = tmp_path / "other.json"
    out.write_bytes(content)
    with pytest.raises(ValueError, match=rf"other\.json: {re.escape(expected)}"):
        write_metrics(out, "valid", {"marginal_nll": {"total_nll": 1.0}})
    assert out.read_bytes() == content


def test_evaluate_checks_its_output_before_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import latentebm.pretrained

    def no_evaluation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(latentebm.pretrained, "load", no_evaluation)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"notes\.txt: exists and is not JSON"):
        evaluate(tmp_path / "any-run", output=notes, progress=False)
    folder_is_a_file = tmp_path / "file.txt"
    folder_is_a_file.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"file\.txt is not a folder"):
        evaluate(tmp_path / "any-run", output=folder_is_a_file / "m.json", progress=False)
    with pytest.raises(ValueError, match="is a folder"):
        evaluate(tmp_path / "any-run", output=tmp_path, progress=False)


@pytest.mark.slow
def test_evaluate_creates_its_output_with_the_umask_mode(
    tiny_run: Path, run_cli: RunCli, tmp_path: Path, umask_022: int
) -> None:
    result = run_cli("evaluate", tiny_run, "-o", "new.json", *EVAL_FAST)
    assert result.returncode == 0, result.stderr
    new = tmp_path / "new.json"
    data = json.loads(new.read_text(encoding="utf-8"))
    assert data["format"] == METRICS_FORMAT and "marginal_nll" in data["valid"]
    assert stat.S_IMODE(new.stat().st_mode) == umask_022  # not mkstemp's 0o600


def test_write_metrics_mode_and_legacy_files(tmp_path: Path, umask_022: int) -> None:
    fresh = tmp_path / "fresh.json"
    write_metrics(fresh, "test", {"marginal_nll": {"total_nll": 1.0}})
    assert stat.S_IMODE(fresh.stat().st_mode) == umask_022
    kept = tmp_path / "kept.json"
    write_metrics(kept, "test", {"marginal_nll": {"total_nll": 1.0}})
    kept.chmod(0o640)
    write_metrics(kept, "test", {"marginal_nll": {"total_nll": 2.0}})
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    # a metrics.json written before the format marker existed is still merged into
    legacy = tmp_path / "legacy.json"
    old_entry = {"total_nll": 3.0, "checkpoint": "run/checkpoints/step_00000002.pt", "step": 2}
    legacy.write_text(json.dumps({"valid": {"marginal_nll": old_entry}}), encoding="utf-8")
    data = write_metrics(legacy, "valid", {"marginal_nll": {"total_nll": 4.0}})
    assert data["format"] == METRICS_FORMAT
    assert data["valid"]["marginal_nll"]["history"] == [old_entry]
