"""Molecule runs end to end: train a tiny QM9 model, generate SMILES and a grid, evaluate."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from latentebm.cli import builtin_recipes, main
from latentebm.config import load_recipe
from latentebm.evaluate import evaluate
from latentebm.metrics.molecule_eval import MoleculeEvalSettings
from latentebm.train import Trainer
from tests.conftest import train_tiny_run

TINY = [
    "task.max_molecules=300",
    "model.z_dim=4",
    "model.prior.hidden_dims=[8,8]",
    "model.generator.embedding_dim=8",
    "model.generator.hidden_dim=16",
    "model.prior_chain.n_steps=3",
    "model.posterior_chain.n_steps=2",
    "trainer.max_steps=3",
    "trainer.batch_size=16",
    "trainer.valid_every=3",
    "trainer.valid_batches=1",
    "trainer.samples_at_end=0",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "device=cpu",
]


@pytest.fixture(scope="module")
def qm9_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qm9_eval")
    overrides = [*TINY, f"task.cache_dir={root / 'cache'}", f"trainer.run_dir={root / 'run'}"]
    return Trainer(load_recipe(builtin_recipes()["qm9"], overrides)).fit()


def test_generate_writes_smiles_and_a_grid(
    qm9_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, grid = tmp_path / "mols.smi", tmp_path / "grid.png"
    argv = ["generate", str(qm9_run), "-n", "6", "--decode", "sample", "--seed", "0"]
    assert main([*argv, "-o", str(out), "--grid", str(grid)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 6
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "grid of 6" in capsys.readouterr().err
    assert main([*argv, "--grid", str(grid)]) == 2  # never overwritten without --force
    assert "exists; not overwritten" in capsys.readouterr().err


def test_evaluate_molecules_is_the_default_for_a_molecule_run(qm9_run: Path) -> None:
    settings = MoleculeEvalSettings(n_samples=40, n_jobs=1)
    result = evaluate(qm9_run, "test", molecules=settings, progress=False, seed=1)
    entry = result["metrics"]["molecules"]
    assert set(result["metrics"]) == {"molecules"}
    assert entry["n_samples"] == 40 and entry["n_samples"] == entry["n_samples"]
    assert 0.0 <= entry["validity"] <= 1.0
    assert entry["n_valid"] == round(entry["validity"] * 40)
    if entry["n_valid"]:
        assert 0.0 < entry["uniqueness"] <= 1.0
    assert entry["generation"]["decode"] == "sample" and entry["step"] == 3
    written = json.loads((qm9_run / "metrics.json").read_text(encoding="utf-8"))
    assert written["test"]["molecules"]["n_samples"] == 40


def test_molecule_metrics_refuse_a_text_run(tmp_path: Path) -> None:
    run = train_tiny_run(tmp_path, f"trainer.run_dir={tmp_path / 'run'}", trainer={"max_steps": 1})
    with pytest.raises(ValueError, match="need a molecule task"):
        evaluate(run, "valid", "molecules", progress=False, write=False)


class FakeTask:
    """A molecule task whose training set is known."""

    class config:  # noqa: N801 - mimics a Config instance
        canonicalize = True

    def __init__(self, train: list[str]) -> None:
        self.train = train

    def train_smiles(self) -> list[str]:
        return self.train


class FakePretrained:
    """Generates a fixed list of molecules."""

    def __init__(self, samples: list[str], train: list[str]) -> None:
        self.samples = samples
        self.task = FakeTask(train)

    def generate(self, n: int, **options: object) -> list[str]:
        return self.samples[:n]


@pytest.mark.slow
@pytest.mark.real_data
def test_moses_table_end_to_end(qm9_run: Path, tmp_path: Path) -> None:
    root = Path(os.environ.get("LATENTEBM_DATA", "")) / "moses"
    needed = ["test.csv.gz", "test_scaffolds.csv.gz", "fcd_ref_stats.npz", "mcf.csv"]
    missing = [name for name in needed if not (root / name).is_file()]
    if not os.environ.get("LATENTEBM_DATA") or missing:
        pytest.skip(f"MOSES files not under $LATENTEBM_DATA/moses: {missing or needed}")
    from latentebm.metrics.molecule_eval import evaluate_molecule_metrics
    from latentebm.metrics.molecules import read_smiles_file

    real = read_smiles_file(root / "test.csv.gz")[::2000][:60]  # spread over the file
    samples = [*real[:40], "not a molecule", ""]
    settings = MoleculeEvalSettings(
        n_samples=len(samples), n_jobs=1, cache_dir=str(tmp_path), reference_molecules=300
    )
    pretrained = FakePretrained(samples, train=real[:20])
    entries = evaluate_molecule_metrics(
        pretrained, ["moses", "molecules"], settings, data_root=None, seed=0
    )
    moses, table = entries["moses"], entries["molecules"]
    assert moses["valid"] == pytest.approx(40 / 42) and table["validity"] == moses["valid"]
    assert moses["Novelty"] == pytest.approx(0.5)  # 20 of the 40 distinct are in train
    assert table["novelty"] == pytest.approx(0.5)
    assert moses["Filters"] > 0.9 and 0.2 < moses["SNN/Test"] <= 1.0  # 300 reference molecules
    assert 0 < moses["FCD/Test"] < 100 and math.isfinite(moses["FCD/TestSF"])  # n = 40: biased up
    assert moses["reference"] and moses["n_samples"] == 42
