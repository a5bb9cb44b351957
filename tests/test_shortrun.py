"""Tests of the data-space short-run EBM of Nijkamp, Hill, Zhu and Wu (2019), "Learning
Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model", and of the
convergent-learning options of Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of
MCMC-Based Maximum Likelihood Learning of Energy-Based Models".

Convention under test: ``ShortRunChain(K, step_size=a)`` runs
``x <- x + (a^2/2) grad_x f(x) + a * eps``. On ``f(x) = -|x|^2 / (2 v)`` one step is the linear
recursion ``x' = (1 - h / v) x + a eps`` with ``h = a^2 / 2``, whose stationary variance is
``a^2 / (1 - (1 - h/v)^2) = v / (1 - h / (2 v))`` (the unadjusted-Langevin bias), -> v as a -> 0.
With the energy scaling of Nijkamp et al. 2020 (``f = F / (a^2/2)``) one step is
``x + grad_x F(x) + a eps``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor

from latentebm.checkpoint import latest_checkpoint, load_checkpoint
from latentebm.config import RecipeError, validate
from latentebm.shortrun.config import ShortRunRecipe, load_shortrun_recipe
from latentebm.shortrun.energy import ConvEnergy, feature_sizes
from latentebm.shortrun.sampler import ShortRunChain, sample_initial
from latentebm.shortrun.tools import (
    ShortRunModel,
    interpolate,
    load_shortrun,
    reconstruct,
    save_image_grid,
)
from latentebm.shortrun.train import ShortRunTrainer, learning_rate_at, ml_loss
from latentebm.train import TrainingError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def trust_tiny_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny runs' task is this module's TinyImageTask; a recipe read back from a checkpoint
    (or built with ``validate``) imports it only from a trusted module."""
    monkeypatch.setenv("LATENTEBM_TRUSTED_MODULES", "tests.test_shortrun")


