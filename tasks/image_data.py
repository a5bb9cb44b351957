"""Reading the image data sets of :class:`~latentebm.tasks.images.ImageTask`: each data set's own
train/test files as pools of ``uint8 (N, C, H, W)`` images (:func:`read_pools`; the layouts
are described in :mod:`latentebm.tasks.images`): MNIST IDX files, the binary CIFAR-10 version,
SVHN MATLAB files, CelebA and folders of JPEG/PNG files (decoded on demand), ``.npy`` arrays.
"""

from __future__ import annotations

import io
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentebm.data import DataFileError, open_text
from latentebm.errors import require
from latentebm.image_io import load_image, read_idx

__all__ = [
    "ARRAY_SPLITS",
    "IMAGE_SUFFIXES",
    "MNIST_FILES",
    "ImageDataError",
    "ImageFiles",
    "Pool",
    "array_pool",
    "celeba_partition",
    "list_images",
    "read_array",
    "read_pools",
    "script_hint",
]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32
CELEBA_CROP = 140
CELEBA_TRAIN_LAST, CELEBA_VALID_LAST = 162_770, 182_637
"""Official CelebA partition by image number: 1..162770 train, ..182637 valid, the rest test."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageDataError(ValueError):
    """An image data file has the wrong layout (the message names the file)."""


# --------------------------------------------------------------------------------------------
# Sources: the images of a data set's own train/test files
# --------------------------------------------------------------------------------------------


@dataclass
class Pool:
    """The images of one source split: ``take(index)`` gives ``uint8 (n, C, H, W)`` (decoded
    on demand for JPEG/PNG data sets), ``labels`` the class of each or None."""

    size: int
    take: Callable[[np.ndarray], np.ndarray]
    labels: np.ndarray | None = None


def array_pool(images: np.ndarray, labels: np.ndarray | None) -> Pool:
    return Pool(len(images), lambda index: images[index], labels)


def script_hint(dataset: str, folder: Path | str) -> str:
    if dataset == "folder":
        return ""
    source = " --source LOCAL_COPY" if dataset == "celeba" else ""
    return f"; get it with: python data_scripts/{dataset}.py --out {folder}{source}"


def find_file(folder: Path, name: str, dataset: str) -> Path:
    """``folder/name`` or ``folder/name.gz``; a clear FileNotFoundError otherwise."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataFileError(
        f"{dataset} data file not found: {folder / name} (or .gz){script_hint(dataset, folder)}"
    )


