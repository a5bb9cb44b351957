"""Image data sets for latent-EBM prior models with a Gaussian image generator.

Data sets (``task.dataset``) and what ``task.path`` (relative to the data root, default the
data set's name) must hold:

* ``mnist``: the four IDX files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``), 1x28x28;
* ``cifar10``: the *binary* version, ``cifar-10-binary.tar.gz`` or its extracted
  ``cifar-10-batches-bin/`` (``data_batch_1..5.bin``, ``test_batch.bin``; records of one label
  byte and 3072 pixel bytes, R then G then B planes), 3x32x32; no pickle is read;
* ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` (read with ``scipy.io.loadmat``; label
  10 means digit 0), 3x32x32;
* ``celeba``: the aligned JPEGs (``img_align_celeba.zip``, a folder ``img_align_celeba/``, or
  the folder of JPEGs itself). Each image is center-cropped to 140x140, then resized to
  ``image_size`` (default 64), the usual protocol. Splits: ``list_eval_partition.txt`` (or
  ``.csv``) if present beside the images, else the official numbering (images 1-162,770 train,
  182,638-202,599 test); the official validation images are not used;
* ``folder``: every ``.png``/``.jpg``/``.jpeg`` under ``task.path`` (sorted by relative path),
  resized (shorter side, then a centre crop) to ``image_size``, or kept as they are when all
  have one size and ``image_size`` is unset; grey when the first image is grey, else RGB. All
  images are training data;
* ``array``: ``train.npy`` and optionally ``test.npy``, ``(N, C, H, W)`` arrays: uint8 (like
  image files) or float, taken as they are (continuous data such as the ground-truth benchmark
  of :mod:`latentebm.ground_truth`).

``image_size`` also resizes MNIST/CIFAR-10/SVHN when it differs from their native side.

Images are kept as ``uint8 (N, C, H, W)`` (float for ``array`` data); a batch becomes
``float32`` in ``[-1, 1]`` as ``x / 127.5 - 1`` (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning
Latent Space Energy-Based Prior Model", appendix B.1: images "scaled to [-1, 1]").

Splits:

* default: ``train`` (less a ``valid_fraction`` slice drawn with ``numpy.random.default_rng(0)``),
  ``valid``, and ``test`` (the data set's own test set, where it has one); ``max_images`` keeps
  the first N training images (after the valid slice);
* anomaly detection (``anomaly_digit`` set; Pang et al. (2020) Section 3.4 / Table 4, the
  protocol of MEG and BiGAN): all images of the train and test files are pooled (train file
  first); images of ``anomaly_digit`` are anomalous; the normal images are shuffled with
  ``numpy.random.default_rng(anomaly_split_seed)``, the first ``floor(anomaly_train_fraction *
  n_normal)`` are ``train``, and ``test`` is the remaining normal images (shuffled order)
  followed by ALL anomalous images (pool order). :meth:`ImageTask.anomaly_labels` gives 1 for
  anomalous. For MNIST with digit 1: 62,123 normal images -> 49,698 train, 12,425 + 7,877 test.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from latentebm.data import DataFileError, data_root, open_text
from latentebm.image_io import load_image, read_idx, resize_images, save_grid
from latentebm.tasks.batching import BucketedBatches

__all__ = ["DATASETS", "ImageDataError", "ImageTask", "to_float"]

Dataset = Literal["mnist", "cifar10", "svhn", "celeba", "folder", "array"]
DATASETS: tuple[str, ...] = ("mnist", "cifar10", "svhn", "celeba", "folder", "array")
SPLITS = ("train", "valid", "test")

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
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageDataError(ValueError):
    """An image data file has the wrong layout (the message names the file)."""


def to_float(images: np.ndarray) -> Tensor:
    """``uint8 (N, C, H, W)`` -> ``float32`` tensor in ``[-1, 1]``: ``x / 127.5 - 1``; float
    images (the ``array`` data set) are taken as they are."""
    if images.dtype.kind == "f":
        return torch.from_numpy(np.array(images, dtype=np.float32, copy=True))
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)


# --------------------------------------------------------------------------------------------
# Sources: the images of a data set's own train/test files
# --------------------------------------------------------------------------------------------


@dataclass
class _Pool:
    """The images of one source split: ``take(index)`` gives ``uint8 (n, C, H, W)`` (decoded
    on demand for JPEG/PNG data sets), ``labels`` the class of each or None."""

    size: int
    take: Callable[[np.ndarray], np.ndarray]
    labels: np.ndarray | None = None


def _array_pool(images: np.ndarray, labels: np.ndarray | None) -> _Pool:
    return _Pool(len(images), lambda index: images[index], labels)


def _script_hint(dataset: str, folder: Path | str) -> str:
    if dataset == "folder":
        return ""
    source = " --source LOCAL_COPY" if dataset == "celeba" else ""
    return f"; get it with: python data_scripts/{dataset}.py --out {folder}{source}"


def _find(folder: Path, name: str, dataset: str) -> Path:
    """``folder/name`` or ``folder/name.gz``; a clear FileNotFoundError otherwise."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataFileError(
        f"{dataset} data file not found: {folder / name} (or .gz){_script_hint(dataset, folder)}"
    )


