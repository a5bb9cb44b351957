"""Tests of the anomaly metrics (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model", Section 3.4 / Table 4): scikit-learn's precision-recall curve, its
trapezoid area (AUPRC), average precision, and the negative-log-joint anomaly score.

The curve cases are computed by hand in the comments (scikit-learn's semantics: positive =
label 1, predicted positive when score >= threshold, the point precision 1 / recall 0 appended).
The score is checked against the closed form of a linear-Gaussian generator (docs/conventions.md):
``log p(x | z) = -||x - W z - b||^2 / (2 tau^2) - D/2 log(2 pi tau^2)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from latentebm.langevin import LangevinSampler
from latentebm.metrics.anomaly import (
    anomaly_scores,
    auprc,
    average_precision,
    precision_recall_curve,
)
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior

Z_DIM, SIDE, TAU = 2, 3, 0.3


class LinearImageGenerator(nn.Module):
    """``p(x | z) = N(x; W z + b, tau^2 I)`` over ``(B, 1, SIDE, SIDE)`` images (normalised)."""

    def __init__(self, z_dim: int = Z_DIM, side: int = SIDE, tau: float = TAU) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.shape = (1, side, side)
        self.weight = nn.Parameter(0.5 * torch.randn(side * side, z_dim, generator=g))
        self.bias = nn.Parameter(0.1 * torch.randn(side * side, generator=g))
        self.tau = tau

    def mean(self, z: Tensor) -> Tensor:
        return (z @ self.weight.T + self.bias).reshape(z.shape[0], *self.shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        d = x[0].numel()
        sq = (x - self.mean(z)).pow(2).flatten(1).sum(dim=1)
        return -sq / (2 * self.tau**2) - 0.5 * d * math.log(2 * math.pi * self.tau**2)

    def sample(self, z: Tensor, **_: object) -> Tensor:
        return self.mean(z)


def make_model(prior: GaussianPrior | None = None, posterior_steps: int = 5) -> LatentEBM:
    torch.manual_seed(0)
    prior = EnergyPrior(Z_DIM, hidden_dims=(8,)) if prior is None else prior
    return LatentEBM(
        prior,
        LinearImageGenerator(),
        LangevinSampler(5, 0.4),
        LangevinSampler(posterior_steps, 0.1),
    )


def clone(g: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(g.get_state())
    return twin


# ------------------------------------------------------------------- precision-recall curve
def test_curve_matches_hand_computed_sklearn_example() -> None:
    # labels [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]; sorted by score (desc):
    #   0.8 (1), 0.4 (0), 0.35 (1), 0.1 (0)
    # threshold 0.8: TP 1 FP 0 -> P 1,   R 1/2
    # threshold 0.4: TP 1 FP 1 -> P 1/2, R 1/2
    # threshold 0.35: TP 2 FP 1 -> P 2/3, R 1
    # threshold 0.1: TP 2 FP 2 -> P 1/2, R 1
    # increasing thresholds, then (P 1, R 0) appended.
    precision, recall, thresholds = precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1 / 2, 1, 1])
    np.testing.assert_allclose(recall, [1, 1, 1 / 2, 1 / 2, 0])
    np.testing.assert_allclose(thresholds, [0.1, 0.35, 0.4, 0.8])
    # AP = sum (R_n - R_{n-1}) P_n over increasing recall: (1/2 - 0) * 1 + (1 - 1/2) * 2/3
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # trapezoids over (R, P): (0,1)-(1/2,1): 1/2; (1/2,1)-(1/2,1/2): 0;
    # (1/2,1/2)-(1,2/3): 1/2 * (1/2 + 2/3) / 2 = 7/24; (1,2/3)-(1,1/2): 0  -> 19/24
    assert auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(19 / 24)


def test_tied_scores_enter_together() -> None:
    # labels [1, 0, 1, 0], scores [0.5, 0.5, 0.9, 0.1]; distinct thresholds 0.9, 0.5, 0.1:
    #   >= 0.9: TP 1 FP 0 -> P 1,   R 1/2
    #   >= 0.5: both tied examples enter: TP 2 FP 1 -> P 2/3, R 1
    #   >= 0.1: TP 2 FP 2 -> P 1/2, R 1
    labels, scores = [1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 3, 1, 1])
    np.testing.assert_allclose(recall, [1, 1, 1 / 2, 0])
    np.testing.assert_allclose(thresholds, [0.1, 0.5, 0.9])
    # AP: 1/2 * 1 + 1/2 * 2/3 = 5/6; trapezoid: 1/2 * 1 + 1/2 * (1 + 2/3) / 2 = 11/12
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    assert auprc(labels, scores) == pytest.approx(11 / 12)
    # the order of tied examples does not matter
    assert auprc([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(11 / 12)


def test_perfect_and_reversed_rankings() -> None:
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.8, 0.9]
    assert auprc(labels, scores) == pytest.approx(1.0)
    assert average_precision(labels, scores) == pytest.approx(1.0)
    # reversed: positives ranked last. By decreasing score the labels are 0, 0, 0, 1, 1:
    # cumulative TP 0, 0, 0, 1, 2 and FP 1, 2, 3, 3, 3, so (R, P) = (0, 0) three times,
    # (1/2, 1/4), (1, 2/5). AP = (1/2 - 0) * 1/4 + (1 - 1/2) * 2/5 = 13/40.
    reversed_scores = [-s for s in scores]
    assert average_precision(labels, reversed_scores) == pytest.approx(13 / 40)


def test_all_equal_scores_give_the_base_rate() -> None:
    # one threshold: P = 2/5, R = 1; AP = 1 * 2/5; trapezoid (0, 1)-(1, 2/5) = 7/10
    labels = [1, 0, 0, 1, 0]
    assert average_precision(labels, [0.3] * 5) == pytest.approx(2 / 5)
    assert auprc(labels, [0.3] * 5) == pytest.approx(7 / 10)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "every label is anomalous"),
        ([0, 0], [0.1, 0.2], "every label is normal"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "must be 0"),
        ([0, 1], [0.1, 0.2, 0.3], "differ in length"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([], [], "empty"),
    ],
)
def test_bad_input_raises_clear_errors(labels: list, scores: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auprc(labels, scores)


# ------------------------------------------------------------------------ anomaly scores
def test_score_without_langevin_is_the_closed_form_negative_log_joint() -> None:
    # With 0 steps, z is the chain's initial state sigma * eps; with f = 0 (Gaussian prior):
    # score = ||x - W z - b||^2 / (2 tau^2) + D/2 log(2 pi tau^2) + ||z||^2 / (2 sigma^2)
    sigma = 0.7
    model = make_model(GaussianPrior(Z_DIM, prior_sigma=sigma))
    x = torch.randn(4, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    z = sigma * torch.randn(4, Z_DIM, generator=clone(g))
    scores = anomaly_scores(model, x, n_steps=0, generator=g)
    gen = model.generator
    with torch.no_grad():
        resid = (x.flatten(1) - z @ gen.weight.T - gen.bias).pow(2).sum(dim=1)
    d = SIDE * SIDE
    expected = (
        resid / (2 * TAU**2)
        + 0.5 * d * math.log(2 * math.pi * TAU**2)
        + z.pow(2).sum(dim=1) / (2 * sigma**2)
    )
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


def test_score_is_negative_log_joint_at_the_posterior_chain_end() -> None:
    model = make_model()
    x = torch.randn(6, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(9)
    z = model.sample_posterior(x, generator=clone(g)).z  # the model's K1 = 5 steps
    with torch.no_grad():
        log_joint = model.generator.log_likelihood(x, z) + model.prior.energy(z)
        log_joint = log_joint - z.pow(2).sum(dim=1) / (2 * model.prior.prior_sigma**2)
    torch.testing.assert_close(anomaly_scores(model, x, generator=g), -log_joint)


def test_several_chains_average_the_per_chain_scores() -> None:
    model = make_model()
    x = torch.randn(5, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    twin = clone(g)
    per_chain = [anomaly_scores(model, x, n_steps=3, generator=twin) for _ in range(3)]
    averaged = anomaly_scores(model, x, n_steps=3, n_chains=3, generator=g)
    torch.testing.assert_close(averaged, torch.stack(per_chain).mean(dim=0))
    assert not torch.allclose(per_chain[0], per_chain[1])  # the chains are independent


def test_anomalies_score_higher_and_no_parameter_is_touched() -> None:
    model = make_model(posterior_steps=20)
    model.train()
    gen = model.generator
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        normal = gen.mean(torch.randn(40, Z_DIM, generator=g))
        normal = normal + TAU * torch.randn(normal.shape, generator=g)
        anomalous = normal[:10] + 1.5 * torch.randn(10, 1, SIDE, SIDE, generator=g)
    x = torch.cat([normal, anomalous])
    labels = np.r_[np.zeros(40), np.ones(10)]
    scores = anomaly_scores(model, x, generator=g)
    assert scores.shape == (50,)
    assert auprc(labels, scores.numpy()) > 0.9  # chance level is 0.2
    assert model.training  # mode restored
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_bad_chain_settings_raise() -> None:
    model = make_model()
    x = torch.zeros(2, 1, SIDE, SIDE)
    with pytest.raises(ValueError, match="n_chains"):
        anomaly_scores(model, x, n_chains=0)
    with pytest.raises(ValueError, match="n_steps"):
        anomaly_scores(model, x, n_steps=-1)
