"""The task contract (latentebm/task_contract.py) against every task of the toolkit and every
test fake that stands in for a task: each has the members of the contract it is used under, and
the capabilities it claims; a class that lacks a member is refused where tasks are built, in
one line naming the component and the members.

The recipe fixtures ``tests.test_config.DummyTask`` and ``tests.test_recipe_safety``'s ``Task``
only test how recipes name and import components; no test builds them as tasks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentebm.build import build_task
from latentebm.config import ComponentConfig, load_recipe
from latentebm.task_contract import (
    AnomalySplit,
    DataSpaceTask,
    DecodesSequences,
    ImageTensors,
    IndexedBatches,
    MoleculeReference,
    Task,
    TaskContractError,
    WritesSamples,
    check_task,
    examples_in,
    missing_members,
    optional_member,
)
from latentebm.tasks.images import ImageTask
from latentebm.tasks.text import TextTask

REPO = Path(__file__).resolve().parents[1]
CAPABILITIES = (
    DecodesSequences,
    WritesSamples,
    IndexedBatches,
    AnomalySplit,
    ImageTensors,
    MoleculeReference,
)


def capabilities(task: object) -> set[str]:
    return {cap.__name__ for cap in CAPABILITIES if isinstance(task, cap)}


def text_task(folder: Path) -> TextTask:
    (folder / "train.txt").write_text("the cat sat\na dog ran far\nthe end\n")
    (folder / "valid.txt").write_text("the dog sat\n")
    return TextTask(TextTask.Config(train="train.txt", valid="valid.txt"), str(folder))


def image_task(folder: Path) -> ImageTask:
    images = np.random.default_rng(0).uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32)
    np.save(folder / "train.npy", images)
    np.save(folder / "test.npy", images[:2])
    return ImageTask(ImageTask.Config(dataset="array", path=str(folder)))


def test_the_text_task_keeps_the_contract(tmp_path: Path) -> None:
    task = text_task(tmp_path)
    check_task(task, "latentebm.tasks.text.TextTask")
    assert isinstance(task, Task)
    assert capabilities(task) == {"DecodesSequences", "IndexedBatches"}
    assert task.num_examples("train") == task.num_sentences("train") == 3


def test_the_image_task_keeps_the_contract(tmp_path: Path) -> None:
    task = image_task(tmp_path)
    check_task(task, "latentebm.tasks.images.ImageTask")
    check_task(task, "latentebm.tasks.images.ImageTask", DataSpaceTask)  # short-run EBMs too
    assert capabilities(task) == {"WritesSamples", "IndexedBatches", "AnomalySplit", "ImageTensors"}
    assert task.num_examples("train") == 6


@pytest.mark.skipif(
    importlib.util.find_spec("rdkit") is None or importlib.util.find_spec("selfies") is None,
    reason="the molecule task needs RDKit and selfies (pip install -e '.[mol]')",
)
def test_the_molecule_task_keeps_the_contract(tmp_path: Path) -> None:
    from latentebm.tasks.molecules import MoleculeTask

    (tmp_path / "mols.csv").write_text("SMILES\nCCO\nc1ccccc1\nCC(=O)O\n")
    task = MoleculeTask(MoleculeTask.Config(train="mols.csv", n_jobs=1, cache=False), str(tmp_path))
    check_task(task, "latentebm.tasks.molecules.MoleculeTask")
    assert capabilities(task) == {"DecodesSequences", "IndexedBatches", "MoleculeReference"}
    assert task.num_examples("train") == 3


def test_every_test_fake_has_what_its_use_needs() -> None:
    """The fakes stand in for a task where only part of the contract is used."""
    from tests.test_image_eval import FakeImageTask
    from tests.test_molecule_eval import FakeTask
    from tests.test_shortrun import TinyImageTask

    tiny = TinyImageTask(TinyImageTask.Config())
    check_task(tiny, "tests.test_shortrun.TinyImageTask", DataSpaceTask)  # the short-run trainer
    assert WritesSamples in {cap for cap in CAPABILITIES if isinstance(tiny, cap)}
    images = FakeImageTask(np.zeros((3, 1, 4, 4), dtype=np.float32), np.array([0, 1, 0]))
    assert {"ImageTensors", "AnomalySplit"} <= capabilities(images)  # the image evaluators
    assert missing_members(images, DataSpaceTask) == ["generator_kwargs"]  # batches: yes
    assert capabilities(FakeTask(["CCO"])) == {"MoleculeReference"}  # the molecule metrics


class HalfTask:
    """A task class that forgot most of the contract."""

    @dataclass
    class Config:
        size: int = 1

    def __init__(self, config: Any, data_root: Any = None, state: Any = None) -> None:
        self.config = config

    def batches(self, split: str, batch_size: int, *, seed: int, epoch: int) -> list[Any]:
        return []


def test_a_task_without_the_contract_is_refused_where_tasks_are_built() -> None:
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    half = ComponentConfig("tests.test_task_contract.HalfTask", HalfTask.Config())
    with pytest.raises(TaskContractError) as caught:
        build_task(dataclasses.replace(recipe, task=half))
    message = str(caught.value)
    assert message == (
        "task tests.test_task_contract.HalfTask: HalfTask lacks generator_kwargs, splits, "
        "num_examples, num_target_tokens, state_dict, describe of the Task contract "
        "(latentebm.task_contract)"
    )


class OlderTask(HalfTask):
    """A task written before the contract named ``num_examples``: it counts with
    ``num_sentences``, and has the rest."""

    splits = ["train"]

    def num_sentences(self, split: str) -> int:
        return 5

    def num_target_tokens(self, batch: Any) -> int:
        return 0

    def generator_kwargs(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return "older"


def test_a_task_written_before_the_contract_still_counts_its_examples() -> None:
    task = OlderTask(OlderTask.Config())
    check_task(task, "tests.test_task_contract.OlderTask")  # num_sentences stands in
    assert examples_in(task, "train") == 5
    assert optional_member(task, "throughput_unit") == "tokens"  # the documented default


def test_the_contract_error_is_one_line_from_the_command_line_and_from_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from latentebm.build import build_task_from_checkpoint
    from latentebm.cli import main as cli_main

    data = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    data["task"] = {"_component_": "tests.test_task_contract.HalfTask"}
    recipe_file = tmp_path / "half.yaml"
    recipe_file.write_text(yaml.safe_dump(data))
    args = ["train", str(recipe_file), f"trainer.run_dir={tmp_path / 'run'}"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("latentebm: error: task tests.test_task_contract.HalfTask: ")
    assert "lacks generator_kwargs" in err[-1]
    assert all(not line.startswith("Traceback") for line in err)
    recipe = load_recipe(recipe_file)
    with pytest.raises(TaskContractError):  # not reported as a damaged checkpoint
        build_task_from_checkpoint(recipe, None, tmp_path / "step_00000001.pt")
