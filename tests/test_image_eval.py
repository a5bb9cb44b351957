"""Tests of the image evaluations (anomaly AUPRC, reconstruction MSE, FID) and image tools
(interpolation, long prior chains) on a tiny linear-Gaussian image model and a stand-in task.

Closed forms used (docs/conventions.md, linear-Gaussian model ``x = W z + b + tau eps``):

* a generator whose ``W = 0`` reconstructs every image as ``b``: MSE = mean (x - b)^2;
* generated images ``W z + b`` with ``z ~ N(0, sigma^2 I)`` (a Gaussian prior: no chain) are
  ``N(b, sigma^2 W W^T)``; shifting the reference images by ``delta`` adds ``||delta||^2`` to
  the Fréchet distance of the flattened pixels;
* the decoded interpolation is affine in ``t``: ``g((1-t) z_a + t z_b) = (1-t) g(z_a) + t g(z_b)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from latentebm.image_tools import (
    chain_record_steps,
    interpolate,
    long_run_prior_chain,
    plot_energy_profile,
)
from latentebm.langevin import LangevinSampler
from latentebm.metrics.anomaly import anomaly_scores, auprc
from latentebm.metrics.fid import compute_statistics, frechet_distance
from latentebm.metrics.image_eval import (
    ImageEvalSettings,
    evaluate_anomaly,
    evaluate_fid,
    evaluate_image_metrics,
    evaluate_reconstruction,
    generate_images,
)
from latentebm.model import LatentEBM
from latentebm.prior import EnergyPrior, GaussianPrior

Z_DIM, SIDE, TAU = 2, 3, 0.2


class LinearImageGenerator(nn.Module):
    """``p(x | z) = N(x; W z + b, tau^2 I)`` over ``(B, 1, SIDE, SIDE)`` images (normalised)."""

    def __init__(self, weight_scale: float = 0.5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.weight = nn.Parameter(weight_scale * torch.randn(SIDE * SIDE, Z_DIM, generator=g))
        self.bias = nn.Parameter(0.1 * torch.randn(SIDE * SIDE, generator=g))
        self.tau = TAU

    def mean(self, z: Tensor) -> Tensor:
        return (z @ self.weight.T + self.bias).reshape(z.shape[0], 1, SIDE, SIDE)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        sq = (x - self.mean(z)).pow(2).flatten(1).sum(dim=1)
        return -sq / (2 * TAU**2) - 0.5 * SIDE * SIDE * math.log(2 * math.pi * TAU**2)

    def sample(self, z: Tensor, **_: object) -> Tensor:
        return self.mean(z)


class FakeImageTask:
    """The parts of ``latentebm.tasks.images.ImageTask`` the evaluations use, over fixed tensors."""

    def __init__(self, images: Tensor, anomaly_labels: np.ndarray | None = None) -> None:
        self.images = images
        self.labels = anomaly_labels

    def batches(
        self, split: str, batch_size: int, *, seed: int, epoch: int, shuffle: bool
    ) -> list[Tensor]:
        assert split == "test" and not shuffle
        return list(self.images.split(batch_size))

    def tensor(self, split: str) -> Tensor:
        return self.images

    def anomaly_labels(self, split: str) -> np.ndarray:
        assert self.labels is not None
        return self.labels


def make_model(prior: GaussianPrior | None = None, weight_scale: float = 0.5) -> LatentEBM:
    torch.manual_seed(0)
    prior = EnergyPrior(Z_DIM, hidden_dims=(8,)) if prior is None else prior
    return LatentEBM(
        prior,
        LinearImageGenerator(weight_scale),
        LangevinSampler(6, 0.4),
        LangevinSampler(15, 0.1),
    )


def clone(g: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(g.get_state())
    return twin


def model_images(model: LatentEBM, n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = model.generator.mean(torch.randn(n, Z_DIM, generator=g))
        return x + TAU * torch.randn(x.shape, generator=g)


# ----------------------------------------------------------------------- anomaly
def test_evaluate_anomaly_separates_anomalies_and_reports_settings() -> None:
    model = make_model()
    normal = model_images(model, 60, seed=1)
    anomalous = model_images(model, 15, seed=2)
    anomalous = anomalous + torch.randn(anomalous.shape, generator=torch.Generator().manual_seed(3))
    labels = np.r_[np.zeros(60), np.ones(15)].astype(int)
    task = FakeImageTask(torch.cat([normal, anomalous]), labels)
    result = evaluate_anomaly(model, task, batch_size=20, n_chains=2, seed=4)
    assert result["n_anomalous"] == 15 and result["n_normal"] == 60
    assert result["n_steps"] == 15 and result["n_chains"] == 2
    assert result["auprc"] > 0.9  # chance level 0.2
    assert result["mean_score_anomalous"] > result["mean_score_normal"]
    json.dumps(result)  # plain numbers and strings

    # batching does not change what is scored: the same scores as one call on the whole set
    g = torch.Generator().manual_seed(4)
    scores = torch.cat(
        [anomaly_scores(model, b, n_chains=2, generator=g) for b in task.images.split(20)]
    )
    assert result["auprc"] == pytest.approx(auprc(labels, scores.numpy()))


def test_evaluate_anomaly_label_count_mismatch_raises() -> None:
    model = make_model()
    task = FakeImageTask(model_images(model, 10, seed=0), np.r_[np.zeros(5), np.ones(4)])
    with pytest.raises(ValueError, match="10 images but 9 anomaly labels"):
        evaluate_anomaly(model, task, n_steps=1)


# ----------------------------------------------------------------------- reconstruction
def test_reconstruction_mse_closed_form_when_the_generator_ignores_z() -> None:
    model = make_model(weight_scale=0.0)  # g(z) = b for every z
    images = model_images(model, 30, seed=5)
    task = FakeImageTask(images)
    result = evaluate_reconstruction(model, task, n=25, n_steps=3, batch_size=10)
    bias = model.generator.bias.detach().reshape(1, 1, SIDE, SIDE)
    expected = float((images[:25] - bias).double().pow(2).mean())
    assert result["n"] == 25 and result["n_steps"] == 3 and result["scale"] == "[-1, 1]"
    assert result["mse_per_pixel"] == pytest.approx(expected, rel=1e-6)
    assert result["mse_per_pixel_01"] == pytest.approx(expected / 4, rel=1e-6)


def test_reconstruction_of_model_images_beats_the_mean_image() -> None:
    model = make_model(GaussianPrior(Z_DIM))
    images = model_images(model, 40, seed=6)
    result = evaluate_reconstruction(model, FakeImageTask(images), n_steps=60)
    baseline = float((images - images.mean(dim=0)).pow(2).mean())
    assert result["n"] == 40
    assert result["mse_per_pixel"] < 0.5 * baseline


# ----------------------------------------------------------------------- FID
def flatten_extractor(images: Tensor) -> Tensor:
    return images.flatten(1)


def test_evaluate_fid_matches_statistics_of_generated_images() -> None:
    model = make_model(GaussianPrior(Z_DIM))
    reference = model_images(model, 50, seed=7)
    task = FakeImageTask(reference)
    result = evaluate_fid(
        model, task, flatten_extractor, n_samples=40, batch_size=15, seed=2, feature_name="pixels"
    )
    samples = generate_images(model, 40, batch_size=15, seed=2)
    assert samples.shape == (40, 1, SIDE, SIDE)
    expected = frechet_distance(
        *compute_statistics(flatten_extractor, samples),
        *compute_statistics(flatten_extractor, reference),
    )
    assert result["fid"] == pytest.approx(expected)
    assert result["feature"] == "pixels" and result["n_samples"] == 40
    assert result["n_reference"] == 50
    precomputed = evaluate_fid(
        model,
        task,
        flatten_extractor,
        n_samples=40,
        batch_size=15,
        seed=2,
        feature_name="pixels",
        reference_statistics=compute_statistics(flatten_extractor, reference),
    )
    assert precomputed["fid"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="feature_name"):
        evaluate_fid(model, task, flatten_extractor, n_samples=4, feature_name="")


def test_authors_fid_protocol_is_50k_samples_against_the_training_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dataclasses

    from latentebm.metrics import image_eval

    settings = ImageEvalSettings().authors_fid_protocol()
    assert settings.fid_samples == 50_000 and settings.fid_reference == "train"
    model = make_model(GaussianPrior(Z_DIM))
    seen: list[str] = []

    class SplitTask(FakeImageTask):
        def tensor(self, split: str) -> Tensor:
            seen.append(split)
            return self.images

    monkeypatch.setattr(image_eval, "fid_extractor", lambda _: (flatten_extractor, "pixels", {}))
    small = dataclasses.replace(settings, fid_samples=20)
    out = evaluate_image_metrics(
        model, SplitTask(model_images(model, 30, seed=1)), ["fid"], "test", small
    )
    assert seen == ["train"] and out["fid"]["split"] == "train" and out["fid"]["n_samples"] == 20


def test_fid_grows_by_the_squared_shift_of_the_reference() -> None:
    # Reference images from the generated law itself, N(b, sigma^2 W W^T) (no pixel noise):
    # the matched FID is sampling error only. Shifting the reference by delta (every pixel)
    # leaves its covariance unchanged and moves its mean, so exactly
    #   FID_shifted - FID_matched = ||m_g - m_r - delta||^2 - ||m_g - m_r||^2
    #                             = D delta^2 - 2 delta sum(m_g - m_r).
    model = make_model(GaussianPrior(Z_DIM))
    with torch.no_grad():
        z = torch.randn(400, Z_DIM, generator=torch.Generator().manual_seed(8))
        reference = model.generator.mean(z)
    delta = 0.5
    matched = evaluate_fid(
        model, FakeImageTask(reference), flatten_extractor, n_samples=400, feature_name="px"
    )
    shifted = evaluate_fid(
        model, FakeImageTask(reference + delta), flatten_extractor, n_samples=400, feature_name="px"
    )
    mean_gap = float(
        (generate_images(model, 400).double() - reference.double().mean(0)).mean(0).sum()
    )
    expected_gap = SIDE * SIDE * delta**2 - 2 * delta * mean_gap
    assert matched["fid"] < 0.1  # vs 2.25 for the shift
    assert shifted["fid"] - matched["fid"] == pytest.approx(
        expected_gap, abs=1e-4
    )  # float32 pixels


# ----------------------------------------------------------------------- image tools
def test_interpolation_is_affine_between_posterior_decodings() -> None:
    model = make_model()
    x = model_images(model, 2, seed=9)
    g = torch.Generator().manual_seed(10)
    z = model.sample_posterior(x, generator=clone(g)).z
    images = interpolate(model, x[0], x[1:2], 5, generator=g)
    assert images.shape == (5, 1, SIDE, SIDE)
    with torch.no_grad():
        ends = model.generator.mean(z)
    for i, t in enumerate(np.linspace(0, 1, 5)):
        torch.testing.assert_close(images[i], (1 - t) * ends[0] + t * ends[1])
    with pytest.raises(ValueError, match="n_points"):
        interpolate(model, x[0], x[1], 1)
    with pytest.raises(ValueError, match="one image"):
        interpolate(model, x, x, 3)


def test_long_run_prior_chain_records_images_and_energies() -> None:
    model = make_model()
    g = torch.Generator().manual_seed(11)
    images, energies = long_run_prior_chain(model, 4, 25, 10, generator=g)
    steps = chain_record_steps(25, 10)
    assert steps == [0, 10, 20, 25]
    assert images.shape == (4, 4, 1, SIDE, SIDE) and energies.shape == (4, 4)
    # the same chain, re-run: its start and end decode to the first and last recorded images
    twin = clone(torch.Generator().manual_seed(11))
    z_start = model.prior.sample_reference(4, generator=clone(twin))
    z_end = model.sample_prior(4, generator=twin, n_steps=25).z
    with torch.no_grad():
        torch.testing.assert_close(images[0], model.generator.mean(z_start))
        torch.testing.assert_close(images[-1], model.generator.mean(z_end))
        torch.testing.assert_close(energies[0], model.prior.energy(z_start))
        torch.testing.assert_close(energies[-1], model.prior.energy(z_end))


def test_plot_energy_profile_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot_energy_profile(
        torch.randn(4, 3), tmp_path / "plots" / "energy.png", steps=[0, 10, 20, 25]
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["energy.png"]
    with pytest.raises(ValueError, match="steps has 2 entries"):
        plot_energy_profile(torch.randn(4, 3), tmp_path / "bad.png", steps=[0, 1])