# --------------------------------------------------------------------------- a tiny image task
class TinyImageTask:
    """Synthetic ``size x size`` grey images in [-1, 1] (a bright square at random places), with
    the image task's interface: ``batches``, ``num_sentences``, ``generator_kwargs``,
    ``save_samples``."""

    @dataclass(kw_only=True)
    class Config:
        n_train: int = 24
        n_test: int = 8
        size: int = 8

    def __init__(self, config: Config, data_root: Any = None, state: Any = None) -> None:
        self.config = config
        self.splits = {
            "train": self._make(config.n_train, seed=1),
            "test": self._make(config.n_test, seed=2),
        }

    def _make(self, n: int, seed: int) -> Tensor:
        size = self.config.size
        g = torch.Generator().manual_seed(seed)
        images = -torch.ones(n, 1, size, size)
        corners = torch.randint(0, size // 2, (n, 2), generator=g)
        for i, (r, c) in enumerate(corners.tolist()):
            images[i, 0, r : r + size // 2, c : c + size // 2] = 1.0
        return images

    def batches(
        self, split: str, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
    ) -> list[Tensor]:
        if split not in self.splits:
            raise ValueError(f"no split {split!r}")
        data = self.splits[split]
        order = torch.arange(data.shape[0])
        if shuffle:
            order = torch.randperm(
                data.shape[0], generator=torch.Generator().manual_seed(seed * 1000 + epoch)
            )
        return [data[order[i : i + batch_size]] for i in range(0, data.shape[0], batch_size)]

    def num_sentences(self, split: str) -> int:
        return int(self.splits[split].shape[0])

    def generator_kwargs(self) -> dict[str, Any]:
        return {"image_shape": (1, self.config.size, self.config.size)}

    def save_samples(self, images: Tensor, path: Path) -> Path:
        return save_image_grid(images, path)


def tiny_recipe(run_dir: Path, **sections: Any) -> ShortRunRecipe:
    """A recipe that trains a few steps on TinyImageTask in well under a second."""
    data: dict[str, Any] = {
        "family": "shortrun",
        "name": "tiny",
        "seed": 3,
        "device": "cpu",
        "task": {"_component_": "tests.test_shortrun.TinyImageTask"},
        "energy": {"n_filters": 4, "n_down": 2},
        "chain": {"n_steps": 5, "step_size": 0.05},
        "convergent": {"energy_scale": True, "data_noise": 0.1},
        "optim": {"lr": 1e-3},
        "trainer": {
            "max_steps": 4,
            "batch_size": 8,
            "log_every": 1,
            "checkpoint_every": 2,
            "keep_checkpoints": 0,
            "run_dir": str(run_dir),
            "samples_at_end": 4,
            "interpolation_pairs": 2,
            "interpolation_points": 3,
            "reconstruction_images": 4,
            "reconstruction_iters": 3,
        },
    }
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return validate(ShortRunRecipe, data, source="tiny")


def png_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG file, checking its signature and IHDR CRC."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", blob[8:16])
    assert kind == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", blob[16 + length : 20 + length])
    assert crc == zlib.crc32(blob[12 : 16 + length])
    width, height = struct.unpack(">II", blob[16:24])
    return width, height


def small_model(energy_scale: bool = False, step_size: float = 0.1) -> ShortRunModel:
    torch.manual_seed(0)
    energy = ConvEnergy((1, 8, 8), n_filters=4, n_down=2).double()
    chain = ShortRunChain(4, step_size)
    temperature = chain.drift if energy_scale else 1.0
    return ShortRunModel(energy, chain, temperature=temperature)


# --------------------------------------------------------------------------- energy
def test_energy_table4_shapes() -> None:
    """32x32: Table 4 exactly (4x4 final kernel); 28x28 (MNIST): 28->14->7->3, 3x3 final kernel."""
    assert feature_sizes(32, 3) == [32, 16, 8, 4]
    assert feature_sizes(28, 3) == [28, 14, 7, 3]
    assert feature_sizes(64, 4) == [64, 32, 16, 8, 4]
    net = ConvEnergy((3, 32, 32), n_filters=8)
    convs = [m for m in net.net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert [c.kernel_size[0] for c in convs] == [3, 4, 4, 4, 4]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 2, 1]
    assert net(torch.zeros(5, 3, 32, 32)).shape == (5,)
    assert ConvEnergy((1, 28, 28), n_filters=4)(torch.zeros(2, 1, 28, 28)).shape == (2,)
    with pytest.raises(ValueError, match="n_down"):
        ConvEnergy((1, 4, 4), n_down=4)


def test_energy_input_gradient_matches_finite_differences() -> None:
    model = small_model()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    assert torch.autograd.gradcheck(lambda v: model.energy(v), (x.requires_grad_(True),))


# --------------------------------------------------------------------------- sampler
def test_chain_reaches_gaussian_variance() -> None:
    """f = -|x|^2/(2v): long chains at a small step reach the variance v (and its exact ULA
    value v / (1 - h/(2v)))."""
    v, a = 0.5, 0.1
    chain = ShortRunChain(n_steps=700, step_size=a)
    g = torch.Generator().manual_seed(0)
    x0 = sample_initial((2000, 1, 2, 2), "uniform", generator=g)
    result = chain.run(lambda x: -x.pow(2).flatten(1).sum(1) / (2 * v), x0, generator=g)
    n = result.x.numel()
    var = float(result.x.pow(2).mean())
    h = a * a / 2
    exact = v / (1 - h / (2 * v))
    se = exact * math.sqrt(2 / n)
    assert abs(var - exact) < 4.5 * se
    assert abs(var - v) < 0.02 * v
    assert abs(float(result.x.mean())) < 4.5 * math.sqrt(exact / n)
    assert result.grad_norm.shape == (700,)


def test_chain_step_is_documented_update() -> None:
    """One noise-free step is x + (a^2/2) grad f(x); with a fixed generator the noisy step adds
    exactly a * eps."""
    model = small_model()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(xg).sum(), xg)
    chain = ShortRunChain(1, 0.3, noise=False)
    out = chain.run(model.energy, x).x
    torch.testing.assert_close(out, x + 0.045 * grad)
    noisy = ShortRunChain(1, 0.3).run(model.energy, x, generator=torch.Generator().manual_seed(5))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    torch.testing.assert_close(noisy.x, x + 0.045 * grad + 0.3 * eps)


