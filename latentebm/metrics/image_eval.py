"""Image evaluations of a trained latent EBM (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning
Latent Space Energy-Based Prior Model", Section 3): anomaly AUPRC (Table 4), reconstruction error
and FID of generated images (Table 1), each as a plain dict of numbers plus the settings used
(JSON-ready).

``task`` is an image task (``latentebm.tasks.images.ImageTask``):
``task.batches(split, batch_size, seed=, epoch=, shuffle=)`` yields float image batches
``(B, C, H, W)`` in ``[-1, 1]``,
``task.tensor(split)`` all images of a split, ``task.anomaly_labels(split)`` 0/1 labels
(1 = anomalous). Batches are read in order (``shuffle=False``), so scores and labels line up.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentebm.metrics.anomaly import anomaly_scores, auprc, average_precision
from latentebm.metrics.fid import FeatureExtractor, compute_statistics, frechet_distance
from latentebm.progress import ProgressLines
from latentebm.task_contract import AnomalySplit, ImageTensors

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_METRICS",
    "ImageEvalSettings",
    "evaluate_anomaly",
    "evaluate_fid",
    "evaluate_image_metrics",
    "evaluate_reconstruction",
    "generate_images",
]


def _ordered_batches(task: Any, split: str, batch_size: int, seed: int) -> list[Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return list(task.batches(split, batch_size, seed=seed, epoch=0, shuffle=False))


def _chain_generator(model: Any, seed: int) -> torch.Generator:
    return torch.Generator(model.device).manual_seed(seed)


def evaluate_anomaly(
    model: Any,
    task: Any,
    *,
    split: str = "test",
    n_steps: int | None = None,
    n_chains: int = 1,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """AUPRC of Pang et al.'s anomaly score on ``split`` (Table 4), anomalous = positive class.

    Scores are :func:`latentebm.metrics.anomaly.anomaly_scores` (negative unnormalised log
    joint after a posterior chain, averaged over ``n_chains`` chains; higher = more anomalous).

    Returns:
        ``auprc`` (trapezoid area, as Table 4), ``average_precision``, ``n_anomalous``,
        ``n_normal``, ``n_steps`` (the posterior chain length used), ``n_chains``, ``split``,
        ``batch_size``, ``seed``, ``mean_score_anomalous``, ``mean_score_normal``, ``seconds``.

    Raises:
        ValueError: the number of labels differs from the number of images, or one class is
            missing from the split.
    """
    started = time.perf_counter()
    labels = np.asarray(task.anomaly_labels(split)).astype(np.int64).ravel()
    generator = _chain_generator(model, seed)
    scores: list[np.ndarray] = []
    with ProgressLines(logger, f"anomaly scores of {split}", len(labels), "images") as progress:
        for batch in _ordered_batches(task, split, batch_size, seed):
            s = anomaly_scores(
                model, batch, n_steps=n_steps, n_chains=n_chains, generator=generator
            )
            scores.append(s.double().cpu().numpy())
            progress.update(batch.shape[0])
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    if all_scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"split {split!r}: {all_scores.shape[0]} images but {labels.shape[0]} anomaly labels"
        )
    steps = model.posterior_chain.n_steps if n_steps is None else int(n_steps)
    return {
        "auprc": auprc(labels, all_scores),
        "average_precision": average_precision(labels, all_scores),
        "n_anomalous": int(labels.sum()),
        "n_normal": int((labels == 0).sum()),
        "mean_score_anomalous": float(all_scores[labels == 1].mean()),
        "mean_score_normal": float(all_scores[labels == 0].mean()),
        "split": split,
        "n_steps": steps,
        "n_chains": int(n_chains),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "seconds": time.perf_counter() - started,
    }


def _decode_mean(model: Any, z: Tensor) -> Tensor:
    """``g_beta(z)``: the generator's mean image (``mean``, else ``sample``)."""
    gen = model.generator
    with torch.no_grad():
        return gen.mean(z) if hasattr(gen, "mean") else gen.sample(z)