def read_mnist(folder: Path) -> dict[str, Pool]:
    arrays = {key: read_idx(find_file(folder, name, "mnist")) for key, name in MNIST_FILES.items()}
    pools = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        name = MNIST_FILES[f"{split}_images"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ImageDataError(
                f"{folder / name}: expected uint8 images (N, H, W), got {images.dtype} "
                f"{images.shape}"
            )
        if labels.shape != (len(images),):
            raise ImageDataError(
                f"{folder / MNIST_FILES[f'{split}_labels']}: {labels.shape[0]} labels for "
                f"{len(images)} images in {name}"
            )
        pools[split] = array_pool(images[:, None], labels.astype(np.int64))
    return pools


def parse_cifar(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(raw) % CIFAR_RECORD:
        raise ImageDataError(
            f"{where}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 "
            "records (is it the binary version?)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if len(labels) and labels.max() > 9:
        raise ImageDataError(f"{where}: label {labels.max()} out of range 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def read_cifar10(path: Path) -> dict[str, Pool]:
    files: dict[str, bytes] = {}
    wanted = (*CIFAR_TRAIN, CIFAR_TEST)
    archive = path if path.is_file() else path / "cifar-10-binary.tar.gz"
    if archive.is_file():
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar.getmembers():
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in wanted:
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        files[base] = extracted.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageDataError(f"{archive}: cannot read tar archive ({exc})") from exc
        where = str(archive)
    else:
        folder = path / "cifar-10-batches-bin" if (path / "cifar-10-batches-bin").is_dir() else path
        if not folder.is_dir():
            raise DataFileError(
                f"cifar10 data not found: {path} (expected cifar-10-binary.tar.gz or "
                f"cifar-10-batches-bin/){script_hint('cifar10', path)}"
            )
        files = {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}
        where = str(folder)
    missing = [n for n in wanted if n not in files]
    if missing:
        raise DataFileError(
            f"cifar10 data incomplete: {where} lacks {', '.join(missing)} (expected the binary "
            f"version, cifar-10-binary.tar.gz){script_hint('cifar10', path)}"
        )
    parts = [parse_cifar(files[n], f"{where}:{n}") for n in CIFAR_TRAIN]
    train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test = parse_cifar(files[CIFAR_TEST], f"{where}:{CIFAR_TEST}")
    return {"train": array_pool(*train), "test": array_pool(*test)}


def read_svhn(folder: Path) -> dict[str, Pool]:
    require("scipy.io", "image", "the SVHN data set")
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    pools = {}
    for split in ("train", "test"):
        path = folder / f"{split}_32x32.mat"
        if not path.is_file():
            raise DataFileError(f"svhn data file not found: {path}{script_hint('svhn', folder)}")
        try:
            mat = loadmat(path)
        except (MatReadError, ValueError, OSError, NotImplementedError) as exc:
            raise ImageDataError(f"{path}: cannot read MATLAB file ({exc})") from exc
        x, y = mat.get("X"), mat.get("y")
        if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ImageDataError(f"{path}: expected arrays X (32, 32, 3, N) and y (N, 1)")
        labels = np.asarray(y, dtype=np.int64).reshape(-1)
        if len(labels) != x.shape[3]:
            raise ImageDataError(f"{path}: {len(labels)} labels for {x.shape[3]} images")
        labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
        images = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1))
        pools[split] = array_pool(images, labels)
    return pools


class ImageFiles:
    """JPEG/PNG files in a folder or a zip archive, decoded on demand."""

    def __init__(self, root: Path, names: list[str], archive: bool) -> None:
        self.root, self.names, self.archive = root, names, archive

    def read(self, i: int) -> tuple[str, bytes]:
        name = self.names[i]
        if self.archive:
            with zipfile.ZipFile(self.root) as zf:
                return f"{self.root}:{name}", zf.read(name)
        return str(self.root / name), (self.root / name).read_bytes()

    def decode(
        self, index: np.ndarray, *, image_size: int | None, crop: int | None, channels: int
    ) -> list[np.ndarray]:
        out = []
        zf = zipfile.ZipFile(self.root) if self.archive else None
        try:
            for i in index.tolist():
                name = self.names[i]
                where = f"{self.root}:{name}" if zf else str(self.root / name)
                data = zf.read(name) if zf else (self.root / name).read_bytes()
                out.append(
                    load_image(
                        data, image_size=image_size, crop=crop, channels=channels, name=where
                    )
                )
        finally:
            if zf is not None:
                zf.close()
        return out


def list_images(path: Path, dataset: str) -> ImageFiles:
    """The image files of a zip archive or a folder (recursively), sorted by name."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ImageDataError(f"{path}: expected a folder of images or a zip archive")
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES)]
        return ImageFiles(path, sorted(names), archive=True)
    if not path.is_dir():
        raise DataFileError(f"{dataset} data not found: {path}{script_hint(dataset, path)}")
    names = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    return ImageFiles(path, names, archive=False)


def celeba_partition(path: Path, files: ImageFiles) -> np.ndarray:
    """0 (train) / 1 (valid) / 2 (test) per file: ``list_eval_partition.txt``/``.csv`` beside
    the images if present, else the official numbering."""
    folder = path.parent if path.is_file() else path
    text = None
    for name in ("list_eval_partition.txt", "list_eval_partition.csv"):
        for candidate in (folder / name, folder.parent / name):
            if candidate.is_file():
                with open_text(candidate) as f:  # not UTF-8: one line naming file and line
                    text = f.read()
                break
        if text is not None:
            break
    table: dict[str, int] = {}
    if text is not None:
        for line in text.splitlines():
            parts = re.split(r"[,\s]+", line.strip())
            if len(parts) == 2 and parts[1].isdigit():
                table[parts[0]] = int(parts[1])
    out = np.zeros(len(files.names), dtype=np.int64)
    for i, name in enumerate(files.names):
        base = name.rsplit("/", 1)[-1]
        if base in table:
            out[i] = table[base]
        elif not table and base.split(".")[0].isdigit():
            number = int(base.split(".")[0])
            out[i] = 0 if number <= CELEBA_TRAIN_LAST else 1 if number <= CELEBA_VALID_LAST else 2
    return out


def file_pool(files: ImageFiles, index: np.ndarray, **decode: Any) -> Pool:
    def take(rows: np.ndarray) -> np.ndarray:
        images = files.decode(index[rows], **decode)
        if not images:
            c = decode["channels"]
            s = decode["image_size"] or 0
            return np.zeros((0, c, s, s), dtype=np.uint8)
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ImageDataError(
                f"{files.root}: images of different sizes {sorted(shapes)}; set task.image_size"
            )
        return np.stack(images)

    return Pool(len(index), take, None)


def read_celeba(path: Path, image_size: int) -> dict[str, Pool]:
    if path.is_dir():
        for candidate in (path / "img_align_celeba.zip", path / "img_align_celeba"):
            if candidate.exists():
                path = candidate
                break
    files = list_images(path, "celeba")
    if not files.names:
        raise DataFileError(f"celeba data: no JPEG images in {path}{script_hint('celeba', path)}")
    part = celeba_partition(path, files)
    decode = {"image_size": image_size, "crop": CELEBA_CROP, "channels": 3}
    pools = {"train": file_pool(files, np.flatnonzero(part == 0), **decode)}
    if (part == 2).any():
        pools["test"] = file_pool(files, np.flatnonzero(part == 2), **decode)
    return pools


ARRAY_SPLITS = ("train", "test")


def read_array(path: Path) -> dict[str, Pool]:
    """``train.npy`` (and ``test.npy`` if present) under ``path``: ``(N, C, H, W)`` arrays, uint8
    (mapped to ``[-1, 1]`` like image files) or float (used as they are: continuous data, e.g.
    :mod:`latentebm.ground_truth`)."""
    if not path.is_dir():
        raise DataFileError(f"array data folder not found: {path} (expected train.npy)")
    pools: dict[str, Pool] = {}
    for split in ARRAY_SPLITS:
        file = path / f"{split}.npy"
        if not file.exists():
            if split == "train":
                raise DataFileError(f"array data: {file} not found")
            continue
        try:
            images = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # EOFError: a zero-byte file
            raise ImageDataError(f"{file}: not a readable .npy array ({exc})") from exc
        if images.ndim != 4 or images.dtype.kind not in "uf":
            raise ImageDataError(
                f"{file}: expected a (N, C, H, W) uint8 or float array, got "
                f"{images.dtype} {images.shape}"
            )
        pools[split] = array_pool(images, None)
    return pools


def read_folder(path: Path, image_size: int | None) -> dict[str, Pool]:
    files = list_images(path, "folder")
    if not files.names:
        raise DataFileError(f"folder data: no .png/.jpg/.jpeg images under {path}")
    from PIL import Image

    where, data = files.read(0)
    try:
        with Image.open(io.BytesIO(data)) as first:
            channels = 1 if first.mode in GREY_MODES else 3
    except OSError as exc:
        raise ImageDataError(f"{where}: cannot decode image ({exc})") from exc
    decode = {"image_size": image_size, "crop": None, "channels": channels}
    return {"train": file_pool(files, np.arange(len(files.names)), **decode)}


def read_pools(dataset: str, location: Path, side: int | None) -> dict[str, Pool]:
    """The ``train`` (and, where the data set has one, ``test``) pool of ``dataset`` at
    ``location`` (its folder or file); ``side``: the size CelebA and folder images are resized
    to (None: their own)."""
    if dataset == "mnist":
        if not location.is_dir():
            raise DataFileError(
                f"mnist data folder not found: {location} (expected the four IDX files "
                f"{', '.join(MNIST_FILES.values())}, plain or .gz)"
                f"{script_hint('mnist', location)}"
            )
        return read_mnist(location)
    if dataset == "cifar10":
        if not location.exists():
            raise DataFileError(
                f"cifar10 data not found: {location} (expected cifar-10-binary.tar.gz or "
                f"cifar-10-batches-bin/){script_hint('cifar10', location)}"
            )
        return read_cifar10(location)
    if dataset == "svhn":
        if not location.is_dir():
            raise DataFileError(
                f"svhn data folder not found: {location} (expected train_32x32.mat and "
                f"test_32x32.mat){script_hint('svhn', location)}"
            )
        return read_svhn(location)
    if dataset == "celeba":
        assert side is not None
        return read_celeba(location, side)
    if dataset == "array":
        return read_array(location)
    return read_folder(location, side)