def test_energy_scale_chain_is_eq_2A() -> None:
    """Nijkamp et al. 2020, eq. 1A-2A: with f = F/(a^2/2) one step is x + grad F(x) (+ a eps)."""
    model = small_model(energy_scale=True, step_size=0.01)
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    (grad_f,) = torch.autograd.grad(model.energy(xg).sum(), xg)
    out = model.chain.run(model.neg_energy, x, n_steps=1, noise=False).x
    torch.testing.assert_close(out, x + grad_f)


def test_energy_scale_learning_update_is_eq_3A() -> None:
    """Nijkamp et al. 2020, eq. 3A: SGD on ml_loss with lr gamma_0 equals SGD on the loss of the
    scaled energy U-scale (mean f(x-) - mean f(x), f = F/T) with lr gamma = T * gamma_0."""
    gamma0 = 0.05
    scaled = small_model(energy_scale=True, step_size=0.02)
    reference = small_model(energy_scale=True, step_size=0.02)
    temperature = scaled.temperature
    assert temperature == pytest.approx(0.02**2 / 2)
    x_data = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2 - 1
    x_neg = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2 - 1

    optimizer = torch.optim.SGD(scaled.energy.parameters(), lr=gamma0)
    loss, d_t = ml_loss(scaled, x_data, x_neg)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    u_loss = reference.neg_energy(x_neg).mean() - reference.neg_energy(x_data).mean()
    assert float(d_t) == pytest.approx(-float(u_loss.detach()))
    params = list(reference.energy.parameters())
    grads = torch.autograd.grad(u_loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= temperature * gamma0 * g
    for p, q in zip(scaled.energy.parameters(), params, strict=True):
        torch.testing.assert_close(p, q)


def test_learning_rate_step_decay() -> None:
    recipe = tiny_recipe(
        Path("unused"),
        convergent={"lr_anneal": {"milestones": [0.5, 0.75], "gamma": 0.1}},
        optim={"lr": 0.05},
        trainer={"max_steps": 100},
    )
    assert learning_rate_at(recipe, 0) == pytest.approx(0.05)
    assert learning_rate_at(recipe, 49) == pytest.approx(0.05)
    assert learning_rate_at(recipe, 50) == pytest.approx(0.005)
    assert learning_rate_at(recipe, 99) == pytest.approx(0.0005)


# --------------------------------------------------------------------------- interpolation etc.
def test_interpolation_ends_are_the_two_chains() -> None:
    """Column rho = 1 is M(z1), column rho = 0 is M(z2) (noise-free chains)."""
    model = small_model()
    grid = interpolate(model, n_pairs=2, n_points=4, generator=torch.Generator().manual_seed(1))
    assert grid.shape == (8, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    z1, z2 = model.initial(2, g), model.initial(2, g)
    torch.testing.assert_close(grid[0::4], model.run_chain(z1, noise=False).x)
    torch.testing.assert_close(grid[3::4], model.run_chain(z2, noise=False).x)


def test_reconstruction_lowers_the_error_of_a_reachable_image() -> None:
    """Targets M(z*) are reachable: gradient descent on z through the chain must cut the error."""
    model = small_model()
    target = model.run_chain(model.initial(3, torch.Generator().manual_seed(7)), noise=False).x
    _, before = reconstruct(model, target, 0, 0.1, generator=torch.Generator().manual_seed(0))
    recon, after = reconstruct(model, target, 25, 0.1, generator=torch.Generator().manual_seed(0))
    assert recon.shape == target.shape
    assert after < 0.5 * before
    assert after == pytest.approx(float((recon - target).pow(2).mean()))


def test_png_grid(tmp_path: Path) -> None:
    images = torch.rand(5, 3, 4, 6) * 2 - 1
    path = save_image_grid(images, tmp_path / "g.png", n_cols=2)
    assert png_size(path) == (2 * (6 + 2) + 2, 3 * (4 + 2) + 2)
    assert not list(tmp_path.glob(".*tmp"))


# --------------------------------------------------------------------------- training
def test_training_writes_run_files(tmp_path: Path) -> None:
    run_dir = ShortRunTrainer(tiny_recipe(tmp_path / "run")).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert {"step", "loss", "d_t", "r_t", "lr", "seconds"} <= set(row)
        assert all(math.isfinite(row[k]) for k in ("loss", "d_t", "r_t"))
        assert row["r_t"] > 0
        temperature = 0.05**2 / 2
        assert row["loss"] == pytest.approx(-temperature * row["d_t"], rel=1e-4)
    assert len({r["loss"] for r in rows}) > 1
    assert png_size(run_dir / "samples" / "final.png") == (2 * 10 + 2, 2 * 10 + 2)
    assert png_size(run_dir / "interpolation.png") == (3 * 10 + 2, 2 * 10 + 2)
    assert png_size(run_dir / "reconstruction.png") == (4 * 10 + 2, 2 * 10 + 2)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["format"] == "latentebm-evaluate-metrics"  # the file evaluate merges into
    entry = summary["test"]["mse"]
    assert entry["step"] == 4 and entry["n"] == 4 and entry["stage"] == "end of training"
    assert 0 <= entry["mse_per_pixel"] < 4.0
    assert entry["mse_per_pixel_01"] == pytest.approx(entry["mse_per_pixel"] / 4)
    assert Path(entry["checkpoint"]).name == "step_00000004.pt"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["family"] == "shortrun"
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "step_00000004.pt"
    model = load_shortrun(run_dir)
    saved = load_checkpoint(checkpoint)
    for key, value in model.energy.state_dict().items():
        torch.testing.assert_close(value, saved["model"][key])
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 8, 8)


def test_diagnose_reads_a_shortrun_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from latentebm.diagnostics import diagnose

    run_dir = ShortRunTrainer(tiny_recipe(tmp_path / "run")).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = diagnose(run_dir, out_dir=tmp_path / "diag", n_chains=3, n_steps=6, record_every=2)
    assert result["oscillation"]["mean"] == pytest.approx(np.mean([r["d_t"] for r in rows]))
    assert result["r_t"]["prior"] == pytest.approx(np.mean([r["r_t"] for r in rows]))
    chain = result["long_chain"]
    assert chain["steps"] == [0, 2, 4, 6] and len(chain["energy"]) == 4
    model = load_shortrun(run_dir)  # step 0 is the energy of p_0 draws with the same seed
    start = model.initial(3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert chain["energy_start"] == pytest.approx(float(model.energy(start).mean()))
    assert (tmp_path / "diag" / "long_chain.png").is_file()


@pytest.mark.parametrize("persistent", [False, True])
def test_resume_equals_uninterrupted(tmp_path: Path, persistent: bool) -> None:
    chain = {"persistent": persistent, "buffer_size": 16}
    straight = ShortRunTrainer(
        tiny_recipe(tmp_path / "a", chain=chain, trainer={"max_steps": 6})
    ).fit()
    first = ShortRunTrainer(
        tiny_recipe(tmp_path / "b", chain=chain, trainer={"max_steps": 2})
    ).fit()
    resumed = ShortRunTrainer(
        tiny_recipe(tmp_path / "b", chain=chain, trainer={"max_steps": 6, "resume": "auto"})
    ).fit()
    assert resumed == first
    assert (resumed / "config.step_00000002.yaml").is_file()  # max_steps changed
    a, b = load_checkpoint(latest_checkpoint(straight)), load_checkpoint(latest_checkpoint(resumed))
    assert a["state"]["step"] == b["state"]["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"], b["rng"])
    if persistent:
        assert torch.equal(a["buffer"], b["buffer"])

    def losses(run: Path) -> list[tuple[int, float, float]]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["r_t"]) for r in rows]

    assert losses(straight) == losses(resumed)


