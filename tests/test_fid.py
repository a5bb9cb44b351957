"""Tests of the Fréchet distance, feature statistics, the Inception loader and the MNIST
feature network ("MNIST-FID").

Closed forms: for commuting covariances ``S_i = Q diag(d_i) Q^T`` the distance is
``||mu1 - mu2||^2 + sum_k (sqrt(d1_k) - sqrt(d2_k))^2``; in one dimension it is
``(mu1 - mu2)^2 + (s1 - s2)^2`` with ``s_i`` the standard deviations.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from latentebm.data import data_root
from latentebm.metrics.fid import (
    INCEPTION_URL,
    activation_statistics,
    compute_statistics,
    frechet_distance,
    load_inception_torchscript,
)
from latentebm.metrics.mnist_features import (
    FEATURE_DIM,
    classification_accuracy,
    load_mnist_feature_net,
    save_mnist_feature_net,
    train_mnist_feature_net,
)


# ----------------------------------------------------------------------- Fréchet distance
def test_one_dimensional_closed_form() -> None:
    # (1 - (-2))^2 + (3 - 0.5)^2 = 9 + 6.25
    value = frechet_distance(
        np.array([1.0]), np.array([[9.0]]), np.array([-2.0]), np.array([[0.25]])
    )
    assert value == pytest.approx(15.25)


def test_commuting_covariances_closed_form_and_symmetry() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    d1, d2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)
    # diagonal covariances are the case Q = I
    diagonal = frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2))
    assert diagonal == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_singular_covariances_stay_finite() -> None:
    # 3 samples in 10 dimensions: rank-2 covariances, a singular product
    rng = np.random.default_rng(1)
    mu1, s1 = activation_statistics(rng.normal(size=(3, 10)))
    mu2, s2 = activation_statistics(rng.normal(size=(3, 10)) + 1.0)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(value)
    assert value >= np.sum((mu1 - mu2) ** 2) - 1e-4  # the trace term of PSD matrices is >= 0
    # identical singular statistics: 0 up to the eps * I regularisation (2 eps d = 2e-5)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-4)


def test_invalid_covariance_with_large_imaginary_root_raises() -> None:
    # S1 S2 = diag(1, -1): its square root diag(1, i) has an imaginary part of 1
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(3))


# ----------------------------------------------------------------------- statistics
def test_activation_statistics_by_hand() -> None:
    # rows (0, 0), (2, 0), (1, 3): mean (1, 1); deviations (-1,-1), (1,-1), (0, 2);
    # cov = sum dev dev^T / (n - 1) = [[2, 0], [0, 6]] / 2
    mu, sigma = activation_statistics(np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(mu, [1.0, 1.0])
    np.testing.assert_allclose(sigma, [[1.0, 0.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="at least 2"):
        activation_statistics(np.zeros((1, 3)))


def flatten_extractor(images: Tensor) -> Tensor:
    return images.flatten(1)


def test_compute_statistics_same_for_tensor_and_batches() -> None:
    images = torch.randn(23, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    mu, sigma = compute_statistics(flatten_extractor, images, batch_size=5)
    mu_b, sigma_b = compute_statistics(flatten_extractor, list(images.split(7)))
    ref_mu, ref_sigma = activation_statistics(images.flatten(1).double().numpy())
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-12)
    np.testing.assert_allclose(mu_b, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma_b, ref_sigma, rtol=1e-12)
    with pytest.raises(ValueError, match=r"expected \(B, F\)"):
        compute_statistics(lambda x: x, images)


# ----------------------------------------------------------------------- Inception loader
def test_missing_inception_file_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads") as info:
        load_inception_torchscript(tmp_path / "inception-2015-12-05.pt")
    assert INCEPTION_URL in str(info.value)


class FakeInception(nn.Module):
    """Stands in for the TorchScript Inception: records dtype and returns channel means."""

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        assert return_features
        assert img.dtype == torch.uint8
        return img.float().mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_inception_extractor_feeds_uint8_three_channel_images(tmp_path: Path) -> None:
    path = tmp_path / "fake.pt"
    torch.jit.script(FakeInception()).save(str(path))
    extractor = load_inception_torchscript(path)
    images = torch.tensor([-1.0, 1.0, 0.0]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2)
    features = extractor(images)
    # [-1, 1] -> [0, 255]: -1 -> 0, 1 -> 255, 0 -> 127.5 rounded (half to even) -> 128
    expected = torch.tensor([0.0, 255.0, 128.0]).unsqueeze(1).expand(3, 3)
    torch.testing.assert_close(features, expected)


# ----------------------------------------------------------------------- MNIST features
def bar_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Class 0: a horizontal bar, class 1: a vertical bar, at random positions, with noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = -torch.ones(n, 1, 28, 28)
    positions = torch.randint(4, 24, (n,), generator=g)
    for i in range(n):
        p = int(positions[i])
        if labels[i] == 0:
            images[i, 0, p : p + 3, 4:24] = 1.0
        else:
            images[i, 0, 4:24, p : p + 3] = 1.0
    images += 0.3 * torch.randn(images.shape, generator=g)
    return images.clamp(-1, 1), labels


def test_mnist_feature_net_learns_and_round_trips(tmp_path: Path) -> None:
    train_x, train_y = bar_images(256, seed=0)
    test_x, test_y = bar_images(128, seed=1)
    net = train_mnist_feature_net(
        train_x, train_y, epochs=4, seed=0, batch_size=32, learning_rate=3e-3
    )
    accuracy = classification_accuracy(net, test_x, test_y)
    assert accuracy > 0.95
    features = net.features(test_x)
    assert features.shape == (128, FEATURE_DIM)

    path = tmp_path / "nets" / "mnist_features.pt"
    save_mnist_feature_net(path, net, test_accuracy=accuracy)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    loaded = load_mnist_feature_net(path)
    assert loaded.info["test_accuracy"] == pytest.approx(accuracy)
    assert loaded.info["epochs"] == 4 and loaded.info["seed"] == 0
    with torch.no_grad():
        torch.testing.assert_close(loaded.features(test_x), net.features(test_x), rtol=0, atol=0)

    # MNIST-FID separates the classes: same class much closer than the other class
    zeros, ones = test_x[test_y == 0], test_x[test_y == 1]
    stats_0a = compute_statistics(loaded.features, zeros[: len(zeros) // 2])
    stats_0b = compute_statistics(loaded.features, zeros[len(zeros) // 2 :])
    stats_1 = compute_statistics(loaded.features, ones)
    same = frechet_distance(*stats_0a, *stats_0b)
    other = frechet_distance(*stats_0a, *stats_1)
    assert other > 3 * same


def test_mnist_feature_net_training_is_seeded() -> None:
    x, y = bar_images(64, seed=2)
    a = train_mnist_feature_net(x, y, epochs=1, seed=3, batch_size=16)
    b = train_mnist_feature_net(x, y, epochs=1, seed=3, batch_size=16)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_mnist_feature_net_bad_input(tmp_path: Path) -> None:
    x, y = bar_images(8, seed=0)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        train_mnist_feature_net(x[:, :, :27], y, epochs=1)
    with pytest.raises(ValueError, match="labels must be"):
        train_mnist_feature_net(x, y[:4], epochs=1)
    with pytest.raises(FileNotFoundError):
        load_mnist_feature_net(tmp_path / "absent.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ValueError, match="not a latentebm MNIST feature-network file"):
        load_mnist_feature_net(other)


def read_idx(path: Path, limit: int) -> Tensor:
    """The first ``limit`` items of an MNIST IDX file (images scaled to [-1, 1])."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    n_dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    shape[0] = min(shape[0], limit)
    offset = 4 + 4 * n_dims
    values = np.frombuffer(data, np.uint8, count=int(np.prod(shape)), offset=offset)
    array = torch.from_numpy(values.copy()).reshape(shape)
    if n_dims == 3:
        return array.float().div(127.5).sub(1.0).unsqueeze(1)
    return array.long()


@pytest.mark.real_data
def test_mnist_feature_net_on_a_subset_of_real_mnist() -> None:
    root = data_root(None)
    folder = None if root is None else root / "mnist"
    if folder is None or not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("MNIST not found: set LATENTEBM_DATA to a folder with mnist/*.gz")
    train_x = read_idx(folder / "train-images-idx3-ubyte.gz", 3000)
    train_y = read_idx(folder / "train-labels-idx1-ubyte.gz", 3000)
    test_x = read_idx(folder / "t10k-images-idx3-ubyte.gz", 1000)
    test_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 1000)
    net = train_mnist_feature_net(train_x, train_y, epochs=1, seed=0, batch_size=64)
    # 3,000 images, one epoch: well above the 10% of chance (the full recipe reaches ~98%)
    assert classification_accuracy(net, test_x, test_y) > 0.8
