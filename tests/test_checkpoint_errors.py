"""Damaged or foreign checkpoints (missing keys, wrong shapes, wrong types) are refused in one
line naming the file and the key, by ``generate`` and by a resumed ``train`` (issue 13)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from latentebm.checkpoint import list_checkpoints
from latentebm.cli import main as cli_main
from tests.conftest import train_tiny_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("trained")
    run = train_tiny_run(root, "trainer.max_steps=1", f"trainer.run_dir={root / 'run'}")
    return root, torch.load(list_checkpoints(run)[-1], weights_only=True)


def _drop_weight(state: dict[str, Any]) -> None:
    state["model"] = dict(state["model"])
    state["model"].pop("prior.f.0.weight")


def _reshape_weight(state: dict[str, Any]) -> None:
    state["model"] = dict(state["model"])
    state["model"]["prior.f.0.weight"] = torch.zeros(3, 3)


DAMAGE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing weight": (_drop_weight, "'model' does not fit this model (Missing key"),
    "wrong shape": (_reshape_weight, "'model' does not fit this model (size mismatch"),
    "no task state": (lambda s: s.pop("task_state"), "incomplete checkpoint: no 'task_state'"),
    "step not an int": (lambda s: s.update(step="x"), "'step' is str, not int"),
    "model not a dict": (lambda s: s.update(model=[1, 2]), "'model' is list, not dict"),
}


@pytest.mark.parametrize("command", ["generate", "resume"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoints_are_one_line_naming_file_and_key(
    trained: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    command: str,
) -> None:
    root, state = trained
    state = dict(state)
    edit, expected = DAMAGE[damage]
    edit(state)
    checkpoint = tmp_path / "damaged.pt"
    torch.save(state, checkpoint)
    if command == "generate":
        args = ["generate", str(checkpoint), "-n", "1"]
    else:
        args = ["train", str(root / "tiny.yaml"), f"trainer.resume={checkpoint}"]
        args += ["trainer.max_steps=2", f"trainer.run_dir={tmp_path / 'run'}"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    assert last.startswith(f"latentebm: error: {checkpoint}: ") and expected in last, last
    assert not (tmp_path / "run").exists()


def test_resume_needs_the_optimiser_state(
    trained: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, state = trained
    state = {k: v for k, v in state.items() if k != "optim_generator"}
    checkpoint = tmp_path / "no_optim.pt"
    torch.save(state, checkpoint)
    args = ["train", str(root / "tiny.yaml"), f"trainer.resume={checkpoint}"]
    assert cli_main([*args, f"trainer.run_dir={tmp_path / 'run'}"]) == 2
    assert "incomplete checkpoint: no 'optim_generator'" in capsys.readouterr().err
    # a model without its optimiser still generates
    assert cli_main(["generate", str(checkpoint), "-n", "1"]) == 0