def test_resume_refuses_another_model(tmp_path: Path) -> None:
    ShortRunTrainer(tiny_recipe(tmp_path / "r", trainer={"max_steps": 2})).fit()
    other = tiny_recipe(tmp_path / "r", chain={"n_steps": 3}, trainer={"resume": "auto"})
    with pytest.raises(TrainingError, match=r"chain\.n_steps"):
        ShortRunTrainer(other).fit()


def test_max_minutes_stops_early(tmp_path: Path) -> None:
    run = ShortRunTrainer(
        tiny_recipe(tmp_path / "t", trainer={"max_minutes": 1e-9, "max_steps": 50})
    ).fit()
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1]
    # Resuming with the same budget does no more steps: the budget is summed over segments.
    again = tiny_recipe(
        tmp_path / "t", trainer={"max_minutes": 1e-9, "max_steps": 50, "resume": "auto"}
    )
    ShortRunTrainer(again).fit()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_cpu_clock_and_timed_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(0, 10_000, 10))  # a CPU clock that advances 10 s per reading
    monkeypatch.setattr(time, "process_time", lambda: float(next(ticks)))
    trainer = {
        "clock": "cpu",
        "max_minutes": 1.0,
        "checkpoint_every_minutes": 0.5,
        "checkpoint_every": 100,
        "keep_checkpoints": 0,
        "max_steps": 50,
    }
    run = ShortRunTrainer(tiny_recipe(tmp_path / "t", trainer=trainer)).fit()
    saved = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("step_*.pt"))
    assert saved == [3, 6]  # at 30 s and at 60 s, where the 1-minute budget ends


