"""Tests for data_scripts/{mnist,cifar10,svhn,celeba}.py on tiny files of the real formats
(never downloads)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from latentebm.tasks.images import ImageTask
from tests.test_image_task import (
    idx_bytes,
    real_mnist_root,
    write_cifar_tar,
    write_jpegs,
    write_mnist,
    write_svhn,
)

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    path = REPO / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_data_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to download fails the test."""
    common = load_script("_common")
    sys.modules.setdefault("_common", common)

    def refuse(url: str, dest: Path) -> Path:
        raise AssertionError(f"tests must not download ({url})")

    monkeypatch.setattr(sys.modules["_common"], "download", refuse)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------


def test_mnist_local_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mnist = load_script("mnist")
    arrays = write_mnist(tmp_path / "src", compress=False)  # plain IDX files
    out = tmp_path / "root" / "mnist"
    assert mnist.main(["--source", str(tmp_path / "src"), "--out", str(out)]) == 1
    assert "count mismatch" in one_error_line(capsys) and not out.exists()
    args = ["--source", str(tmp_path / "src"), "--out", str(out), "--skip-count-check"]
    assert mnist.main(args) == 1
    assert "checksum mismatch" in one_error_line(capsys)
    assert mnist.main([*args, "--skip-checksum"]) == 0
    for name, array in arrays.items():
        assert gzip.decompress((out / f"{name}.gz").read_bytes()) == idx_bytes(array)
    task = ImageTask(dataset="mnist", data_root=tmp_path / "root")
    np.testing.assert_array_equal(task.images("train")[:, 0], arrays["train-images-idx3-ubyte"])
    assert mnist.main([*args, "--skip-checksum"]) == 0  # same content: left alone
    assert "already present" in capsys.readouterr().err
    write_mnist(tmp_path / "src", seed=1, compress=False)
    assert mnist.main([*args, "--skip-checksum"]) == 1
    assert "refusing to overwrite" in one_error_line(capsys)


def test_mnist_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mnist = load_script("mnist")
    src = tmp_path / "src"
    write_mnist(src)
    flags = ["--skip-count-check", "--skip-checksum"]
    labels = src / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.full(20, 12, dtype=np.uint8))))
    assert mnist.main(["--source", str(src), "--out", str(tmp_path / "o"), *flags]) == 1
    assert "labels outside 0-9" in one_error_line(capsys)
    images = src / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((60, 28, 28), np.uint8))[:-5]))
    assert mnist.main(["--source", str(src), "--out", str(tmp_path / "o"), *flags]) == 1
    assert "train-images-idx3-ubyte: IDX dimensions" in one_error_line(capsys)
    images.unlink()
    assert mnist.main(["--source", str(src), "--out", str(tmp_path / "o")]) == 1
    assert "train-images-idx3-ubyte or train-images-idx3-ubyte.gz not found" in one_error_line(
        capsys
    )


