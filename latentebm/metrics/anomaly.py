"""Anomaly detection with the latent EBM prior model (Pang, Han, Nijkamp, Zhu and Wu (2020),
"Learning Latent Space Energy-Based Prior Model", Section 3.4 and Table 4).

Pang et al. score a test image by the unnormalised log joint ``log p_theta(x, z)`` at a
posterior sample ``z ~ p_theta(z | x)`` and reports the area under the precision-recall curve
(AUPRC), with the anomalous class as the positive class. Here a *higher* score means *more
anomalous*, so the score is the negative log joint::

    score(x) = -[log p_beta(x | z) + f_alpha(z) - ||z||^2 / (2 sigma^2)],
    z = the end of a K1-step posterior Langevin chain (eq. 9) started from N(0, sigma^2 I).

The precision-recall curve, its trapezoid area and the average precision follow scikit-learn
(``precision_recall_curve``, ``auc(recall, precision)``, ``average_precision_score``), which the
authors' code and the MEG / BiGAN baselines of Table 4 use; scikit-learn itself is not needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "anomaly_scores",
    "auprc",
    "average_precision",
    "precision_recall_curve",
]


def _check_binary(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and float scores: 1-D, equal lengths, both classes present, finite scores."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({s.shape[0]}) differ in length")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values {sorted(values)}")
    if values != {0, 1}:
        only = "anomalous (1)" if values == {1} else "normal (0)"
        raise ValueError(
            f"precision-recall needs both classes; every label is {only} ({y.size} labels)"
        )
    if not np.isfinite(s).all():
        raise ValueError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return y.astype(np.int64), s


def precision_recall_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold (scikit-learn's semantics).

    Positive class: label 1 (anomalous); a higher score means more anomalous, and the example
    is predicted positive when ``score >= threshold``. Thresholds are the distinct scores in
    increasing order; examples with tied scores enter together. As in scikit-learn (>= 1.1),
    the returned precision and recall have one more entry than ``thresholds``: the final point
    ``precision = 1, recall = 0`` (no example predicted positive) is appended, so recall is
    non-increasing along the arrays.

    Returns:
        ``(precision, recall, thresholds)`` as float arrays.

    Raises:
        ValueError: shapes differ, labels are not 0/1, only one class is present, or a score is
            not finite.
    """
    y, s = _check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")  # descending, stable (as scikit-learn)
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.where(np.diff(s_sorted))[0]
    threshold_idx = np.r_[distinct, y_sorted.size - 1]
    true_pos = np.cumsum(y_sorted)[threshold_idx].astype(np.float64)
    false_pos = 1.0 + threshold_idx - true_pos
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / true_pos[-1]
    thresholds = s_sorted[threshold_idx]
    reverse = slice(None, None, -1)
    return (
        np.hstack((precision[reverse], 1.0)),
        np.hstack((recall[reverse], 0.0)),
        thresholds[reverse],
    )


def auprc(labels: Any, scores: Any) -> float:
    """Trapezoid area under the precision-recall curve: scikit-learn's
    ``auc(recall, precision)`` on :func:`precision_recall_curve` (Table 4's AUPRC).

    Raises:
        ValueError: as :func:`precision_recall_curve`.
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    # recall decreases along the arrays: the area is minus the signed trapezoid sum
    return float(-np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision ``AP = sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's step-wise sum,
    ``average_precision_score``): no interpolation between operating points.

    Raises:
        ValueError: as :func:`precision_recall_curve`.
    """
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def anomaly_scores(
    model: Any,
    x: Tensor,
    *,
    n_steps: int | None = None,
    n_chains: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pang et al.'s anomaly score (Section 3.4): the negative unnormalised log joint at a
    posterior sample; higher = more anomalous.

    For each example, a posterior Langevin chain (eq. 9, the model's K1-step sampler or
    ``n_steps`` steps) starts from ``N(0, sigma^2 I)`` (from ``q_phi(z | x)`` if the model has
    an inference model, as :meth:`~latentebm.model.LatentEBM.sample_posterior` does) and ends
    at ``z``; the score is::

        -[log p_beta(x | z) + f_alpha(z) - ||z||^2 / (2 sigma^2)]

    i.e. ``-model.posterior_log_density(x)(z)``. The terms left out, ``log Z(alpha)`` and the
    normalising constant ``d/2 log(2 pi sigma^2)`` of ``N(z; 0, sigma^2 I)``, are the same for
    every example, so they shift all scores equally and change no ranking and no AUPRC.

    With ``n_chains > 1``, ``n_chains`` independent chains run one after the other (from
    independent initial states and noise) and the per-chain scores are *averaged*, which
    lowers the Monte Carlo variance of the score (it is the mean of the negative log joint over
    chains, not the score of the best chain).

    The model is switched to eval mode for the call (and back afterwards); the chains freeze
    the parameters and the scores are computed under ``torch.no_grad``: no parameter gradient
    is computed or touched.

    Args:
        model: a :class:`latentebm.model.LatentEBM`.
        x: a batch of observations (e.g. images ``(B, C, H, W)`` in ``[-1, 1]``).
        n_steps: posterior chain length (default: the model's K1).
        n_chains: independent chains per example whose scores are averaged.
        generator: random generator for the chains' initial states and noise.

    Returns:
        scores of shape ``(B,)`` (float32, on the model's device).
    """
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    if n_steps is not None and n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    was_training = model.training
    model.eval()
    try:
        x = x.to(model.device)
        total = torch.zeros(x.shape[0], device=model.device)
        log_joint = model.posterior_log_density(x)
        for _ in range(n_chains):
            z = model.sample_posterior(x, generator=generator, n_steps=n_steps).z
            with torch.no_grad():
                total += -log_joint(z).float()
        return total / n_chains
    finally:
        model.train(was_training)