def test_existing_run_dir_is_not_overwritten(tmp_path: Path) -> None:
    run_dir = tmp_path / "taken"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="exists and is not empty"):
        ShortRunTrainer(tiny_recipe(run_dir)).fit()
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]
    assert (run_dir / "keep.txt").read_text() == "mine"


# --------------------------------------------------------------------------- recipes
def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_bad_recipe_key_names_the_key(tmp_path: Path) -> None:
    base = {"family": "shortrun", "task": {"_component_": "tests.test_shortrun.TinyImageTask"}}
    bad = _write(tmp_path / "bad.yaml", {**base, "chain": {"n_stpes": 3}})
    with pytest.raises(RecipeError, match=r"bad\.yaml: chain\.n_stpes: unknown key.*n_steps"):
        load_shortrun_recipe(bad)
    no_family = _write(tmp_path / "nofam.yaml", {"task": base["task"]})
    with pytest.raises(RecipeError, match=r"nofam\.yaml: family: missing required key"):
        load_shortrun_recipe(no_family)
    good = _write(tmp_path / "good.yaml", base)
    with pytest.raises(RecipeError, match=r"command line: chain\.step_size=-1: must be > 0"):
        load_shortrun_recipe(good, ["chain.step_size=-1"])
    with pytest.raises(
        RecipeError,
        match=r"command line: convergent\.lr_anneal\.milestones=\[0\.5,0\.2\]: entries must "
        r"increase",
    ):
        load_shortrun_recipe(good, ["convergent.lr_anneal.milestones=[0.5,0.2]"])
    recipe = load_shortrun_recipe(good, ["chain.n_steps=7"])
    assert recipe.name == "good" and recipe.chain.n_steps == 7


@pytest.mark.parametrize("name", ["shortrun_mnist", "shortrun_cifar10"])
def test_shipped_recipes_validate(name: str) -> None:
    pytest.importorskip(
        "latentebm.tasks.images", reason="latentebm.tasks.images (the image task) is not present"
    )
    recipe = load_shortrun_recipe(REPO / "recipes" / f"{name}.yaml")
    assert recipe.family == "shortrun"
    assert recipe.chain.n_steps == 100 and recipe.chain.init == "uniform"


