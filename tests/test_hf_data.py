"""Hugging Face ``datasets`` as a data source (:mod:`latentebm.hf_data`), offline, with local
``save_to_disk`` folders and data files."""

from __future__ import annotations

from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets", reason="the hf: source needs datasets (extra 'test')")

from latentebm.data import DataFileError, DataFormatError  # noqa: E402
from latentebm.hf_data import materialize, parse  # noqa: E402
from tests.conftest import tiny_sentences  # noqa: E402


@pytest.fixture
def corpus_dict(tmp_path: Path) -> Path:
    """A DatasetDict with train/test splits, a ``sentence`` column and a ``label`` column."""
    sentences = tiny_sentences()
    folder = tmp_path / "corpus"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"sentence": sentences[:150], "label": [0] * 150}),
            "test": datasets.Dataset.from_dict(
                {"sentence": ["a two\nline\t example", *sentences[150:]], "label": [1] * 51}
            ),
        }
    ).save_to_disk(str(folder))
    return folder


def test_a_split_and_column_become_one_example_per_line(corpus_dict: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spec = f"hf:{corpus_dict}?split=test&column=sentence"
    path = materialize(spec, ("text",), cache)
    lines = path.read_text(encoding="utf-8").split("\n\n")
    assert lines[0] == "a two line example"  # whitespace runs, newlines too: one space
    assert len([line for line in lines if line.strip()]) == 51
    assert materialize(spec, ("text",), cache) == path  # cached by the dataset's fingerprint
    other = materialize(f"hf:{corpus_dict}?split=train&column=sentence", ("text",), cache)
    assert other != path


def test_bad_sources_are_one_line_naming_the_value(corpus_dict: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataFileError, match=r"names no split \(splits: train, test\)"):
        materialize(f"hf:{corpus_dict}?column=sentence", ("text",), cache)
    with pytest.raises(DataFileError, match=r"has no split 'dev' \(splits: train, test\)"):
        materialize(f"hf:{corpus_dict}?split=dev", ("text",), cache)
    with pytest.raises(DataFormatError, match=r"no column 'text' \(columns: sentence, label\)"):
        materialize(f"hf:{corpus_dict}?split=train", ("text",), cache)
    with pytest.raises(DataFileError, match="unknown option colum"):
        parse(f"hf:{corpus_dict}?colum=sentence")
    with pytest.raises(DataFileError, match="no such folder or file"):
        materialize(f"hf:{tmp_path / 'missing'}", ("text",), cache)
    with pytest.raises(DataFileError, match=r"hf:nobody/nothing: cannot load the dataset"):
        materialize("hf:nobody/nothing", ("text",), cache)  # offline (HF_DATASETS_OFFLINE=1)


def test_a_text_recipe_trains_on_a_saved_dataset(corpus_dict: Path, tmp_path: Path) -> None:
    import yaml

    from latentebm.config import load_recipe
    from latentebm.train import Trainer
    from tests.conftest import tiny_recipe_dict

    recipe = tmp_path / "tiny.yaml"
    task = {
        "_component_": "latentebm.tasks.text.TextTask",
        "train": f"hf:{corpus_dict}?split=train&column=sentence",
        "test": f"hf:{corpus_dict}?split=test&column=sentence",
        "valid_fraction": 0.1,
        "cache_dir": str(tmp_path / "cache"),
    }
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict("unused", task=task)), encoding="utf-8")
    run = tmp_path / "run"
    overrides = ["trainer.max_steps=2", "trainer.samples_at_end=0", f"trainer.run_dir={run}"]
    Trainer(load_recipe(recipe, overrides)).fit()
    import latentebm

    loaded = latentebm.load(tmp_path / "run")
    assert loaded.task.num_sentences("train") == 135  # 150 rows, 10 % held out for valid
    assert loaded.task.num_sentences("test") == 51


def test_a_molecule_task_reads_a_parquet_column(tmp_path: Path) -> None:
    pytest.importorskip("rdkit", reason="molecule tasks need rdkit (extra 'mol')")
    from latentebm.tasks.molecules import MoleculeTask

    data = tmp_path / "mols.parquet"
    smiles = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "OCC(O)CO"] * 8
    datasets.Dataset.from_dict({"SMILES": smiles, "id": list(range(40))}).to_parquet(str(data))
    config = MoleculeTask.Config(
        train=f"hf:{data}", valid_fraction=0.1, cache_dir=str(tmp_path / "cache")
    )
    task = MoleculeTask(config)
    assert task.num_sentences("train") + task.num_sentences("valid") == 40
    assert set(task.train_smiles()) <= {"CCO", "c1ccccc1", "CC(=O)O", "CCN", "OCC(O)CO"}


def test_relative_paths_missing_values_and_non_text_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": ["a b", None, "  ", "c"], "n": [1, 2, 3, 4]}).to_parquet(
        str(root / "sub" / "d.parquet")
    )
    monkeypatch.chdir(tmp_path)  # not found here: then under the data root, as task paths are
    with caplog.at_level("WARNING"):
        path = materialize("hf:sub/d.parquet", ("text",), tmp_path / "c", data_root=root)
    assert [x for x in path.read_text().split("\n\n") if x.strip()] == ["a b", "c"]
    assert "2 of 4 rows are empty or missing: skipped" in caplog.text
    with pytest.raises(DataFileError, match=r"hf:other/d.parquet: no such folder or file"):
        materialize("hf:other/d.parquet", ("text",), tmp_path / "c", data_root=root)
    with pytest.raises(DataFormatError, match="column 'n' holds int, not text"):
        materialize("hf:sub/d.parquet?column=n", ("text",), tmp_path / "c", data_root=root)
