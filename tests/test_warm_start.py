"""``trainer.init_from`` / ``init_parts`` (a new run from another model's weights) and
``trainer.freeze`` (parts never updated), on the tiny recipe of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from latentebm.build import build_model, build_task_from_checkpoint
from latentebm.checkpoint import list_checkpoints
from latentebm.config import RecipeError, load_recipe
from latentebm.errors import CheckpointError
from latentebm.tasks.text import TextTask
from latentebm.train import Trainer
from latentebm.train_checkpoint import parts_to_copy
from latentebm.warm_start import copy_parts, read_source


def fit(recipe: Path, *overrides: str) -> Path:
    return Trainer(load_recipe(recipe, list(overrides))).fit()


def latest(run: Path) -> dict[str, Any]:
    return torch.load(list_checkpoints(run)[-1], weights_only=True)


def part(weights: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weights.items() if k.startswith(f"{name}.")}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


QUIET = ("trainer.samples_at_end=0", "trainer.tensorboard=false", "trainer.progress=false")


@pytest.fixture
def source_run(tiny_recipe, tmp_path: Path) -> tuple[Path, Path]:
    recipe = tiny_recipe()
    run = tmp_path / "source"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}", *QUIET)
    return recipe, run


def test_a_frozen_generator_copied_from_another_run_stays_exactly_its_weights(
    source_run, tmp_path: Path
) -> None:
    recipe, source = source_run
    before = latest(source)
    run = tmp_path / "prior_only"
    other = tmp_path / "other.txt"  # other data, other words: the source's vocabulary stays
    other.write_text("zebra yak xylophone walrus\nyak zebra\n" * 40, encoding="utf-8")
    fit(
        recipe,
        f"task.train={other}",
        f"trainer.init_from={source}",
        "trainer.init_parts=[generator]",
        "trainer.freeze=[generator]",
        "trainer.max_steps=4",
        f"trainer.run_dir={run}",
        *QUIET,
    )
    after = latest(run)
    assert after["step"] == 4  # a new run: its own step count, not the source's 3 + 4
    assert same(part(after["model"], "generator"), part(before["model"], "generator"))
    # the prior was not copied (init_parts) and it was trained: it differs from the source's
    assert not same(part(after["model"], "prior"), part(before["model"], "prior"))
    assert after["task_state"] == before["task_state"]  # the source's tokenizer, not one of
    own = TextTask(TextTask.Config(train=str(other))).tokenizer.state_dict()  # the new data's
    assert own != before["task_state"]["tokenizer"]
    log = (run / "console.log").read_text(encoding="utf-8")
    assert f"initialised generator from {list_checkpoints(source)[-1]}" in log
    assert "frozen (not updated): generator" in log
    # resumed from its own config.yaml (which keeps trainer.freeze), the run stays frozen
    config = run / "config.yaml"
    fit(config, f"trainer.resume={run}", "trainer.max_steps=6", *QUIET)
    resumed = latest(run)
    assert resumed["step"] == 6
    assert same(part(resumed["model"], "generator"), part(before["model"], "generator"))
    # unfreezing on resume is allowed, and said
    fit(config, f"trainer.resume={run}", "trainer.max_steps=7", "trainer.freeze=[]", *QUIET)
    log = (run / "console.log").read_text(encoding="utf-8")
    assert "trainer.freeze was ['generator'] in the checkpoint, now []" in log
    assert not same(part(latest(run)["model"], "generator"), part(before["model"], "generator"))


def test_default_parts_are_those_both_models_have(source_run, tmp_path: Path) -> None:
    recipe, source = source_run
    path, state = read_source(str(source))
    assert path == list_checkpoints(source)[-1]
    current = load_recipe(recipe, [])
    task = build_task_from_checkpoint(current, state["task_state"], path)
    model = build_model(current, task)
    parts = parts_to_copy(model, state["model"], None)
    assert parts == ["prior", "generator"]  # the tiny model has no inference network
    copy_parts(model, state["model"], parts, path)
    weights = model.state_dict()
    for name in parts:
        assert same(part(weights, name), part(state["model"], name))
    # a Gaussian prior has no weights: only the generator is copied into such a model
    gaussian = build_model(load_recipe(recipe, ["model.prior.kind=gaussian"]), task)
    assert parts_to_copy(gaussian, state["model"], None) == ["generator"]


def test_a_gaussian_prior_run_starts_an_ebm_prior_run(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe()
    source = tmp_path / "gaussian"
    fit(
        recipe,
        "model.prior.kind=gaussian",
        "trainer.max_steps=2",
        f"trainer.run_dir={source}",
        *QUIET,
    )
    run = tmp_path / "ebm"
    fit(
        recipe,
        f"trainer.init_from={source}",
        "trainer.max_steps=1",
        f"trainer.run_dir={run}",
        *QUIET,
    )
    assert "initialised generator from" in (run / "console.log").read_text(encoding="utf-8")


def test_bad_warm_starts_fail_in_one_line_before_a_run_directory_exists(
    source_run, tmp_path: Path
) -> None:
    recipe, source = source_run
    run = tmp_path / "never"
    with pytest.raises(CheckpointError, match="nowhere: no such checkpoint file or run directory"):
        fit(recipe, f"trainer.init_from={tmp_path / 'nowhere'}", f"trainer.run_dir={run}")
    fit_error = r"step_00000003.pt: 'model\.prior' does not fit this model"
    with pytest.raises(CheckpointError, match=fit_error):
        fit(recipe, f"trainer.init_from={source}", "model.z_dim=5", f"trainer.run_dir={run}")
    with pytest.raises(RecipeError, match="trainer.init_parts: this model has no inference"):
        fit(
            recipe,
            f"trainer.init_from={source}",
            "trainer.init_parts=[inference]",
            f"trainer.run_dir={run}",
        )
    with pytest.raises(
        RecipeError, match=r"trainer\.freeze: \['prior', 'generator'\] leaves nothing"
    ):
        fit(recipe, "trainer.freeze=[prior, generator]", f"trainer.run_dir={run}")
    with pytest.raises(RecipeError, match=r"trainer\.freeze"):
        fit(recipe, "trainer.freeze=[decoder]", f"trainer.run_dir={run}")
    assert not run.exists()
