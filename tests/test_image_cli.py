"""Image models end to end: train a tiny latent EBM with a ConvTranspose generator on tiny
MNIST-format files, evaluate AUPRC and reconstruction MSE from the CLI, write PNG samples, and
score anomalies from Python (``latentebm.load(run).anomaly_score``)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import latentebm
from latentebm.config import load_recipe
from latentebm.train import Trainer
from tests.test_image_task import idx_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_square_mnist(folder: Path, n_train: int = 60, n_test: int = 20) -> None:
    """MNIST-format files whose images are all a bright square on black plus a little noise
    (labels cycle 0-9): easy to model, so uniform noise is clearly out of distribution."""
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        x = rng.integers(0, 20, (n, 28, 28)).astype(np.uint8)
        x[:, 8:20, 8:20] = 235 + rng.integers(0, 20, (n, 12, 12)).astype(np.uint8)
        return x

    arrays = {
        "train-images-idx3-ubyte": images(n_train),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": images(n_test),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))


def tiny_image_recipe(root: Path, run_dir: Path, **trainer: Any) -> Path:
    """A recipe that trains a few steps on ``root/mnist`` with digit 1 held out."""
    recipe = {
        "name": "tiny_mnist",
        "seed": 0,
        "device": "cpu",
        "data": {"root": str(root)},
        "anomaly": {"digit": 1},
        "task": {"_component_": "latentebm.tasks.images.ImageTask", "dataset": "mnist"},
        "model": {
            "z_dim": 4,
            "prior": {"hidden_dims": [8]},
            "generator": {
                "_component_": "latentebm.generators.conv.ConvGenerator",
                "architecture": "mnist28",
                "ngf": 4,
            },
            "prior_chain": {"n_steps": 5, "step_size": 0.4},
            "posterior_chain": {"n_steps": 5, "step_size": 0.1},
        },
        "optim": {"generator": {"lr": 3.0e-3}},
        "trainer": {
            "max_steps": 30,
            "batch_size": 20,
            "log_every": 10,
            "checkpoint_every": 30,
            "samples_at_end": 4,
            "tensorboard": False,
            "progress": False,
            "run_dir": str(run_dir),
            **trainer,
        },
    }
    path = root / "tiny_mnist.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_square_mnist(root / "mnist")
    recipe = tiny_image_recipe(root, root / "run")
    return Trainer(load_recipe(recipe)).fit()


def test_image_training_logs_images_per_second(trained_run: Path) -> None:
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    rates = [row for row in rows if "recon_nll" in row]
    assert rates and all(row["images_per_s"] > 0 and "tokens_per_s" not in row for row in rates)


def test_anomaly_section_reaches_the_task(trained_run: Path) -> None:
    model = latentebm.load(trained_run)
    task = model.task
    # 80 images, labels cycling 0-9: the 8 ones are anomalous; 80 % of the 72 others train
    assert task.num_sentences("train") == int(0.8 * 72)
    labels = task.anomaly_labels("test")
    assert int(labels.sum()) == 8 and len(labels) == 80 - int(0.8 * 72)
    assert (task.labels("test")[labels == 1] == 1).all()


def test_training_writes_a_png_grid(trained_run: Path) -> None:
    pictures = sorted((trained_run / "samples").glob("*.png"))
    assert pictures and pictures[-1].read_bytes()[:8] == PNG_MAGIC


def test_anomaly_score_ranks_noise_above_training_images(trained_run: Path) -> None:
    model = latentebm.load(trained_run)
    train = model.task.tensor("train")[:20]
    noise = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    normal_scores = model.anomaly_score(train)
    noise_scores = model.anomaly_score(noise)
    assert normal_scores.shape == (20,) and noise_scores.shape == (10,)
    assert float(noise_scores.min()) > float(normal_scores.max())
    # uint8 input in [0, 255] and (B, H, W) are accepted and mean the same images
    as_uint8 = torch.round((train + 1) * 127.5).to(torch.uint8)[:, 0]
    again = model.anomaly_score(as_uint8)
    torch.testing.assert_close(again, normal_scores, atol=0.5, rtol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        model.anomaly_score(torch.zeros(2, 3, 28, 28))


def test_cli_evaluate_generate_and_refusals(
    trained_run: Path, run_cli: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    out = tmp_path / "metrics.json"
    done = run_cli("evaluate", trained_run, "--metrics", "anomaly,mse", "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "AUPRC" in done.stdout and "reconstruction MSE" in done.stdout
    entry = json.loads(out.read_text())["test"]
    anomaly = entry["anomaly"]
    assert 0.0 <= anomaly["auprc"] <= 1.0
    assert (anomaly["n_anomalous"], anomaly["n_normal"]) == (8, 80 - int(0.8 * 72) - 8)
    assert entry["mse"]["mse_per_pixel"] == pytest.approx(4 * entry["mse"]["mse_per_pixel_01"])

    png = tmp_path / "samples.png"
    done = run_cli("generate", trained_run, "-n", "6", "-o", png)
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC
    said = rf"6 images from \S+ -> {re.escape(str(png))} \([0-9.]+ images/s\)"
    assert re.search(said, done.stderr), done.stderr
    done = run_cli("generate", trained_run, "-n", "6", "-o", png)
    assert done.returncode == 2 and "not overwritten" in done.stderr
    done = run_cli("generate", trained_run, "-n", "6", "-o", tmp_path / "samples.txt")
    assert done.returncode == 2 and ".png" in done.stderr
    done = run_cli("evaluate", trained_run, "--metrics", "fid", "-o", out, "--no-progress")
    assert done.returncode == 2 and "--fid-features" in done.stderr


def test_bad_anomaly_digit_is_refused(tmp_path: Path) -> None:
    write_square_mnist(tmp_path / "mnist")
    recipe = tiny_image_recipe(tmp_path, tmp_path / "run")
    from latentebm.config import RecipeError

    with pytest.raises(RecipeError, match="anomaly.digit"):
        load_recipe(recipe, ["anomaly.digit=12"])


def test_cli_interpolation_strip_and_long_chain(
    trained_run: Path, run_cli: Callable[..., CompletedProcess[str]], tmp_path: Path
) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    done = run_cli("interpolate", trained_run, "test:0", "test:3", "--points", "5", "-o", strip)
    assert done.returncode == 0, done.stderr
    with Image.open(strip) as picture:  # 7 images of 28 px in one row, 2 px padding
        assert picture.size == (7 * 30 + 2, 32)
    done = run_cli("interpolate", trained_run, "test:0", "test:999", "-o", tmp_path / "x.png")
    assert done.returncode == 2 and "has" in done.stderr and "images" in done.stderr

    chain = tmp_path / "chain.png"
    done = run_cli("generate", trained_run, "-n", "3", "--trajectory", "0,10,40", "-o", chain)
    assert done.returncode == 0, done.stderr
    with Image.open(chain) as picture:  # 3 chains (rows) x 3 recorded steps (columns)
        assert picture.size == (3 * 30 + 2, 3 * 30 + 2)
    assert (tmp_path / "chain_energy.png").read_bytes()[:8] == PNG_MAGIC
