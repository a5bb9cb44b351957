"""Tests of the ground-truth data (latentebm.ground_truth), the image task's float arrays, the
latent-usage statistics and the quadrature reference."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latentebm.generators.conv import ConvGenerator
from latentebm.generators.linear import LinearGenerator
from latentebm.ground_truth import (
    GroundTruthConfig,
    build_true_model,
    decode,
    encode,
    load_true_model,
    true_nll_shift,
    write_dataset,
)
from latentebm.langevin import LangevinSampler
from latentebm.metrics.bdmc import simulate
from latentebm.metrics.latent_usage import latent_usage, mutual_information
from latentebm.metrics.quadrature import quadrature_log_marginal
from latentebm.mixture_prior import GaussianMixturePrior, mixture_marginal_linear_gaussian
from latentebm.model import LatentEBM
from latentebm.tasks.images import ImageDataError, ImageTask
from latentebm.tasks.text import TextTask

SMALL = {"n_train": 60, "n_valid": 10, "n_test": 12}


def test_text_data_are_the_true_models_sentences(tmp_path: Path) -> None:
    config = GroundTruthConfig(kind="text", **SMALL)
    summary = write_dataset(config, tmp_path)
    lines = (tmp_path / "test.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 12 and all(lines)  # no empty sentence
    z = torch.load(tmp_path / "test_z.pt", weights_only=True)
    assert z.shape == (12, 2)
    assert summary["splits"]["train"]["examples"] == 60
    assert 0 < summary["splits"]["train"]["acceptance"] <= 1
    assert true_nll_shift(summary) <= 0.0
    task = TextTask(
        TextTask.Config(
            train=str(tmp_path / "train.txt"),
            valid=str(tmp_path / "valid.txt"),
            test=str(tmp_path / "test.txt"),
        )
    )
    assert task.sentences("test") == lines
    assert decode(encode(lines, config), config) == lines
    model, loaded = load_true_model(tmp_path)
    assert loaded == config
    rebuilt = build_true_model(config)
    for key, value in rebuilt.generator.state_dict().items():
        assert torch.equal(value, model.generator.state_dict()[key])
    with pytest.raises(FileExistsError, match="another true model"):
        write_dataset(dataclasses.replace(config, seed=1), tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["config"]["kind"] == "text"


def test_image_data_are_continuous_arrays_the_image_task_reads(tmp_path: Path) -> None:
    config = GroundTruthConfig(kind="images", **SMALL)
    write_dataset(config, tmp_path)
    train = np.load(tmp_path / "train.npy")
    assert train.dtype == np.float32 and train.shape == (60, 1, 28, 28)
    assert float(np.abs(train).max()) > 1.0  # not clamped: exact draws of N(g(z), tau^2 I)
    task = ImageTask(dataset="array", path=str(tmp_path), valid_fraction=0.1)
    assert task.image_shape == (1, 28, 28) and set(task.splits) == {"train", "valid", "test"}
    batch = task.batches("test", 12, seed=0, epoch=0, shuffle=False)[0]
    assert torch.allclose(batch, torch.from_numpy(np.load(tmp_path / "test.npy")))


def test_linear_image_data_and_their_exact_likelihood(tmp_path: Path) -> None:
    """The linear true model writes images the image task reads, and quadrature on its 2-D
    latent space gives the closed-form log p(x) of a ring mixture through x = W z + b + noise."""
    config = GroundTruthConfig(kind="images", image_generator="linear", **SMALL)
    summary = write_dataset(config, tmp_path)
    model, loaded = load_true_model(tmp_path)
    assert loaded == config and isinstance(model.generator, LinearGenerator)
    assert summary["splits"]["train"]["information"] > 10  # z tells about x
    x = torch.from_numpy(np.load(tmp_path / "test.npy")[:5])
    linear = model.generator.linear
    exact = mixture_marginal_linear_gaussian(
        model.prior, linear.weight, linear.bias, config.likelihood_sigma, x.flatten(1)
    )
    grid = quadrature_log_marginal(model, x, limit=5.0, points=301)
    assert torch.allclose(grid.log_marginal, exact, atol=2e-3)
    write_dataset(GroundTruthConfig(kind="images", **SMALL), tmp_path / "conv")
    assert isinstance(load_true_model(tmp_path / "conv")[0].generator, ConvGenerator)
    with pytest.raises(FileExistsError, match="another true model"):
        write_dataset(GroundTruthConfig(kind="images", **SMALL), tmp_path)


def test_a_true_model_written_before_a_setting_existed_is_still_accepted(tmp_path: Path) -> None:
    """A ``true_model.pt`` without the newer keys (``image_generator``) means their defaults."""
    config = GroundTruthConfig(kind="images", **SMALL)
    write_dataset(config, tmp_path)
    state = torch.load(tmp_path / "true_model.pt", weights_only=True)
    for key in ("image_generator", "linear_latent_scale"):
        del state["config"][key]
    torch.save(state, tmp_path / "true_model.pt")
    assert load_true_model(tmp_path)[1] == config
    write_dataset(config, tmp_path)  # the same settings: rewritten, not refused
    with pytest.raises(FileExistsError, match="another true model"):
        write_dataset(dataclasses.replace(config, image_generator="linear"), tmp_path)
    for saved in ({"a_later_setting": 1}, {"z_dim": 0}):  # unknown to this version; invalid
        state["config"] = {**dataclasses.asdict(config), **saved}
        torch.save(state, tmp_path / "true_model.pt")
        with pytest.raises(FileExistsError, match="another true model"):
            write_dataset(config, tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kind": "text", "image_generator": "linear"}, "needs kind 'images'"),
        ({"kind": "images", "image_generator": "dense"}, "must be 'conv' or 'linear'"),
        ({"kind": "images", "linear_latent_scale": 0.0}, "linear_latent_scale must be > 0"),
        ({"kind": "images", "linear_latent_scale": float("nan")}, "linear_latent_scale"),
    ],
)
def test_ground_truth_config_refuses_settings_that_mean_nothing(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GroundTruthConfig(**settings)  # type: ignore[arg-type]


def test_linear_generator_is_the_gaussian_it_says() -> None:
    torch.manual_seed(0)
    generator = LinearGenerator(
        LinearGenerator.Config(likelihood_sigma=0.4), z_dim=3, image_shape=(2, 4, 5)
    )
    assert float(generator.linear.bias.detach().abs().max()) == 0.0  # xavier_normal: b starts at 0
    with torch.no_grad():
        generator.linear.bias.normal_()
    z, x = torch.randn(6, 3), torch.randn(6, 2, 4, 5)
    mean = (z @ generator.linear.weight.T + generator.linear.bias).view(6, 2, 4, 5).detach()
    expected = torch.distributions.Normal(mean, 0.4).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(generator.log_likelihood(x, z), expected, atol=1e-4)
    assert torch.equal(generator.sample(z), generator.mean(z))
    assert torch.allclose(generator(z), mean, atol=1e-6)
    assert generator.num_targets(x).tolist() == [40] * 6
    with torch.no_grad():
        draws = generator.sample(z.repeat(2000, 1), noise=True, clamp=False)
    assert abs(float((draws - mean.repeat(2000, 1, 1, 1)).std()) - 0.4) < 0.01
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 3\)"):
        generator.mean(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 2, 4, 5\)"):
        generator.log_likelihood(torch.randn(6, 1, 4, 5), z)
    with pytest.raises(ValueError, match="likelihood_sigma"):
        LinearGenerator.Config(likelihood_sigma=0.0)


def test_array_data_set_reads_uint8_and_refuses_bad_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "train.npy", np.full((4, 1, 28, 28), 255, dtype=np.uint8))
    task = ImageTask(dataset="array", path=str(tmp_path))
    assert float(task.tensor("train").min()) == 1.0  # uint8 maps to [-1, 1]
    np.save(tmp_path / "train.npy", np.zeros((4, 28, 28), dtype=np.float32))
    with pytest.raises(ImageDataError, match="train.npy: expected a \\(N, C, H, W\\)"):
        ImageTask(dataset="array", path=str(tmp_path))
    with pytest.raises(ValueError, match="task.path must name"):
        ImageTask.Config(dataset="array")


def test_simulated_sequences_respect_the_minimum_length() -> None:
    model = build_true_model(GroundTruthConfig(kind="text"))
    data = simulate(model, 50, generator=torch.Generator().manual_seed(0), min_length=3)
    lengths = (data.x[:, 1:] != 0).sum(1) - 1  # tokens before <eos>
    assert int(lengths.min()) >= 3


# --------------------------------------------------------------------------- latent usage
def test_mutual_information_of_identical_and_of_separated_posteriors() -> None:
    n, d = 64, 2
    tril = 0.1 * torch.eye(d).expand(n, d, d)
    same = mutual_information(torch.zeros(n, d), tril, generator=torch.Generator().manual_seed(0))
    assert abs(same) < 1e-9  # q(z|x) = q(z): no information
    far = torch.arange(n, dtype=torch.float64).unsqueeze(1) * torch.tensor([[10.0, 0.0]])
    apart = mutual_information(far, tril, generator=torch.Generator().manual_seed(0))
    assert apart == pytest.approx(math.log(n), abs=1e-6)  # every x identified: log N


def test_latent_usage_counts_the_dimensions_that_move_with_x() -> None:
    """A linear-Gaussian decoder that reads only z_1: the Laplace posterior modes vary with x
    along z_1 alone (1 active unit), and I(x; z) is positive."""
    from tests.test_ais import SampleableLinearGaussian

    weight = torch.tensor([[3.0, 0.0], [2.0, 0.0]])
    prior = GaussianMixturePrior(torch.zeros(1, 2), 1.0)  # N(0, I) with f = 0
    model = LatentEBM(
        prior,
        SampleableLinearGaussian(weight, torch.zeros(2), 0.3),
        LangevinSampler(1, 0.4),
        LangevinSampler(5, 0.1),
    )
    x = torch.randn(100, 1, generator=torch.Generator().manual_seed(0)) * weight[:, 0]
    usage = latent_usage(model, [x[:50], x[50:]], generator=torch.Generator().manual_seed(1))
    assert usage.active_units == 1 and usage.n_examples == 100
    assert usage.mode_variances[1] < 1e-4 < 0.5 < usage.mode_variances[0]
    assert 1.0 < usage.mutual_information <= math.log(100)


# --------------------------------------------------------------------------- quadrature
def test_quadrature_fast_path_for_image_generators_equals_the_generic_one() -> None:
    torch.manual_seed(0)
    generator = ConvGenerator(ConvGenerator.Config(ngf=4), z_dim=2, image_shape=(1, 28, 28))
    model = LatentEBM(
        GaussianMixturePrior.ring(4, 1.5, 0.4),
        generator,
        LangevinSampler(1, 0.4),
        LangevinSampler(1, 0.1),
    )
    x = generator.sample(torch.randn(3, 2), noise=True, clamp=False).detach()
    fast = quadrature_log_marginal(model, x, limit=4.0, points=41)

    class Plain(torch.nn.Module):  # same likelihood, not a ConvGenerator: the generic loop
        def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return generator.log_likelihood(x, z)

    plain = LatentEBM(model.prior, Plain(), LangevinSampler(1, 0.4), LangevinSampler(1, 0.1))
    slow = quadrature_log_marginal(plain, x, limit=4.0, points=41)
    assert torch.allclose(fast.log_marginal, slow.log_marginal, atol=1e-3)
    assert abs(fast.log_z) < 1e-3  # the mixture prior has Z = 1


@pytest.mark.parametrize(("c", "truncated"), [(0.0, False), (-0.5, False), (-0.9, True)])
def test_quadrature_says_when_the_prior_reaches_the_grids_edge(c: float, truncated: bool) -> None:
    """f(z) = -(c/2)|z|^2 makes the prior N(0, I / (1 + c)) with log Z = -log(1 + c) in 2-D: the
    grid over [-5, 5]^2 holds N(0, I) and N(0, 2 I) (log Z exact to 1e-3), not N(0, 10 I),
    whose grid log Z falls short of the exact one by -log(0.79) = 0.24 and is flagged; a
    non-finite energy is flagged too."""
    from tests.test_langevin import QuadraticPrior

    torch.manual_seed(0)
    generator = ConvGenerator(ConvGenerator.Config(ngf=4), z_dim=2, image_shape=(1, 28, 28))
    model = LatentEBM(
        QuadraticPrior(2, c), generator, LangevinSampler(1, 0.4), LangevinSampler(1, 0.1)
    )
    x = generator.sample(torch.randn(2, 2), noise=True, clamp=False).detach()
    grid = quadrature_log_marginal(model, x, limit=5.0, points=151)
    exact = -math.log(1 + c)
    assert grid.truncated is truncated
    if truncated:
        assert grid.edge_share > 1e-2 and grid.log_z < exact - 0.2
    else:
        assert grid.edge_share < 1e-2 and abs(grid.log_z - exact) < 1e-3
    with torch.no_grad():
        model.prior.c.fill_(float("nan"))
    assert quadrature_log_marginal(model, x, limit=5.0, points=151).truncated


def test_linear_ground_truth_recipe_trains_and_reloads(tmp_path: Path) -> None:
    """recipes/ground_truth_images_linear.yaml on tiny linear data: two updates, a checkpoint,
    the run reloaded with its linear generator."""
    from latentebm.config import load_recipe
    from latentebm.pretrained import load
    from latentebm.train import Trainer

    data = tmp_path / "data"
    write_dataset(GroundTruthConfig(kind="images", image_generator="linear", **SMALL), data)
    recipe_file = (
        Path(__file__).resolve().parents[1] / "recipes" / "ground_truth_images_linear.yaml"
    )
    overrides = [f"task.path={data}", f"trainer.run_dir={tmp_path / 'run'}", "device=cpu"]
    overrides += ["model.prior_chain.n_steps=3", "model.posterior_chain.n_steps=3"]
    overrides += ["trainer.max_steps=2", "trainer.batch_size=8", "trainer.samples_at_end=2"]
    overrides += ["trainer.valid_batches=1", "trainer.progress=false", "trainer.tensorboard=false"]
    run = Trainer(load_recipe(recipe_file, overrides)).fit()
    loaded = load(run, device="cpu")
    assert isinstance(loaded.model.generator, LinearGenerator)
    images = loaded.model.generate(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 28, 28)