def _read_mnist(folder: Path) -> dict[str, _Pool]:
    arrays = {key: read_idx(_find(folder, name, "mnist")) for key, name in MNIST_FILES.items()}
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
        pools[split] = _array_pool(images[:, None], labels.astype(np.int64))
    return pools


def _parse_cifar(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
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


def _read_cifar10(path: Path) -> dict[str, _Pool]:
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
                f"cifar-10-batches-bin/){_script_hint('cifar10', path)}"
            )
        files = {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}
        where = str(folder)
    missing = [n for n in wanted if n not in files]
    if missing:
        raise DataFileError(
            f"cifar10 data incomplete: {where} lacks {', '.join(missing)} (expected the binary "
            f"version, cifar-10-binary.tar.gz){_script_hint('cifar10', path)}"
        )
    parts = [_parse_cifar(files[n], f"{where}:{n}") for n in CIFAR_TRAIN]
    train = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    test = _parse_cifar(files[CIFAR_TEST], f"{where}:{CIFAR_TEST}")
    return {"train": _array_pool(*train), "test": _array_pool(*test)}


def _read_svhn(folder: Path) -> dict[str, _Pool]:
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the SVHN data set needs scipy: pip install scipy") from exc
    pools = {}
    for split in ("train", "test"):
        path = folder / f"{split}_32x32.mat"
        if not path.is_file():
            raise DataFileError(f"svhn data file not found: {path}{_script_hint('svhn', folder)}")
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
        pools[split] = _array_pool(images, labels)
    return pools


class _ImageFiles:
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


def _list_images(path: Path, dataset: str) -> _ImageFiles:
    """The image files of a zip archive or a folder (recursively), sorted by name."""
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ImageDataError(f"{path}: expected a folder of images or a zip archive")
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(IMAGE_SUFFIXES)]
        return _ImageFiles(path, sorted(names), archive=True)
    if not path.is_dir():
        raise DataFileError(f"{dataset} data not found: {path}{_script_hint(dataset, path)}")
    names = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    return _ImageFiles(path, names, archive=False)


def _celeba_partition(path: Path, files: _ImageFiles) -> np.ndarray:
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


def _file_pool(files: _ImageFiles, index: np.ndarray, **decode: Any) -> _Pool:
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

    return _Pool(len(index), take, None)


def _read_celeba(path: Path, image_size: int) -> dict[str, _Pool]:
    if path.is_dir():
        for candidate in (path / "img_align_celeba.zip", path / "img_align_celeba"):
            if candidate.exists():
                path = candidate
                break
    files = _list_images(path, "celeba")
    if not files.names:
        raise DataFileError(f"celeba data: no JPEG images in {path}{_script_hint('celeba', path)}")
    part = _celeba_partition(path, files)
    decode = {"image_size": image_size, "crop": CELEBA_CROP, "channels": 3}
    pools = {"train": _file_pool(files, np.flatnonzero(part == 0), **decode)}
    if (part == 2).any():
        pools["test"] = _file_pool(files, np.flatnonzero(part == 2), **decode)
    return pools


