"""A small MNIST classifier whose penultimate layer is the feature space of "MNIST-FID".

The standard FID uses Inception-v3 features of ImageNet-sized colour images. For 28 x 28 MNIST
digits this toolkit trains its own feature network instead: a small CNN classifier (two
convolutions, two fully connected layers), whose 128-d penultimate activations (after the ReLU)
are the features. A Fréchet distance of these features is called **MNIST-FID**. It is NOT
comparable to Inception FIDs (nor to MNIST FIDs of other papers, which use other classifiers):
compare MNIST-FIDs only with the same saved network, at equal sample sizes.

The network is trained on CPU, seeded and deterministic for a given thread count
(:func:`train_mnist_feature_net`); its file (written atomically, read with
``weights_only=True``) also records its test accuracy and training settings
(:func:`save_mnist_feature_net`, :func:`load_mnist_feature_net`).
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latentebm.checkpoint import load_weights, save_atomic

__all__ = [
    "FEATURE_DIM",
    "MNIST_FEATURES_FORMAT",
    "MnistFeatureNet",
    "classification_accuracy",
    "load_mnist_feature_net",
    "save_mnist_feature_net",
    "train_mnist_feature_net",
]

MNIST_FEATURES_FORMAT = "latentebm-mnist-features-v1"
FEATURE_DIM = 128


class MnistFeatureNet(nn.Module):
    """``conv(1->32, 3x3) - ReLU - maxpool 2 - conv(32->64, 3x3) - ReLU - maxpool 2 -
    fc(1600->128) - ReLU [features] - fc(128->n_classes)``.

    Input: images ``(B, 1, 28, 28)`` in ``[-1, 1]`` (the scale of the image tasks).

    Attributes:
        info: what :func:`load_mnist_feature_net` read from the file (test accuracy,
            training settings); empty for a fresh network.
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.fc1 = nn.Linear(64 * 5 * 5, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, self.n_classes)
        self.info: dict[str, Any] = {}

    def _check(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"expected MNIST images (B, 1, 28, 28), got shape {tuple(x.shape)}")
        return x.to(self.fc1.weight.device, torch.float32)

    def features(self, x: Tensor) -> Tensor:
        """The 128-d penultimate activations (after ReLU): the MNIST-FID feature space."""
        h = F.max_pool2d(F.relu(self.conv1(self._check(x))), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, n_classes)``."""
        return self.fc2(self.features(x))


def _check_data(images: Tensor, labels: Tensor, what: str) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{what} images must be (N, 1, 28, 28), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{what} labels must be ({images.shape[0]},) to match the images, "
            f"got {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{what} set is empty")


@torch.no_grad()
def classification_accuracy(
    net: MnistFeatureNet, images: Tensor, labels: Tensor, batch_size: int = 1000
) -> float:
    """Fraction of ``images`` whose arg-max logit equals the label."""
    _check_data(images, labels, "evaluation")
    was_training = net.training
    net.eval()
    correct = 0
    try:
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            correct += int((net(x).argmax(dim=1).cpu() == y.cpu()).sum())
    finally:
        net.train(was_training)
    return correct / images.shape[0]


def train_mnist_feature_net(
    train_images: Tensor,
    train_labels: Tensor,
    *,
    epochs: int = 2,
    seed: int = 0,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    n_classes: int = 10,
    device: str | torch.device = "cpu",
) -> MnistFeatureNet:
    """Train :class:`MnistFeatureNet` with Adam and cross-entropy (on ``device``; the network
    is returned on the CPU).

    Seeded: the initial weights and the shuffling come from ``seed`` (results are identical
    for the same seed, data and thread count). On MNIST's 60,000 training images two epochs
    take about 27 s with one CPU thread (``OMP_NUM_THREADS=1``) and reach 98.2% test accuracy
    (measured with seed 0, the defaults; see ``docs/metrics.md``).

    Args:
        train_images: ``(N, 1, 28, 28)`` float in ``[-1, 1]``.
        train_labels: ``(N,)`` integer class labels in ``[0, n_classes)``.
        epochs: passes over the training set.
        seed: seed of the initial weights and of the shuffling.
        batch_size: mini-batch size.
        learning_rate: Adam's learning rate.
        n_classes: number of classes (10 digits).
        device: where to train (a GPU gives other, equally valid weights than the CPU).

    Returns:
        the trained network in eval mode; ``net.info`` holds the training settings and time.
    """
    _check_data(train_images, train_labels, "training")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    labels = train_labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(
            f"training labels must lie in [0, {n_classes}), got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )
    images = train_images.float()
    torch.manual_seed(seed)
    net = MnistFeatureNet(n_classes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    shuffle = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(images.shape[0], generator=shuffle)
        for idx in order.split(batch_size):
            batch, target = images[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(net(batch), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.cpu().eval()
    net.info = {
        "epochs": int(epochs),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "n_train": int(images.shape[0]),
        "train_seconds": time.perf_counter() - started,
        "final_train_loss": float(loss.detach()),
    }
    return net


def save_mnist_feature_net(
    path: str | Path,
    net: MnistFeatureNet,
    *,
    test_accuracy: float | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Write the network, its test accuracy and ``net.info`` (updated with ``info``) to one
    file, atomically (temporary file in the same directory, then rename)."""
    record = {**net.info, **(info or {})}
    if test_accuracy is not None:
        record["test_accuracy"] = float(test_accuracy)
    state = {
        "format": MNIST_FEATURES_FORMAT,
        "n_classes": net.n_classes,
        "feature_dim": FEATURE_DIM,
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "info": record,
    }
    save_atomic(state, Path(path))


def load_mnist_feature_net(path: str | Path, device: str | torch.device = "cpu") -> MnistFeatureNet:
    """Read a network written by :func:`save_mnist_feature_net` (``weights_only=True``).

    Returns:
        the network in eval mode; ``net.info`` holds the recorded test accuracy and settings.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a latentebm MNIST feature-network file.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such MNIST feature-network file")
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{file}: not a readable MNIST feature-network file ({error})") from error
    if not isinstance(state, dict) or state.get("format") != MNIST_FEATURES_FORMAT:
        raise ValueError(
            f"{file}: not a latentebm MNIST feature-network file (format {MNIST_FEATURES_FORMAT})"
        )
    net = MnistFeatureNet(int(state["n_classes"]))
    load_weights(net, state["model"], file)
    net.info = dict(state["info"])
    return net.to(device).eval()
