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
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from latentebm.data import DataFileError, data_root
from latentebm.image_io import resize_images, save_grid
from latentebm.tasks.batching import BucketedBatches
from latentebm.tasks.image_data import (
    ImageDataError,
    Pool,
    array_pool,
    read_pools,
    script_hint,
)
from latentebm.tasks.splits import (
    SPLITS,
    check_minimum,
    check_valid_fraction,
    valid_mask,
)

__all__ = ["DATASETS", "ImageDataError", "ImageTask", "to_float"]

Dataset = Literal["mnist", "cifar10", "svhn", "celeba", "folder", "array"]
DATASETS: tuple[str, ...] = ("mnist", "cifar10", "svhn", "celeba", "folder", "array")


def to_float(images: np.ndarray) -> Tensor:
    """``uint8 (N, C, H, W)`` -> ``float32`` tensor in ``[-1, 1]``: ``x / 127.5 - 1``; float
    images (the ``array`` data set) are taken as they are."""
    if images.dtype.kind == "f":
        return torch.from_numpy(np.array(images, dtype=np.float32, copy=True))
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)


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
            check_minimum("image_size", self.image_size, 1)
            check_valid_fraction(self.valid_fraction)
            check_minimum("max_images", self.max_images, 1)
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
                f"LATENTEBM_DATA or data.root{script_hint(cfg.dataset, '<data root>/' + name)}"
            )
        return root / path

    def _side(self) -> int | None:
        cfg = self.config
        if cfg.image_size is not None:
            return cfg.image_size
        return 64 if cfg.dataset == "celeba" else None

    def _read_pools(self) -> dict[str, Pool]:
        return read_pools(self.config.dataset, self._location(), self._side())

    def _split_indices(self, pools: dict[str, Pool]) -> dict[str, tuple[Pool, np.ndarray]]:
        """Each split as (pool, indices into it), before decoding."""
        cfg = self.config
        out: dict[str, tuple[Pool, np.ndarray]] = {}
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
            is_valid = valid_mask(
                len(train),
                cfg.valid_fraction,
                none_left=f"task.valid_fraction {cfg.valid_fraction} leaves no training images "
                f"({len(train)} in train)",
            )
            out["valid"] = (pool, train[is_valid])
            train = train[~is_valid]
        if cfg.max_images is not None:
            train = train[: cfg.max_images]
        out["train"] = (pool, train)
        return {s: out[s] for s in SPLITS if s in out}

    @staticmethod
    def _pooled(pools: dict[str, Pool]) -> Pool:
        """The train and test images as one pool (train file first)."""
        parts = [pools[s] for s in ("train", "test") if s in pools]
        if any(p.labels is None for p in parts):
            raise ImageDataError("anomaly splits need class labels")
        images = np.concatenate([p.take(np.arange(p.size)) for p in parts])
        labels = np.concatenate([p.labels for p in parts if p.labels is not None])
        return array_pool(images, labels)

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