def evaluate_reconstruction(
    model: Any,
    task: Any,
    *,
    split: str = "test",
    n: int | None = None,
    n_steps: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """Reconstruction error: posterior Langevin from noise (K1 steps, or ``n_steps``), then the
    generator mean ``g_beta(z)``; mean squared error per pixel against the input.

    Returns:
        ``mse_per_pixel`` (on the task's ``[-1, 1]`` pixel scale), ``mse_per_pixel_01`` (the
        same on the ``[0, 1]`` scale, i.e. divided by 4), ``scale`` (``"[-1, 1]"``), ``n``
        (images used: the first ``n`` of the split in order, default all), ``split``,
        ``n_steps``, ``batch_size``, ``seed``, ``seconds``.
    """
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    generator = _chain_generator(model, seed)
    squared_error, n_pixels, n_images = 0.0, 0, 0
    batches = _ordered_batches(task, split, batch_size, seed)
    total = sum(b.shape[0] for b in batches) if n is None else n
    progress = ProgressLines(logger, f"reconstructions of {split}", total, "images")
    try:
        with progress:
            for batch in batches:
                if n is not None and n_images >= n:
                    break
                x = batch if n is None else batch[: n - n_images]
                x = x.to(model.device)
                z = model.sample_posterior(x, generator=generator, n_steps=n_steps).z
                recon = _decode_mean(model, z).reshape(x.shape)
                squared_error += float((recon.double() - x.double()).pow(2).sum())
                n_pixels += x.numel()
                n_images += x.shape[0]
                progress.update(x.shape[0])
    finally:
        model.train(was_training)
    if n_images == 0:
        raise ValueError(f"split {split!r} has no images")
    mse = squared_error / n_pixels
    return {
        "mse_per_pixel": mse,
        "mse_per_pixel_01": mse / 4.0,
        "scale": "[-1, 1]",
        "n": n_images,
        "split": split,
        "n_steps": model.posterior_chain.n_steps if n_steps is None else int(n_steps),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "seconds": time.perf_counter() - started,
    }


def generate_images(
    model: Any, n_samples: int, *, batch_size: int = 500, seed: int = 0, n_steps: int | None = None
) -> Tensor:
    """``n_samples`` images by ancestral sampling: prior chain (K0 steps, or ``n_steps``) from
    ``N(0, sigma^2 I)``, then ``model.generator.sample(z)``; on the CPU."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    generator = _chain_generator(model, seed)
    out: list[Tensor] = []
    try:
        with ProgressLines(logger, "generated images", n_samples, "images") as progress:
            for start in range(0, n_samples, batch_size):
                k = min(batch_size, n_samples - start)
                out.append(model.generate(k, generator=generator, n_steps=n_steps).detach().cpu())
                progress.update(k)
    finally:
        model.train(was_training)
    return torch.cat(out)


def evaluate_fid(
    model: Any,
    task: Any,
    extractor: FeatureExtractor,
    *,
    n_samples: int,
    split: str = "test",
    seed: int = 0,
    batch_size: int = 500,
    feature_name: str,
    n_steps: int | None = None,
    reference_statistics: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Fréchet distance between features of generated images and of the split's images.

    Generated: ``n_samples`` images from the prior chain (:func:`generate_images`). Reference:
    every image of ``task.tensor(split)``. Both go through the same ``extractor``; the
    distance is named by ``feature_name`` (e.g. ``"inception-2015-12-05"`` or
    ``"mnist-cnn"``): distances of different feature networks are not comparable, and FID is
    biased upwards at small ``n_samples`` (compare at equal ``n_samples`` only).
    ``reference_statistics``: precomputed ``(mu, sigma)`` of the split's features with the same
    extractor (e.g. from :func:`latentebm.metrics.fid.compute_statistics`), to skip that pass;
    ``n_reference`` is then ``None``.

    Returns:
        ``fid``, ``feature``, ``n_samples``, ``n_reference``, ``split``, ``n_steps`` (prior
        chain length), ``batch_size``, ``seed``, ``seconds``.
    """
    if not feature_name:
        raise ValueError("feature_name must name the feature network (e.g. 'mnist-cnn')")
    started = time.perf_counter()
    samples = generate_images(model, n_samples, batch_size=batch_size, seed=seed, n_steps=n_steps)
    mu_gen, sigma_gen = compute_statistics(extractor, samples, batch_size)
    n_reference: int | None = None
    if reference_statistics is None:
        reference = task.tensor(split)
        n_reference = int(reference.shape[0])
        mu_ref, sigma_ref = compute_statistics(extractor, reference, batch_size)
    else:
        mu_ref, sigma_ref = reference_statistics
    return {
        "fid": frechet_distance(mu_gen, sigma_gen, mu_ref, sigma_ref),
        "feature": feature_name,
        "n_samples": int(n_samples),
        "n_reference": n_reference,
        "split": split,
        "n_steps": model.prior_chain.n_steps if n_steps is None else int(n_steps),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "seconds": time.perf_counter() - started,
    }


IMAGE_METRICS: tuple[str, ...] = ("anomaly", "mse", "fid")
"""The ``latentebm evaluate`` metrics of an image task."""


@dataclass
class ImageEvalSettings:
    """Settings of the image metrics of ``latentebm evaluate`` (``anomaly``, ``mse``, ``fid``).

    Attributes:
        anomaly_steps: posterior chain length of the anomaly score (None: the model's K1).
        anomaly_chains: independent chains averaged per image.
        recon_images: reconstruct the first N images of the split (None: all).
        recon_steps: posterior chain length before decoding (None: K1).
        fid_samples: generated images for FID.
        langevin_steps: prior chain of the FID samples (None: K0).
        fid_features: a feature network saved by ``latentebm mnist-features`` (MNIST-FID).
        inception: NVIDIA's ``inception-2015-12-05.pt`` TorchScript file (the standard FID).
        fid_reference: the split FID compares against (None: the evaluated split). The
            authors' protocol (Pang et al. 2020's public image code) is 50,000 samples against
            the training set: :meth:`authors_fid_protocol`.
        batch_size: images per chain batch.
    """

    anomaly_steps: int | None = None
    anomaly_chains: int = 1
    recon_images: int | None = None
    recon_steps: int | None = None
    fid_samples: int = 10_000
    langevin_steps: int | None = None
    fid_features: str | None = None
    inception: str | None = None
    fid_reference: str | None = None
    batch_size: int = 500

    AUTHORS_FID_SAMPLES = 50_000

    def authors_fid_protocol(self) -> ImageEvalSettings:
        """These settings with the authors' FID protocol: 50,000 samples against ``train``."""
        return dataclasses.replace(
            self, fid_samples=self.AUTHORS_FID_SAMPLES, fid_reference="train"
        )


def fid_extractor(settings: ImageEvalSettings) -> tuple[FeatureExtractor, str, dict[str, Any]]:
    """The feature network FID uses: ``(extractor, feature name, its description)``.

    Raises:
        ValueError: neither or both of ``fid_features`` and ``inception`` are given.
    """
    if (settings.fid_features is None) == (settings.inception is None):
        raise ValueError(
            "fid needs one feature network: --fid-features PATH (an MNIST-FID net from "
            "`latentebm mnist-features PATH`) or --inception PATH (inception-2015-12-05.pt)"
        )
    if settings.inception is not None:
        from latentebm.metrics.fid import load_inception_torchscript

        extractor = load_inception_torchscript(settings.inception)
        return extractor, "inception-2015-12-05", {"path": settings.inception}
    from latentebm.metrics.mnist_features import load_mnist_feature_net

    assert settings.fid_features is not None
    net = load_mnist_feature_net(settings.fid_features)
    about = {"path": settings.fid_features, **getattr(net, "info", {})}
    return net.features, "mnist-cnn (MNIST-FID: not comparable to Inception FID)", about


def evaluate_image_metrics(
    model: Any,
    task: Any,
    names: list[str],
    split: str,
    settings: ImageEvalSettings,
    *,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The requested image metrics among ``names`` (others are ignored), each a JSON-ready dict."""
    wanted = [name for name in names if name in IMAGE_METRICS]
    if wanted and not isinstance(task, ImageTensors):
        raise ValueError(f"metrics {', '.join(wanted)} need an image task")
    if "anomaly" in wanted and not isinstance(task, AnomalySplit):
        name = type(task).__name__
        raise ValueError(f"anomaly needs a task with anomaly labels; {name} has none")
    out: dict[str, dict[str, Any]] = {}
    if "anomaly" in wanted:
        out["anomaly"] = evaluate_anomaly(
            model,
            task,
            split=split,
            n_steps=settings.anomaly_steps,
            n_chains=settings.anomaly_chains,
            batch_size=settings.batch_size,
            seed=seed,
        )
    if "mse" in wanted:
        out["mse"] = evaluate_reconstruction(
            model,
            task,
            split=split,
            n=settings.recon_images,
            n_steps=settings.recon_steps,
            batch_size=settings.batch_size,
            seed=seed,
        )
    if "fid" in wanted:
        extractor, feature_name, about = fid_extractor(settings)
        entry = evaluate_fid(
            model,
            task,
            extractor,
            n_samples=settings.fid_samples,
            split=settings.fid_reference or split,
            seed=seed,
            batch_size=settings.batch_size,
            feature_name=feature_name,
            n_steps=settings.langevin_steps,
        )
        out["fid"] = {**entry, "feature_network": about}
    return out