@pytest.mark.real_data
def test_mnist_recipe_trains_two_steps(tmp_path: Path) -> None:
    """The shipped MNIST recipe on the real IDX files, shrunk to two tiny steps."""
    pytest.importorskip(
        "latentebm.tasks.images", reason="latentebm.tasks.images (the image task) is not present"
    )
    root = Path(os.environ.get("LATENTEBM_DATA", REPO.parent / "shared" / "data"))
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST IDX files not found under {root / 'mnist'} (set LATENTEBM_DATA)")
    overrides = [
        f"data.root={root}",
        "device=cpu",
        "energy.n_filters=4",
        "chain.n_steps=3",
        "task.max_images=64",
        f"trainer.run_dir={tmp_path / 'run'}",
        "trainer.max_steps=2",
        "trainer.batch_size=16",
        "trainer.samples_at_end=4",
        "trainer.interpolation_pairs=1",
        "trainer.interpolation_points=2",
        "trainer.reconstruction_images=4",
        "trainer.reconstruction_iters=2",
    ]
    recipe = load_shortrun_recipe(REPO / "recipes" / "shortrun_mnist.yaml", overrides)
    run_dir = ShortRunTrainer(recipe).fit()
    assert png_size(run_dir / "samples" / "final.png") == (2 * 30 + 2, 2 * 30 + 2)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["test"]["mse"]["split"] == "test" and summary["test"]["mse"]["step"] == 2


def test_commands_on_a_shortrun_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """generate and interpolate draw images from a short-run EBM run and latentebm.load loads
    it (evaluate and export: the tests below)."""
    import latentebm
    from latentebm.checkpoint import CheckpointError
    from latentebm.cli import main as cli_main

    run = ShortRunTrainer(tiny_recipe(tmp_path / "run")).fit()
    grid = tmp_path / "samples.png"
    args = ["generate", str(run), "-n", "6", "--grid", str(grid), "--seed", "1"]
    assert cli_main(args) == 0
    assert png_size(grid)[0] > 0
    assert re.search(r"\(\d+\.\d images/s\)$", capsys.readouterr().err.strip())
    first = grid.read_bytes()
    assert cli_main([*args, "--force"]) == 0
    assert grid.read_bytes() == first  # seeded
    capsys.readouterr()
    # interpolate: between two draws of the initial noise (Nijkamp et al. 2019, Section 3.4)
    strip = tmp_path / "strip.png"
    interpolate = ["interpolate", str(run), "noise", "noise", "--points", "5", "-o", str(strip)]
    assert cli_main([*interpolate, "--seed", "3"]) == 0
    width, height = png_size(strip)
    assert width > height > 0  # one row of 5 images
    first = strip.read_bytes()
    assert cli_main([*interpolate, "--seed", "3", "--force"]) == 0
    assert strip.read_bytes() == first  # seeded
    capsys.readouterr()
    assert cli_main(["interpolate", str(run), "test:0", "test:1", "-o", str(strip)]) == 2
    err = capsys.readouterr().err.strip()
    assert "interpolates between two draws of its initial noise" in err and "\n" not in err
    # diagnose: d_t, r_t and a long chain of the data-space model
    diag = tmp_path / "diagnose"
    diagnose = ["diagnose", str(run), "--chains", "2", "--long-chain-steps", "4", "-o", str(diag)]
    assert cli_main(diagnose) == 0
    assert (diag / "diagnostics.json").is_file()
    capsys.readouterr()
    # plot: the short-run diagnostics are among the default panels
    if importlib.util.find_spec("matplotlib") is not None:
        curves = tmp_path / "curves.png"
        assert cli_main(["plot", str(run), "-o", str(curves)]) == 0
        assert "loss, d_t, r_t -> " in capsys.readouterr().err
        assert png_size(curves)[0] > 0
    # latentebm.load takes both families: a short-run run gives its ShortRunModel
    from latentebm.pretrained import load as load_latent
    from latentebm.shortrun import ShortRunModel, load_shortrun

    loaded = latentebm.load(run)
    assert isinstance(loaded, ShortRunModel)
    reference = load_shortrun(run)
    for mine, theirs in zip(
        loaded.energy.state_dict().values(), reference.energy.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs)
    images = loaded.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, *reference.image_shape)
    with pytest.raises(CheckpointError, match="a shortrun checkpoint"):
        load_latent(run)  # the latent loader alone says what the file is


