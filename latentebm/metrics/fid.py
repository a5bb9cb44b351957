"""Fréchet distance between feature statistics (FID) with a pluggable feature network.

The Fréchet Inception Distance (Heusel et al. 2017) fits a Gaussian to the features of real and
of generated images and reports the Fréchet (2-Wasserstein) distance between the two::

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model", report FIDs
of generated SVHN / CelebA / CIFAR-10 images with the standard Inception network. The feature
network here is any :class:`FeatureExtractor`: the Inception TorchScript file NVIDIA publishes
(:func:`load_inception_torchscript`, never downloaded by this toolkit), or the small MNIST
classifier of :mod:`latentebm.metrics.mnist_features` ("MNIST-FID"). Distances computed with
different feature networks are different quantities and are never comparable;
record the feature network with every number (the ``feature`` key of
:func:`latentebm.metrics.image_eval.evaluate_fid`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from latentebm.errors import require

__all__ = [
    "INCEPTION_URL",
    "FeatureExtractor",
    "activation_statistics",
    "compute_statistics",
    "frechet_distance",
    "load_inception_torchscript",
]

#: where NVIDIA publishes the TorchScript Inception-v3 of StyleGAN2-ADA / clean-fid.
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
    "inception-2015-12-05.pt"
)


class FeatureExtractor(Protocol):
    """A feature network: images ``(B, C, H, W)``, float in ``[-1, 1]`` -> features ``(B, F)``."""

    def __call__(self, images: Tensor) -> Tensor: ...


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = 1e-6,
    imaginary_tolerance: float = 1e-3,
) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` between two Gaussians.

    Computed in float64 as pytorch-fid does: ``scipy.linalg.sqrtm(S1 S2)``; if the product is
    singular (scipy warns; e.g. fewer samples than feature dimensions) or the root is not
    finite, ``eps * I`` is added to both covariances and the root recomputed (the traces of
    ``S1`` and ``S2`` are the original ones). Rounding leaves tiny imaginary parts in the
    root: they are dropped when every diagonal imaginary part is within
    ``imaginary_tolerance``, else a ValueError is raised.

    Raises:
        ValueError: shapes do not match, or the square root has a large imaginary part.
    """
    linalg = require("scipy.linalg", "image", "the Frechet distance")

    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"means have different shapes: {mu1.shape} and {mu2.shape}")
    if s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"covariances {s1.shape} and {s2.shape} do not match means of size {mu1.size}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        largest = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if largest > imaginary_tolerance:
            raise ValueError(
                f"the matrix square root has an imaginary component of {largest:.3g} "
                f"(> {imaginary_tolerance}): the covariances are not valid covariance matrices"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``, unbiased: divides by ``n - 1``) of ``features (n, F)``.

    Raises:
        ValueError: ``features`` is not 2-D or has fewer than 2 rows.
    """
    act = np.asarray(features, dtype=np.float64)
    if act.ndim != 2:
        raise ValueError(f"features must be 2-D (n, F), got shape {act.shape}")
    if act.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {act.shape[0]}")
    return act.mean(axis=0), np.cov(act, rowvar=False).reshape(act.shape[1], act.shape[1])


def _batches(images_or_batches: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images_or_batches, Tensor):
        return images_or_batches.split(batch_size)
    return images_or_batches


@torch.no_grad()
def compute_statistics(
    extractor: FeatureExtractor,
    images_or_batches: Tensor | Iterable[Tensor],
    batch_size: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the extractor's features over a set of images.

    Args:
        extractor: images ``(B, C, H, W)`` in ``[-1, 1]`` -> features ``(B, F)``.
        images_or_batches: one tensor ``(N, C, H, W)`` (cut into ``batch_size`` pieces) or an
            iterable of such batches (used as given).
        batch_size: batch size for a single tensor.

    Raises:
        ValueError: ``batch_size < 1``, no images, or the extractor's output is not ``(B, F)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    chunks: list[np.ndarray] = []
    for batch in _batches(images_or_batches, batch_size):
        features = extractor(batch)
        if features.ndim != 2 or features.shape[0] != batch.shape[0]:
            raise ValueError(
                f"the feature extractor returned shape {tuple(features.shape)} for a batch of "
                f"{batch.shape[0]} images; expected (B, F)"
            )
        chunks.append(features.detach().double().cpu().numpy())
    if not chunks:
        raise ValueError("no images to compute feature statistics on")
    return activation_statistics(np.concatenate(chunks))


class InceptionExtractor:
    """The TorchScript Inception-v3 as a :class:`FeatureExtractor` (2048-d pool features).

    Input handling follows StyleGAN2-ADA's ``metric_utils``: ``[-1, 1]`` images are mapped to
    ``[0, 255]``, rounded and cast to ``uint8``; one-channel images are repeated to three; the
    module is called with ``return_features=True`` and resizes to 299 x 299 itself (bilinear,
    inside the TorchScript code). With ``resize_to=299`` the images are first resized here
    (``F.interpolate``, bilinear) as clean-fid does, which makes the internal resize a no-op.
    """

    def __init__(
        self, module: torch.jit.ScriptModule, device: torch.device, resize_to: int | None = None
    ) -> None:
        self.module = module
        self.device = device
        self.resize_to = resize_to

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = images.to(self.device, torch.float32)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = ((x + 1.0) * 127.5).clamp(0.0, 255.0).round()
        if self.resize_to is not None:
            x = torch.nn.functional.interpolate(
                x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False
            ).clamp(0.0, 255.0)
            return self.module(x, return_features=True)
        return self.module(x.to(torch.uint8), return_features=True)


def load_inception_torchscript(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    resize_to: int | None = None,
) -> FeatureExtractor:
    """The standard FID Inception network from NVIDIA's TorchScript file (never downloaded).

    The file is ``inception-2015-12-05.pt``, the TensorFlow FID Inception-v3 converted to
    TorchScript for StyleGAN2-ADA and also used by clean-fid; get it yourself from
    :data:`INCEPTION_URL` and pass its path. The returned extractor takes images in ``[-1, 1]``
    and returns the 2048-d pool features (see :class:`InceptionExtractor` for the exact input
    conversion). FIDs from it are comparable with published Inception FIDs only at equal sample
    sizes and the same reference set.

    Security: ``torch.jit.load`` runs code stored in the file. Give only a file from a trusted
    source (check its checksum).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where to get the file).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: no such Inception TorchScript file. Download inception-2015-12-05.pt "
            f"yourself from {INCEPTION_URL} (latentebm never downloads it) and pass its path, "
            "or use the MNIST feature network (latentebm.metrics.mnist_features) for MNIST-FID."
        )
    device = torch.device(device)
    module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return InceptionExtractor(module, device, resize_to)
