"""The Fréchet ChemNet Distance: ChemNet activations from fcd_torch (:func:`chemnet_activations`),
their mean and covariance (:func:`fcd_statistics`), the Fréchet distance of two Gaussians
(:func:`frechet_distance`) and :func:`fcd`.

:data:`FCD_PIECE` is read here (set ``latentebm.metrics.molecules.frechet.FCD_PIECE``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from latentebm.errors import require
from latentebm.metrics.molecules.parallel import valid_canonical
from latentebm.progress import ProgressLines

logger = logging.getLogger("latentebm.metrics.molecules")  # the package's name, kept

FCD_PIECE = 1000
"""Molecules per ChemNet pass of :func:`chemnet_activations`. fcd_torch's memory grows with the
molecules of one call (measured: +0.6 GiB for 2,000, +0.9 GiB for 4,000; a 10,000-molecule call
took ``data_scripts/moses.py`` to 2.24 GiB), so passes stay small; progress is said between
them. Each pass starts fcd_torch's data-loading worker afresh (a fork: cheap next to the pass)."""


@lru_cache(maxsize=2)
def _fcd_model(n_jobs: int, batch_size: int) -> Any:
    FCD = require("fcd_torch", "mol", "FCD").FCD

    return FCD(device="cpu", n_jobs=n_jobs, batch_size=batch_size)


def chemnet_activations(
    smiles: Sequence[str], *, device: str = "cpu", n_jobs: int = 1, batch_size: int = 512
) -> np.ndarray:
    """ChemNet penultimate activations ``(n, 512)`` from fcd_torch (its bundled weights,
    no download; SMILES canonicalised by fcd_torch as in MOSES)."""
    model = _fcd_model(max(1, int(n_jobs)), batch_size)
    model.device = device
    smiles = list(smiles)
    parts = []
    # in pieces (each molecule's activations are its own), so a long pass says how far it is
    with ProgressLines(logger, "ChemNet activations (FCD)", len(smiles), "molecules") as progress:
        for start in range(0, len(smiles), FCD_PIECE):
            piece = smiles[start : start + FCD_PIECE]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # np.row_stack in fcd_torch
                parts.append(np.asarray(model.get_predictions(piece), np.float64))
            progress.update(len(piece))
    return np.concatenate(parts) if parts else np.zeros((0, 512))


def fcd_statistics(
    smiles: Sequence[str], *, device: str = "cpu", n_jobs: int = 1, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``, n - 1) of the ChemNet activations of valid SMILES."""
    if len(smiles) < 2:
        raise ValueError(f"FCD needs at least 2 molecules, got {len(smiles)}")
    act = chemnet_activations(smiles, device=device, n_jobs=n_jobs, batch_size=batch_size)
    return act.mean(0), np.cov(act.T)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` as fcd_torch/MOSES compute it
    (``scipy.linalg.sqrtm``; ``eps * I`` added to both if the root is not finite)."""
    linalg = require("scipy.linalg", "mol", "the Frechet distance (FCD)")

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("FCD statistics have different shapes")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in FCD")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fcd(
    generated: Sequence[str],
    ref_mu: np.ndarray,
    ref_sigma: np.ndarray,
    *,
    device: str = "cpu",
    n_jobs: int = 1,
    batch_size: int = 512,
) -> float:
    """FCD of the valid molecules of ``generated`` against reference statistics."""
    valid = valid_canonical(generated)
    mu, sigma = fcd_statistics(valid, device=device, n_jobs=n_jobs, batch_size=batch_size)
    return frechet_distance(ref_mu, ref_sigma, mu, sigma)