def test_evaluate_a_shortrun_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``latentebm evaluate`` on a short-run run: mse is the noise-fit reconstruction error of
    the first N test images (Nijkamp et al. 2019, Section 3.4), merged into the metrics file
    the training wrote; fid compares the model's samples with the split; a latent-EBM metric
    is refused in one line."""
    from latentebm.cli import main as cli_main
    from latentebm.shortrun.evaluate import evaluate_shortrun

    run = ShortRunTrainer(tiny_recipe(tmp_path / "run")).fit()
    args = ["evaluate", str(run), "--recon-images", "3", "--recon-steps", "2", "--seed", "5"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "reconstruction MSE" in out and "written to" in out
    saved = json.loads((run / "metrics.json").read_text())
    entry = saved["test"]["mse"]
    assert (entry["n"], entry["iters"], entry["seed"], entry["step"]) == (3, 2, 5, 4)
    # the same fit by hand: the first 3 test images, noise drawn from a generator seeded 5
    model = load_shortrun(run)
    images = TinyImageTask(TinyImageTask.Config()).splits["test"][:3]
    _, mse = reconstruct(model, images, 2, 0.05, generator=torch.Generator().manual_seed(5))
    assert entry["mse_per_pixel"] == pytest.approx(mse, rel=1e-6)
    history = entry["history"]  # the end-of-training entry is kept, not overwritten
    assert len(history) == 1 and history[0]["stage"] == "end of training"
    assert history[0]["n"] == 4

    # fid: here with the flattened pixels as features (the real networks are tested elsewhere)
    def pixels(x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).double()

    from latentebm.metrics import image_eval
    from latentebm.metrics.fid import compute_statistics, frechet_distance

    original = image_eval.fid_extractor
    image_eval.fid_extractor = lambda settings: (pixels, "pixels", {})  # type: ignore[assignment]
    try:
        settings = image_eval.ImageEvalSettings(fid_samples=6, batch_size=4)
        result = evaluate_shortrun(run, metrics="fid", images=settings, seed=2, write=False)
    finally:
        image_eval.fid_extractor = original
    fid = result["metrics"]["fid"]
    generator = torch.Generator().manual_seed(2)
    samples = torch.cat([model.sample(4, generator), model.sample(2, generator)])
    expected = frechet_distance(
        *compute_statistics(pixels, samples, 4),
        *compute_statistics(pixels, TinyImageTask(TinyImageTask.Config()).splits["test"], 4),
    )
    assert fid["fid"] == pytest.approx(expected, rel=1e-6)
    assert (fid["n_samples"], fid["n_reference"], fid["split"]) == (6, 8, "test")

    capsys.readouterr()
    assert cli_main(["evaluate", str(run), "--metrics", "marginal_nll"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not apply to a data-space short-run EBM run" in err and "\n" not in err
    assert cli_main(["evaluate", str(run), "--metrics", "fid"]) == 2  # no feature network
    err = capsys.readouterr().err.strip()
    assert "fid needs one feature network" in err and "\n" not in err
    assert cli_main(["evaluate", str(run), "--chains", "5"]) == 2  # a latent EBM option
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentebm: error: --chains: does not apply to a data-space short-run")
    assert "\n" not in err
    # a checkpoint file copied out of its run is recognised by the family it records
    loose = tmp_path / "copied.pt"
    loose.write_bytes((run / "checkpoints" / "step_00000004.pt").read_bytes())
    out = tmp_path / "loose.json"
    assert cli_main(["evaluate", str(loose), "--recon-images", "2", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["test"]["mse"]["n"] == 2


def test_export_a_shortrun_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``latentebm export`` on a short-run run writes a folder with the energy's weights only
    (no optimiser, random state or replay buffer); ``latentebm.load`` and ``generate`` read it
    and sample exactly as the run does."""
    import latentebm
    from latentebm.cli import main as cli_main

    run = ShortRunTrainer(tiny_recipe(tmp_path / "run", chain={"persistent": True})).fit()
    out = tmp_path / "exported"
    assert cli_main(["export", str(run), str(out)]) == 0
    assert "exported to" in capsys.readouterr().out
    saved = load_checkpoint(out / "model.pt")
    assert saved["family"] == "shortrun" and saved["step"] == 4
    assert not {"optimizer", "rng", "buffer", "state"} & set(saved)
    assert saved["recipe"]["trainer"]["run_dir"] is None  # no machine paths travel
    assert "short-run" in (out / "README.md").read_text()
    loaded = latentebm.load(out)
    original = load_shortrun(run)
    assert isinstance(loaded, ShortRunModel)
    torch.testing.assert_close(
        loaded.sample(3, torch.Generator().manual_seed(1)),
        original.sample(3, torch.Generator().manual_seed(1)),
        rtol=0,
        atol=0,
    )
    grid = tmp_path / "from_export.png"
    assert cli_main(["generate", str(out), "-n", "4", "--grid", str(grid), "--seed", "1"]) == 0
    assert png_size(grid)[0] > 0
    assert cli_main(["export", str(run), str(out)]) == 2  # never overwritten
    assert "exists and is not empty" in capsys.readouterr().err
    # shipped as pretrained:NAME, it is still a short-run model to every command
    import latentebm.export

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "tiny").symlink_to(out, target_is_directory=True)
    original_root = latentebm.export._pretrained_root
    latentebm.export._pretrained_root = lambda: shelf  # type: ignore[assignment]
    try:
        grid = tmp_path / "shipped.png"
        assert cli_main(["generate", "pretrained:tiny", "-n", "2", "--grid", str(grid)]) == 0
        assert png_size(grid)[0] > 0
        capsys.readouterr()
        assert cli_main(["evaluate", "pretrained:tiny"]) == 2
        err = capsys.readouterr().err.strip()
        assert "no run directory to write metrics.json into; give -o" in err
    finally:
        latentebm.export._pretrained_root = original_root