@pytest.mark.real_data
def test_mnist_real_checksums(tmp_path: Path) -> None:
    mnist = load_script("mnist")
    root = real_mnist_root()
    data = mnist.read_local(root / "mnist")
    assert mnist.verify(data, False, False) == {"train": 60000, "test": 10000}


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def test_cifar10_archive_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cifar = load_script("cifar10")
    archive = tmp_path / "src" / "cifar-10-binary.tar.gz"
    written = write_cifar_tar(archive, n=3)
    out = tmp_path / "root" / "cifar10"
    assert cifar.main(["--source", str(archive), "--out", str(out)]) == 1
    assert "count mismatch" in one_error_line(capsys)
    assert cifar.main(["--source", str(archive), "--out", str(out), "--skip-count-check"]) == 0
    assert (out / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()
    # an extracted folder: a reproducible archive is built
    folder = tmp_path / "extracted" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, data in cifar.read_archive(archive).items():
        (folder / name).write_bytes(data)
    out2 = tmp_path / "root2" / "cifar10"
    args = ["--source", str(tmp_path / "extracted"), "--skip-count-check"]
    assert cifar.main([*args, "--out", str(out2)]) == 0
    assert cifar.main([*args, "--out", str(tmp_path / "root3" / "cifar10")]) == 0
    assert (out2 / "cifar-10-binary.tar.gz").read_bytes() == (
        tmp_path / "root3" / "cifar10" / "cifar-10-binary.tar.gz"
    ).read_bytes()
    task = ImageTask(dataset="cifar10", data_root=tmp_path / "root2")
    np.testing.assert_array_equal(task.images("test"), written["test_batch.bin"][0])
    (folder / "test_batch.bin").write_bytes((folder / "test_batch.bin").read_bytes()[:-1])
    assert cifar.main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "not a whole number of 3073-byte records" in one_error_line(capsys)
    (folder / "test_batch.bin").unlink()
    assert cifar.main([*args, "--out", str(tmp_path / "o")]) == 1
    assert "lacks test_batch.bin" in one_error_line(capsys)


# --------------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------------


def test_svhn_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("scipy")
    svhn = load_script("svhn")
    written = write_svhn(tmp_path / "src", n=10)
    out = tmp_path / "root" / "svhn"
    assert svhn.main(["--source", str(tmp_path / "src"), "--out", str(out)]) == 1
    assert "train_32x32.mat has 10 images, expected 73257" in one_error_line(capsys)
    args = ["--source", str(tmp_path / "src"), "--out", str(out), "--skip-count-check"]
    assert svhn.main(args) == 0
    for split in ("train", "test"):
        name = f"{split}_32x32.mat"
        assert (out / name).read_bytes() == (tmp_path / "src" / name).read_bytes()
    task = ImageTask(dataset="svhn", data_root=tmp_path / "root")
    np.testing.assert_array_equal(task.images("train"), written["train"][0].transpose(3, 2, 0, 1))
    from scipy.io import savemat

    savemat(
        tmp_path / "src" / "test_32x32.mat",
        {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": [[1], [2]]},
    )
    assert svhn.main([*args[:2], "--out", str(tmp_path / "o"), "--skip-count-check"]) == 1
    assert "expected uint8 (32, 32, 3, N)" in one_error_line(capsys)


# --------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------


def test_celeba_folder_and_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    celeba = load_script("celeba")
    src = tmp_path / "src" / "img_align_celeba"
    write_jpegs(src, ["000001.jpg", "000002.jpg", "182638.jpg"])
    (tmp_path / "src" / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 0\n182638.jpg 2\n"
    )
    out = tmp_path / "root" / "celeba"
    assert celeba.main(["--source", str(src), "--out", str(out)]) == 1
    assert "3 images, expected 202599" in one_error_line(capsys)
    assert celeba.main(["--source", str(src), "--out", str(out), "--skip-count-check"]) == 0
    with zipfile.ZipFile(out / "img_align_celeba.zip") as zf:
        assert zf.namelist() == [f"img_align_celeba/{n}" for n in sorted(os.listdir(src))]
    assert (out / "list_eval_partition.txt").is_file()
    task = ImageTask(dataset="celeba", data_root=tmp_path / "root")
    assert task.image_shape == (3, 64, 64)
    assert (task.num_sentences("train"), task.num_sentences("test")) == (2, 1)
    # the written zip as a source: copied byte for byte
    again = tmp_path / "again"
    zip_args = ["--source", str(out / "img_align_celeba.zip"), "--skip-count-check"]
    assert celeba.main([*zip_args, "--out", str(again)]) == 0
    assert (again / "img_align_celeba.zip").read_bytes() == (
        out / "img_align_celeba.zip"
    ).read_bytes()
    (src / "000002.jpg").write_bytes(b"not a jpeg")
    assert (
        celeba.main(["--source", str(src), "--out", str(tmp_path / "o"), "--skip-count-check"]) == 1
    )
    assert "000002.jpg is not a JPEG file" in one_error_line(capsys)


def test_celeba_needs_source(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_scripts" / "celeba.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "--source" in proc.stderr