ARRAY_SPLITS = ("train", "test")


def _read_array(path: Path) -> dict[str, _Pool]:
    """``train.npy`` (and ``test.npy`` if present) under ``path``: ``(N, C, H, W)`` arrays, uint8
    (mapped to ``[-1, 1]`` like image files) or float (used as they are: continuous data, e.g.
    :mod:`latentebm.ground_truth`)."""
    if not path.is_dir():
        raise DataFileError(f"array data folder not found: {path} (expected train.npy)")
    pools: dict[str, _Pool] = {}
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
        pools[split] = _array_pool(images, None)
    return pools


def _read_folder(path: Path, image_size: int | None) -> dict[str, _Pool]:
    files = _list_images(path, "folder")
    if not files.names:
        raise DataFileError(f"folder data: no .png/.jpg/.jpeg images under {path}")
    from PIL import Image

    where, data = files.read(0)
    try:
        with Image.open(io.BytesIO(data)) as first:
            channels = 1 if first.mode in _GREY_MODES else 3
    except OSError as exc:
        raise ImageDataError(f"{where}: cannot decode image ({exc})") from exc
    decode = {"image_size": image_size, "crop": None, "channels": channels}
    return {"train": _file_pool(files, np.arange(len(files.names)), **decode)}


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------

_NATIVE_SIDE = {"mnist": 28, "cifar10": 32, "svhn": 32}
_STATE_KEYS = (
    "dataset",
    "image_size",
    "anomaly_digit",
    "anomaly_train_fraction",
    "anomaly_split_seed",
)
"""Settings a checkpoint's task state must agree with (they change what the images are)."""


@dataclass(frozen=True)
class _Batchable:
    """A split's images with the per-example ``lengths`` batching expects (all equal)."""

    images: np.ndarray
    lengths: np.ndarray