def test_end_of_training_keeps_an_older_metrics_file(tmp_path: Path) -> None:
    """A run trained before the metrics file took evaluate's format, then resumed: its old
    ``metrics.json`` is kept as it is and the new entry goes beside it."""
    run = ShortRunTrainer(tiny_recipe(tmp_path / "run", trainer={"max_steps": 2})).fit()
    old = json.dumps({"step": 2, "reconstruction_mse": 0.5}) + "\n"
    (run / "metrics.json").write_text(old)
    again = tiny_recipe(tmp_path / "run", trainer={"max_steps": 4, "resume": "auto"})
    ShortRunTrainer(again).fit()
    assert (run / "metrics.json").read_text() == old
    beside = json.loads((run / "metrics-1.json").read_text())
    assert beside["test"]["mse"]["step"] == 4
    # evaluate merges into the same file, not into the older one
    from latentebm.metrics.image_eval import ImageEvalSettings
    from latentebm.shortrun.evaluate import evaluate_shortrun

    result = evaluate_shortrun(run, images=ImageEvalSettings(recon_images=2, recon_steps=1))
    assert result["output"] == str(run / "metrics-1.json")
    assert (run / "metrics.json").read_text() == old
    merged = json.loads((run / "metrics-1.json").read_text())["test"]["mse"]
    assert merged["n"] == 2 and merged["history"][0]["step"] == 4


def test_shortrun_evaluate_says_how_far_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The noise fit reports its iterations (not the chain's steps), the fid sampling its
    chain, as log lines."""
    import logging

    import latentebm.progress
    from latentebm.metrics import image_eval
    from latentebm.shortrun.evaluate import evaluate_shortrun

    monkeypatch.setattr(latentebm.progress, "PROGRESS_SECONDS", 0.0)
    run = ShortRunTrainer(tiny_recipe(tmp_path / "run")).fit()
    monkeypatch.setattr(image_eval, "fid_extractor", lambda s: (lambda x: x.flatten(1), "px", {}))
    settings = image_eval.ImageEvalSettings(recon_images=2, recon_steps=3, fid_samples=4)
    with caplog.at_level(logging.INFO, logger="latentebm.shortrun.evaluate"):
        evaluate_shortrun(run, metrics="mse,fid", images=settings, write=False)
    lines = [r.getMessage() for r in caplog.records]
    assert "mse: noise fit of images 1-2 of 2, iteration: step 3 of 3" in lines
    assert any(line.startswith("fid: samples 1-4 of 4, chain: step") for line in lines)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        evaluate_shortrun(run, images=image_eval.ImageEvalSettings(recon_steps=0), write=False)