class ImageTask(BucketedBatches):
    """Images (uint8 in memory, ``[-1, 1]`` floats in batches), their splits and batching.

    Built as ``ImageTask(config, data_root=..., state=...)`` by the recipe builder, or with
    keywords only: ``ImageTask(dataset="mnist", anomaly_digit=1, data_root="data")``. Keywords
    that are not None override the fields of ``config`` (the builder passes the recipe's
    ``anomaly:`` section as ``anomaly_digit`` / ``anomaly_train_fraction`` /
    ``anomaly_split_seed``). With a checkpoint ``state`` nothing is read until a split is used,
    and then the data must match the state (same image shape and split sizes).
    """

    @dataclass
    class Config:
        """The ``task:`` section of an image recipe."""

        dataset: Literal["mnist", "cifar10", "svhn", "celeba", "folder", "array"] = "mnist"
        """Which data set (module docstring)."""
        path: str | None = None
        """Its files, relative to the data root (or absolute); null: the data set's name
        (``mnist``, ``cifar10``, ``svhn``, ``celeba``); required for ``folder``."""
        image_size: int | None = None
        """Side of the square images; null: native (28 MNIST, 32 CIFAR-10/SVHN, 64 CelebA,
        the files' own size for ``folder``)."""
        valid_fraction: float = 0.0
        """Hold out this fraction of train as ``valid`` (fixed seed-0 draw)."""
        max_images: int | None = None
        """Keep only the first N training images (after the valid slice)."""
        anomaly_digit: int | None = None
        """Anomaly-detection splits with this class anomalous (usually set through the
        recipe's top-level ``anomaly:`` section)."""
        anomaly_train_fraction: float = 0.8
        """Fraction of the normal images used for training (MEG/BiGAN protocol: 0.8)."""
        anomaly_split_seed: int = 0
        """Seed of the shuffle of the normal images (``numpy.random.default_rng``)."""

        def __post_init__(self) -> None:
            if self.dataset not in DATASETS:
                raise ValueError(
                    f"task.dataset must be one of {list(DATASETS)}, got {self.dataset!r}"
                )
            if self.dataset in ("folder", "array") and not self.path:
                raise ValueError(
                    f"task.path must name the image folder for dataset {self.dataset!r}"
                )
            if self.dataset == "array" and self.image_size is not None:
                raise ValueError("task.image_size: array data are used at their own size")
            if self.image_size is not None and self.image_size < 1:
                raise ValueError(f"task.image_size must be >= 1, got {self.image_size}")
            if not 0.0 <= self.valid_fraction < 1.0:
                raise ValueError(
                    f"task.valid_fraction must be in [0, 1), got {self.valid_fraction}"
                )
            if self.max_images is not None and self.max_images < 1:
                raise ValueError(f"task.max_images must be >= 1, got {self.max_images}")
            if self.anomaly_digit is not None:
                if self.dataset in ("celeba", "folder", "array"):
                    raise ValueError(
                        f"anomaly_digit needs class labels; dataset {self.dataset!r} has none"
                    )
                if not 0 <= self.anomaly_digit <= 9:
                    raise ValueError(f"anomaly digit must be in 0-9, got {self.anomaly_digit}")
            if not 0.0 < self.anomaly_train_fraction < 1.0:
                raise ValueError(
                    f"anomaly train_fraction must be in (0, 1), got {self.anomaly_train_fraction}"
                )

    def __init__(
        self,
        config: ImageTask.Config | None = None,
        /,
        *,
        dataset: Dataset | None = None,
        path: str | None = None,
        data_root: str | os.PathLike[str] | None = None,
        state: dict[str, Any] | None = None,
        image_size: int | None = None,
        valid_fraction: float | None = None,
        max_images: int | None = None,
        anomaly_digit: int | None = None,
        anomaly_train_fraction: float | None = None,
        anomaly_split_seed: int | None = None,
    ) -> None:
        base = config if config is not None else ImageTask.Config()
        given = {
            "dataset": dataset,
            "path": path,
            "image_size": image_size,
            "valid_fraction": valid_fraction,
            "max_images": max_images,
            "anomaly_digit": anomaly_digit,
            "anomaly_train_fraction": anomaly_train_fraction,
            "anomaly_split_seed": anomaly_split_seed,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if (
            "anomaly_digit" in given
            and base.anomaly_digit is not None
            and base.anomaly_digit != given["anomaly_digit"]
        ):
            raise ValueError(
                f"task.anomaly_digit {base.anomaly_digit} and anomaly.digit "
                f"{given['anomaly_digit']} disagree; set one of them"
            )
        self.config: ImageTask.Config = dataclasses.replace(base, **given)
        self.data_root = data_root
        self._state = dict(state) if state is not None else None
        self._images: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray | None] = {}
        self._anomalous: dict[str, np.ndarray] = {}
        self._source_index: dict[str, np.ndarray] = {}
        self._image_shape: tuple[int, int, int] | None = None
        if self._state is not None:
            self._check_state_settings(self._state)
            self._image_shape = tuple(int(s) for s in self._state["image_shape"])  # type: ignore[assignment]
        else:
            self._load()

    # ---------------------------------------------------------------- loading

    @property
    def dataset(self) -> str:
        """The data set's name (``task.dataset``)."""
        return self.config.dataset

    def _check_state_settings(self, state: dict[str, Any]) -> None:
        cfg = dataclasses.asdict(self.config)
        for key in _STATE_KEYS:
            if key in state and state[key] != cfg[key]:
                raise ValueError(
                    f"checkpoint task state has {key}={state[key]!r} but the task is configured "
                    f"with {key}={cfg[key]!r}"
                )
        shape = state.get("image_shape")
        if not isinstance(shape, list | tuple) or len(shape) != 3:
            raise ValueError(f"checkpoint task state: bad image_shape {shape!r}")

    def _location(self) -> Path:
        """The data set's folder or file (``task.path`` resolved against the data root)."""
        cfg = self.config
        name = cfg.path or cfg.dataset
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        root = data_root(self.data_root)
        if root is None:
            raise DataFileError(
                f"{cfg.dataset} data {name!r} is relative but no data root is set: set "
                f"LATENTEBM_DATA or data.root{_script_hint(cfg.dataset, '<data root>/' + name)}"
            )
        return root / path

    def _side(self) -> int | None:
        cfg = self.config
        if cfg.image_size is not None:
            return cfg.image_size
        return 64 if cfg.dataset == "celeba" else None

    def _read_pools(self) -> dict[str, _Pool]:
        cfg = self.config
        location = self._location()
        if cfg.dataset == "mnist":
            if not location.is_dir():
                raise DataFileError(
                    f"mnist data folder not found: {location} (expected the four IDX files "
                    f"{', '.join(MNIST_FILES.values())}, plain or .gz)"
                    f"{_script_hint('mnist', location)}"
                )
            return _read_mnist(location)
        if cfg.dataset == "cifar10":
            if not location.exists():
                raise DataFileError(
                    f"cifar10 data not found: {location} (expected cifar-10-binary.tar.gz or "
                    f"cifar-10-batches-bin/){_script_hint('cifar10', location)}"
                )
            return _read_cifar10(location)
        if cfg.dataset == "svhn":
            if not location.is_dir():
                raise DataFileError(
                    f"svhn data folder not found: {location} (expected train_32x32.mat and "
                    f"test_32x32.mat){_script_hint('svhn', location)}"
                )
            return _read_svhn(location)
        side = self._side()
        if cfg.dataset == "celeba":
            assert side is not None
            return _read_celeba(location, side)
        if cfg.dataset == "array":
            return _read_array(location)
        return _read_folder(location, side)

    def _split_indices(self, pools: dict[str, _Pool]) -> dict[str, tuple[_Pool, np.ndarray]]:
        """Each split as (pool, indices into it), before decoding."""
        cfg = self.config
        out: dict[str, tuple[_Pool, np.ndarray]] = {}
        if cfg.anomaly_digit is not None:
            pool = self._pooled(pools)
            assert pool.labels is not None
            anomalous = np.flatnonzero(pool.labels == cfg.anomaly_digit)
            normal = np.flatnonzero(pool.labels != cfg.anomaly_digit)
            if not len(anomalous):
                raise ImageDataError(f"no images of the anomalous digit {cfg.anomaly_digit}")
            shuffled = normal[
                np.random.default_rng(cfg.anomaly_split_seed).permutation(len(normal))
            ]
            n_train = int(math.floor(cfg.anomaly_train_fraction * len(normal)))
            train = shuffled[:n_train]
            out["test"] = (pool, np.concatenate([shuffled[n_train:], anomalous]))
        else:
            pool = pools["train"]
            train = np.arange(pool.size)
            if "test" in pools and pools["test"].size:
                out["test"] = (pools["test"], np.arange(pools["test"].size))
        if cfg.valid_fraction > 0:
            n_valid = max(1, round(len(train) * cfg.valid_fraction))
            if n_valid >= len(train):
                raise ValueError(
                    f"task.valid_fraction {cfg.valid_fraction} leaves no training images "
                    f"({len(train)} in train)"
                )
            is_valid = np.zeros(len(train), dtype=bool)
            is_valid[np.random.default_rng(0).permutation(len(train))[:n_valid]] = True
            out["valid"] = (pool, train[is_valid])
            train = train[~is_valid]
        if cfg.max_images is not None:
            train = train[: cfg.max_images]
        out["train"] = (pool, train)
        return {s: out[s] for s in SPLITS if s in out}

    @staticmethod
    def _pooled(pools: dict[str, _Pool]) -> _Pool:
        """The train and test images as one pool (train file first)."""
        parts = [pools[s] for s in ("train", "test") if s in pools]
        if any(p.labels is None for p in parts):
            raise ImageDataError("anomaly splits need class labels")
        images = np.concatenate([p.take(np.arange(p.size)) for p in parts])
        labels = np.concatenate([p.labels for p in parts if p.labels is not None])
        return _array_pool(images, labels)

    def _load(self) -> None:
        """Read the data and build the splits (once)."""
        if self._images:
            return
        cfg = self.config
        pools = self._read_pools()
        splits = self._split_indices(pools)
        side = self._side()
        for split, (pool, index) in splits.items():
            images = pool.take(index)
            if side is not None and cfg.dataset in _NATIVE_SIDE:
                images = resize_images(images, side)
            self._images[split] = images
            self._source_index[split] = index
            self._labels[split] = None if pool.labels is None else pool.labels[index]
            if cfg.anomaly_digit is not None:
                labels = self._labels[split]
                assert labels is not None
                self._anomalous[split] = (labels == cfg.anomaly_digit).astype(np.int64)
        shape = tuple(int(s) for s in self._images["train"].shape[1:])
        if len(self._images["train"]) == 0:
            raise ImageDataError(f"{cfg.dataset}: no training images in {self._location()}")
        if self._state is not None:
            self._check_loaded_against_state(shape)
        self._image_shape = shape  # type: ignore[assignment]

    def _check_loaded_against_state(self, shape: tuple[int, ...]) -> None:
        assert self._state is not None
        saved = tuple(int(s) for s in self._state["image_shape"])
        if shape != saved:
            raise ValueError(
                f"{self.dataset} images are {shape} but the checkpoint's task had {saved}: "
                "the data changed"
            )
        sizes = self._state.get("split_sizes", {})
        same_slicing = self._state.get("valid_fraction") == self.config.valid_fraction and (
            self._state.get("max_images") == self.config.max_images
        )
        for split, n in sizes.items():
            if split not in self._images or (split != "test" and not same_slicing):
                continue
            if len(self._images[split]) != int(n):
                raise ValueError(
                    f"{self.dataset} split {split!r} has {len(self._images[split])} images but "
                    f"the checkpoint's task had {n}: the data changed"
                )

    def _split_images(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        self._load()
        if split not in self._images:
            raise ValueError(
                f"split {split!r} is not configured for {self.dataset} (splits: "
                f"{', '.join(self._images)}); valid needs task.valid_fraction > 0"
            )
        return self._images[split]

    # ---------------------------------------------------------------- public API

    @property
    def splits(self) -> list[str]:
        """The split names (``train``, then ``valid`` / ``test`` where present)."""
        self._load()
        return list(self._images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        if self._image_shape is None:
            self._load()
        assert self._image_shape is not None
        return self._image_shape

    @property
    def default_metrics(self) -> tuple[str, ...]:
        """What ``latentebm evaluate`` computes unless told: ``("anomaly", "mse")`` for the
        anomaly splits, else ``("mse",)`` (``fid`` needs a feature network to be named)."""
        return ("anomaly", "mse") if self.config.anomaly_digit is not None else ("mse",)

    def num_sentences(self, split: str) -> int:
        """Number of images in ``split`` (the name the training loop uses)."""
        return len(self._split_images(split))

    def num_examples(self, split: str) -> int:
        """Number of images in ``split``."""
        return len(self._split_images(split))

    def images(self, split: str) -> np.ndarray:
        """The ``uint8 (N, C, H, W)`` images of ``split`` (a read-only view)."""
        view = self._split_images(split).view()
        view.flags.writeable = False
        return view

    def labels(self, split: str) -> np.ndarray:
        """Class labels (digits for MNIST/SVHN, classes for CIFAR-10) aligned with ``split``."""
        self._split_images(split)
        labels = self._labels[split]
        if labels is None:
            raise ValueError(f"dataset {self.dataset!r} has no class labels")
        return labels.copy()

    def anomaly_labels(self, split: str) -> np.ndarray:
        """1 for an anomalous image (class ``anomaly_digit``), 0 for a normal one, aligned with
        ``split`` (train and valid are all normal)."""
        if self.config.anomaly_digit is None:
            raise ValueError("anomaly_labels needs the anomaly splits (set anomaly.digit)")
        self._split_images(split)
        return self._anomalous[split].copy()

    def source_index(self, split: str) -> np.ndarray:
        """Where each image of ``split`` comes from: its position in the data set's training
        file (its test file for ``test``), or, for the anomaly splits, in the pool of both
        (training file first)."""
        self._split_images(split)
        return self._source_index[split].copy()

    def tensor(
        self, split: str, index: np.ndarray | Tensor | Sequence[int] | None = None
    ) -> Tensor:
        """Images of ``split`` (all, or those at ``index``) as ``float32`` in ``[-1, 1]``."""
        images = self._split_images(split)
        if index is not None:
            idx = index.cpu().numpy() if isinstance(index, Tensor) else np.asarray(index)
            images = images[idx.astype(np.int64)]
        return to_float(images)

    def _split(self, split: str) -> _Batchable:
        """The split for :class:`~latentebm.tasks.batching.BucketedBatches` (equal lengths:
        batches are random, not bucketed)."""
        images = self._split_images(split)
        return _Batchable(images, np.zeros(len(images), dtype=np.int64))

    def _batch(self, data: _Batchable, index: np.ndarray) -> Tensor:
        return to_float(data.images[index])

    throughput_unit = "images"
    """What :meth:`num_target_tokens` counts: the training log's rate is ``images_per_s``."""

    def num_target_tokens(self, x: Tensor) -> int:
        """Examples in a batch (images; the training loop's ``images_per_s`` counts them)."""
        return int(x.shape[0])

    def generator_kwargs(self) -> dict[str, Any]:
        """``{"image_shape": (C, H, W)}`` for the image generator."""
        return {"image_shape": self.image_shape}

    def save_samples(self, images: Tensor, path: str | os.PathLike[str]) -> Path:
        """Write ``images`` (``(B, C, H, W)`` in ``[-1, 1]``) as a PNG grid at
        ``path.with_suffix(".png")`` (atomically); returns that path."""
        return save_grid(images, Path(path).with_suffix(".png"))

    def draw_grid(self, images: Tensor, path: str | os.PathLike[str]) -> Path:
        """:meth:`save_samples` (``latentebm generate --grid``)."""
        if not isinstance(images, Tensor | np.ndarray):
            raise TypeError(
                f"draw_grid needs an image tensor (B, C, H, W), got {type(images).__name__}"
            )
        return self.save_samples(images, path)  # type: ignore[arg-type]

    def decode(self, images: Tensor) -> list[str]:
        """One line per image, ``image i: mean=..., min=..., max=...``, so that text-oriented
        code paths (sample logs) work."""
        flat = images.detach().float().flatten(1).cpu()
        return [
            f"image {i}: mean={row.mean():.4f}, min={row.min():.4f}, max={row.max():.4f}"
            for i, row in enumerate(flat)
        ]

    def state_dict(self) -> dict[str, Any]:
        """Plain settings and sizes for checkpoints (``weights_only`` safe): dataset, image
        shape and size, anomaly settings, valid/max settings and split sizes."""
        cfg = self.config
        sizes = (
            {s: len(a) for s, a in self._images.items()}
            if self._images
            else dict((self._state or {}).get("split_sizes", {}))
        )
        return {
            "dataset": cfg.dataset,
            "image_shape": list(self.image_shape),
            "image_size": cfg.image_size,
            "valid_fraction": cfg.valid_fraction,
            "max_images": cfg.max_images,
            "anomaly_digit": cfg.anomaly_digit,
            "anomaly_train_fraction": cfg.anomaly_train_fraction,
            "anomaly_split_seed": cfg.anomaly_split_seed,
            "split_sizes": {str(k): int(v) for k, v in sizes.items()},
        }

    def describe(self) -> str:
        """One line: data set, image shape, images per split, anomaly digit."""
        self._load()
        c, h, w = self.image_shape
        parts = " / ".join(f"{s} {len(a)}" for s, a in self._images.items())
        text = f"images ({self.dataset}, {c}x{h}x{w}): {parts}"
        if self.config.anomaly_digit is not None:
            n_anomalous = int(self._anomalous["test"].sum()) if "test" in self._anomalous else 0
            text += (
                f"; anomalous digit {self.config.anomaly_digit} ({n_anomalous} in test, "
                f"train fraction {self.config.anomaly_train_fraction}, "
                f"split seed {self.config.anomaly_split_seed})"
            )
        return text

    def __repr__(self) -> str:
        return f"ImageTask(dataset={self.dataset!r}, path={self.config.path!r})"
