"""Tests of the ``Trainer``: run directories, exact resume, checkpoints, the non-finite guard,
``latentebm.load`` and data-parallel training, on the tiny recipe of tests/conftest.py."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch

import latentebm
import latentebm.runs as runs_module
import latentebm.train as train_module
from latentebm.checkpoint import checkpoint_path, list_checkpoints, save_atomic
from latentebm.config import load_recipe, recipe_to_dict, with_current_defaults
from latentebm.model import LatentEBM
from latentebm.runs import FinalPhaseReserve, TimedCheckpoints
from latentebm.tasks.text import TextTask
from latentebm.train import MAX_CONSECUTIVE_SKIPS, Trainer, TrainingError
from tests.conftest import cli_env

FIXTURES = Path(__file__).parent / "fixtures"
VOLATILE = {"time", "tokens_per_s", "images_per_s", "steps_per_s"}


def fit(recipe: Path, *overrides: str) -> Path:
    """Train in this process (faster than the CLI); returns the run directory."""
    return Trainer(load_recipe(recipe, list(overrides))).fit()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def load_latest(run_dir: Path) -> dict[str, Any]:
    return torch.load(list_checkpoints(run_dir)[-1], weights_only=True)


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested checkpoint contents (tensors with ``torch.equal``)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {type(b)} is not a dict"
    else:
        assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):  # dict or OrderedDict
        assert a.keys() == b.keys(), f"{where}: keys {a.keys()} != {b.keys()}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class FrozenClock(datetime):
    """``datetime`` whose ``now()`` is always the same second."""

    @classmethod
    def now(cls, tz: Any = None) -> FrozenClock:  # type: ignore[override]
        return cls(2030, 1, 2, 3, 4, 5)


# ----------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize(
    "train_sentences",
    [
        pytest.param(64, id="resume-mid-epoch"),  # 4 batches/epoch: resume at batch 3 of 4
        pytest.param(48, id="resume-at-epoch-end"),  # 3 batches/epoch: resume after batch 3
    ],
)
@pytest.mark.parametrize("resume", ["auto", "run-dir"])
def test_resume_equals_uninterrupted(
    tiny_recipe, tmp_path: Path, train_sentences: int, resume: str
) -> None:
    recipe = tiny_recipe(
        task={"max_sentences": train_sentences},
        optim={"generator": {"lr_decay": 0.5}, "prior": {"lr_decay": 0.8}},
        trainer={"log_every": 1, "valid_every": 3, "checkpoint_every": 3},
    )
    straight = fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={tmp_path / 'a'}")

    interrupted = tmp_path / "b"
    assert fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={interrupted}") == interrupted
    if resume == "auto":
        again = ["trainer.resume=auto", f"trainer.run_dir={interrupted}"]
    else:
        again = [f"trainer.resume={interrupted}"]  # the run dir comes from the checkpoint
    assert fit(recipe, "trainer.max_steps=6", *again) == interrupted

    a, b = load_latest(straight), load_latest(interrupted)
    assert a["step"] == b["step"] == 6
    assert a["epoch"] == 1, "the epoch boundary must fall inside the run"
    for key in ("model", "optim_generator", "optim_prior", "rng", "epoch", "batch_in_epoch"):
        assert_same(a[key], b[key], key)
    # the per-epoch decay was applied once, not again on resume
    assert b["optim_generator"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5)

    def after_resume(run: Path) -> list[dict[str, Any]]:
        rows = [r for r in read_metrics(run) if r["step"] > 3]
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]

    assert after_resume(interrupted) == after_resume(straight)
    assert len(after_resume(straight)) == 4  # steps 4, 5, 6 and the validation at 6
    steps = [r["step"] for r in read_metrics(interrupted) if "recon_nll" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    # config.yaml keeps the first settings; the resumed run's recipe is saved beside it
    assert load_recipe(interrupted / "config.yaml").trainer.max_steps == 3
    resumed_config = load_recipe(interrupted / "config.step_00000003.yaml")
    assert resumed_config.trainer.max_steps == 6


# ----------------------------------------------------------------------------- run directories


def test_existing_run_dir_is_refused(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe()
    run = tmp_path / "run"
    fit(recipe, "trainer.max_steps=2", f"trainer.run_dir={run}")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match=re.escape(str(run)) + ".*resume=auto"):
        fit(recipe, "trainer.max_steps=2", f"trainer.run_dir={run}")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_runs_started_in_the_same_second_get_different_dirs(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "datetime", FrozenClock)
    recipe = tiny_recipe()
    first = fit(recipe, "trainer.max_steps=1", f"trainer.runs_root={tmp_path}")
    second = fit(recipe, "trainer.max_steps=1", f"trainer.runs_root={tmp_path}")
    assert first == tmp_path / "tiny" / "20300102-030405"
    assert second == tmp_path / "tiny" / "20300102-030405-1"
    for run in (first, second):
        assert [r["step"] for r in read_metrics(run) if "recon_nll" in r] == [1]


def test_overlapping_runs_get_different_dirs(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_module, "datetime", FrozenClock)
    recipe = tiny_recipe()
    args = ["trainer.max_steps=1", f"trainer.runs_root={tmp_path}"]
    real_build_task = train_module.build_task
    rival: list[Path] = []

    def build_task_while_another_run_starts(*a: Any, **kw: Any) -> Any:
        if not rival:  # the first run is loading its data: a second run starts and finishes
            rival.append(tmp_path)
            rival[0] = fit(recipe, *args)
        return real_build_task(*a, **kw)

    monkeypatch.setattr(train_module, "build_task", build_task_while_another_run_starts)
    first = fit(recipe, *args)
    assert first != rival[0]
    for run in (first, rival[0]):
        assert [r["step"] for r in read_metrics(run) if "recon_nll" in r] == [1]


def test_resume_with_changed_model_is_refused(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe()
    run = tmp_path / "run"
    fit(recipe, "trainer.max_steps=2", f"trainer.run_dir={run}")
    files = sorted(run.rglob("*"))
    with pytest.raises(TrainingError, match=r"model\.z_dim is 5 here but 4 in the checkpoint"):
        fit(recipe, "model.z_dim=5", "trainer.resume=auto", f"trainer.run_dir={run}")
    with pytest.raises(TrainingError, match=r"model\.generator\.hidden_dim"):
        fit(recipe, "model.generator.hidden_dim=32", f"trainer.resume={run}")
    assert sorted(run.rglob("*")) == files
    # how the chains execute is not the model: turning torch.compile on is allowed (no step
    # is left to run, so nothing compiles here)
    fit(
        recipe,
        "model.compile=default",
        "model.generator.fast_chain=false",  # so is how the generator computes (and a
        "model.generator.chain_matmul_dtype=bfloat16",  # checkpoint that lacks these keys)
        "trainer.max_steps=2",
        "trainer.samples_at_end=0",
        f"trainer.resume={run}",
    )


def test_a_checkpoint_from_before_a_key_existed_resumes_under_its_default(
    tiny_recipe, tmp_path: Path
) -> None:
    """A key that a later version added is absent from an older checkpoint's recipe: the resume
    reads it as that key's default (it was the behaviour then), and still refuses a value that
    differs from the default."""
    recipe = tiny_recipe()
    run = tmp_path / "run"
    fit(recipe, "trainer.max_steps=2", "trainer.samples_at_end=0", f"trainer.run_dir={run}")
    path = list_checkpoints(run)[-1]
    saved = torch.load(path, weights_only=True)
    assert saved["recipe"]["task"].pop("sentence_split") == "line"
    assert saved["recipe"]["model"]["posterior_chain"].pop("noise_factor") == 1.0
    save_atomic(saved, path)
    with pytest.raises(TrainingError, match=r"task\.sentence_split is 'paragraph' here"):
        fit(recipe, "task.sentence_split=paragraph", "trainer.max_steps=3", f"trainer.resume={run}")
    fit(recipe, "trainer.max_steps=3", "trainer.samples_at_end=0", f"trainer.resume={run}")
    assert load_latest(run)["step"] == 3


def test_reading_an_old_recipe_never_imports_a_class_the_current_recipe_does_not_name(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filling an older checkpoint's missing keys with defaults imports the component classes
    only when the user's own recipe names exactly those classes."""
    package = tmp_path / "mypkg" / "dec"
    package.mkdir(parents=True)
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (package / "__init__.py").write_text(
        "from latentebm.generators.lstm import LSTMDecoder as Decoder\n"
    )
    marker = tmp_path / "imported"
    (package / "sub.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from latentebm.generators.lstm import LSTMDecoder as Evil\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    current = load_recipe(tiny_recipe(), ["model.generator._component_=mypkg.dec.Decoder"])
    saved = recipe_to_dict(current)
    saved["model"]["generator"]["_component_"] = "mypkg.dec.sub.Evil"
    del saved["task"]["sentence_split"]
    assert with_current_defaults(saved, current) == saved  # unchanged: nothing imported
    assert not marker.exists()
    same = recipe_to_dict(current)
    del same["task"]["sentence_split"]
    assert with_current_defaults(same, current)["task"]["sentence_split"] == "line"


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_contents_and_pruning(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe()
    overrides = ["trainer.max_steps=6", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2"]
    run = fit(recipe, *overrides, f"trainer.run_dir={tmp_path / 'run'}")
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000005.pt", "step_00000006.pt"]

    state = torch.load(folder / "step_00000006.pt", weights_only=True)
    for key in ("step", "rng", "recipe", "task_state", "library_version", "model"):
        assert key in state, key
    assert state["step"] == 6
    assert state["library_version"] == latentebm.__version__
    expected = load_recipe(recipe, [*overrides, f"trainer.run_dir={tmp_path / 'run'}"])
    assert state["recipe"] == recipe_to_dict(expected)
    assert len(state["rng"]) == 1
    assert {"torch", "python", "numpy", "langevin"} <= set(state["rng"][0])
    task = TextTask(expected.task.args, state=state["task_state"])
    assert task.vocab_size == state["model"]["generator.output.weight"].shape[0]
    assert torch.load(folder / "step_00000005.pt", weights_only=True)["step"] == 5


def test_save_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "step_00000001.pt"
    save_atomic({"step": 1, "w": torch.ones(2)}, path)
    with pytest.raises(Exception):  # noqa: B017 - torch.save cannot pickle a lambda
        save_atomic({"step": 2, "bad": lambda: None}, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert torch.load(path, weights_only=True)["step"] == 1  # the old file is intact


# ----------------------------------------------------------------------------- non-finite


def test_nonfinite_stops_with_step_and_term(tiny_recipe, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as error:
        fit(tiny_recipe(), "optim.prior.lr=1e30", f"trainer.run_dir={run}")
    message = str(error.value)
    found = re.match(r"step (\d+): (\w+) is (nan|inf|-inf) \(not finite\)", message)
    assert found, message
    assert found.group(2) in {"recon_nll", "energy_pos", "energy_neg", "energy_diff", "prior_loss"}
    assert "trainer.nonfinite=skip" in message
    step = int(found.group(1))
    assert step >= 2  # the first step is fine; its huge update breaks the next one
    saved = checkpoint_path(run, step - 1)
    assert str(saved) in message
    assert torch.load(saved, weights_only=True)["step"] == step - 1


def test_nonfinite_skip_gives_up_after_consecutive_failures(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    with pytest.raises(TrainingError, match=r"step \d+: 11 batches in a row were not finite"):
        fit(recipe, "optim.prior.lr=1e30", "trainer.nonfinite=skip", f"trainer.run_dir={run}")
    assert capsys.readouterr().err.count("batch skipped") == MAX_CONSECUTIVE_SKIPS


@pytest.fixture
def poisoned_third_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third learning step's generator loss (hence recon_nll) is NaN."""
    original = LatentEBM.compute_losses
    calls: list[int] = []

    def compute_losses(self: LatentEBM, x: torch.Tensor, **kw: Any) -> Any:
        losses = original(self, x, **kw)
        calls.append(1)
        if len(calls) == 3:
            losses.generator_loss = losses.generator_loss * math.nan
        return losses

    monkeypatch.setattr(LatentEBM, "compute_losses", compute_losses)


@pytest.mark.usefixtures("poisoned_third_step")
def test_nonfinite_stop_names_step_and_term(tiny_recipe, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"^step 3: recon_nll is nan \(not finite\)"):
        fit(tiny_recipe(), f"trainer.run_dir={tmp_path / 'run'}")
    state = torch.load(checkpoint_path(tmp_path / "run", 2), weights_only=True)
    assert state["step"] == 2


@pytest.mark.usefixtures("poisoned_third_step")
def test_nonfinite_skip_continues(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = fit(tiny_recipe(), "trainer.nonfinite=skip", f"trainer.run_dir={tmp_path / 'run'}")
    assert "step 3: recon_nll is nan; batch skipped" in capsys.readouterr().err
    state = load_latest(run)
    assert state["step"] == 6
    assert state["skipped"] == 1
    assert state["batch_in_epoch"] == 7  # 6 updates + the skipped batch
    rows = [r for r in read_metrics(run) if "recon_nll" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["recon_nll"]) for r in rows)


# ----------------------------------------------------------------------------- load


def test_load_and_generate(tiny_recipe, tiny_corpus: Path, tmp_path: Path) -> None:
    run = fit(tiny_recipe(), "trainer.max_steps=3", f"trainer.run_dir={tmp_path / 'run'}")
    tiny_corpus.unlink()  # a trained model needs no data
    model = latentebm.load(str(run))
    assert model.step == 3
    samples = model.generate(3, seed=0)
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
    assert model.generate(3, seed=0) == samples
    sampled = model.generate(3, seed=0, decode="sample")
    assert model.generate(3, seed=0, decode="sample") == sampled
    assert model.generate(3, seed=1, decode="sample") != sampled
    # a checkpoint file works as well as its run directory
    assert latentebm.load(str(checkpoint_path(run, 3))).generate(3, seed=0) == samples


# ----------------------------------------------------------------------------- distributed


@pytest.mark.slow
def test_two_process_ranks_stay_identical(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe()
    run, probes = tmp_path / "run", tmp_path / "probes"
    probes.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(FIXTURES / "ddp_probe.py"), str(probes)]
    command += ["train", str(recipe), "trainer.max_steps=4", "trainer.checkpoint_every=2"]
    command += ["trainer.samples_at_end=0", f"trainer.run_dir={run}"]
    done = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr

    # gradients: different on each rank before the all-reduce, their mean on both after
    g0 = torch.load(probes / "grads_rank0.pt", weights_only=True)
    g1 = torch.load(probes / "grads_rank1.pt", weights_only=True)
    assert len(g0["before"]) == len(g1["before"]) > 0
    assert not all(torch.equal(a, b) for a, b in zip(g0["before"], g1["before"], strict=True))
    pairs = zip(g0["after"], g1["after"], strict=True)
    for a, b, (after0, after1) in zip(g0["before"], g1["before"], pairs, strict=True):
        assert torch.equal(after0, after1)
        torch.testing.assert_close(after0, (a + b) / 2, rtol=1e-6, atol=1e-9)

    # parameters: the same on both ranks at every checkpoint, and those saved
    for step in (2, 4):
        m0 = torch.load(probes / f"model_rank0_step{step}.pt", weights_only=True)
        m1 = torch.load(probes / f"model_rank1_step{step}.pt", weights_only=True)
        assert_same(m0, m1, f"step {step}")
        assert_same(m0, torch.load(checkpoint_path(run, step), weights_only=True)["model"])

    # one process continues the two-process run
    capsys.readouterr()
    fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert "checkpoint was written by 2 process(es)" in capsys.readouterr().err
    assert load_latest(run)["step"] == 6


def test_resume_into_another_run_dir_forks_the_run(tiny_recipe, tmp_path: Path) -> None:
    """resume=<checkpoint> with another trainer.run_dir continues there; the source run is
    left as it was, and the forked run equals the uninterrupted one."""
    recipe = tiny_recipe()
    source, fork, straight = tmp_path / "source", tmp_path / "fork", tmp_path / "straight"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={source}")
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={fork}", f"trainer.resume={source}")
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={straight}")
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before
    assert_same(load_latest(fork)["model"], load_latest(straight)["model"])
    assert (fork / "config.yaml").is_file()


def test_max_minutes_stops_with_a_checkpoint_and_counts_over_resumes(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(trainer={"checkpoint_every": 100, "valid_every": 100})
    run = tmp_path / "run"
    fit(recipe, "trainer.max_steps=50", "trainer.max_minutes=1e-6", f"trainer.run_dir={run}")
    first = load_latest(run)
    assert first["step"] == 1  # the budget is spent by the first step; it still checkpoints
    assert first["train_seconds"] > 0
    assert "max_minutes=1e-06 reached at step 1" in capsys.readouterr().err
    rows = read_metrics(run)
    assert any("valid_recon_nll" in r and r["step"] == 1 for r in rows)  # validated at the end
    fit(recipe, "trainer.max_steps=3", "trainer.resume=auto", f"trainer.run_dir={run}")
    resumed = load_latest(run)
    assert resumed["step"] == 3 and resumed["train_seconds"] > first["train_seconds"]


def test_timed_checkpoints_fire_at_multiples_and_once_per_jump() -> None:
    timer = TimedCheckpoints(0.5, seconds_spent=0.0)  # every 30 s of training
    assert [timer.due(s) for s in (10.0, 29.9, 30.0, 31.0, 95.0, 100.0, 120.0)] == [
        False,
        False,
        True,
        False,
        True,  # 60 and 90 both passed: one checkpoint
        False,
        True,
    ]
    resumed = TimedCheckpoints(0.5, seconds_spent=45.0)  # a resumed run keeps the same grid
    assert not resumed.due(59.0) and resumed.due(60.0)
    off = TimedCheckpoints(None, seconds_spent=0.0)
    assert not off.enabled and not off.due(1e9)


def test_cpu_clock_budget_and_timed_checkpoints_survive_a_resume(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(0, 10_000, 10))  # a CPU clock that advances 10 s per reading
    monkeypatch.setattr(time, "process_time", lambda: float(next(ticks)))
    recipe = tiny_recipe(trainer={"checkpoint_every": 100, "valid_every": 100})
    common = [
        "trainer.clock=cpu",
        "trainer.checkpoint_every_minutes=0.5",
        "trainer.keep_checkpoints=0",
    ]

    def steps_saved(run: Path) -> set[int]:
        return {int(p.stem.split("_")[1]) for p in list_checkpoints(run)}

    straight = fit(recipe, *common, "trainer.max_steps=8", f"trainer.run_dir={tmp_path / 'a'}")
    assert steps_saved(straight) == {3, 6, 8}  # 30 s, 60 s and the last step
    split = tmp_path / "b"
    fit(recipe, *common, "trainer.max_steps=4", f"trainer.run_dir={split}")
    fit(recipe, *common, "trainer.max_steps=8", "trainer.resume=auto", f"trainer.run_dir={split}")
    assert steps_saved(split) == {3, 4, 6, 8}
    assert load_latest(split)["train_seconds"] == load_latest(straight)["train_seconds"] == 80.0
    budget = fit(
        recipe,
        "trainer.clock=cpu",
        "trainer.max_minutes=1",
        "trainer.max_steps=50",
        f"trainer.run_dir={tmp_path / 'c'}",
    )
    # 60 s of (fake) CPU time at 10 s per step, of which 30 s (at most half) are kept for the
    # final phase: two validation batches and one batch of end-of-run samples, each priced at
    # one step
    assert load_latest(budget)["step"] == 3
    no_final_phase = fit(
        recipe,
        "trainer.clock=cpu",
        "trainer.max_minutes=1",
        "trainer.max_steps=50",
        "trainer.samples_at_end=0",
        "trainer.valid_batches=1",
        f"trainer.run_dir={tmp_path / 'd'}",
    )
    assert load_latest(no_final_phase)["step"] == 5  # 10 s kept for one validation batch


def test_the_final_phase_reserve_prices_validation_as_measured() -> None:
    reserve = FinalPhaseReserve(valid_batches=4, sample_batches=2)
    assert reserve.seconds(seconds_per_step=3.0) == 4 * 3.0 + 2 * 3.0  # nothing measured yet
    reserve.record_validation(seconds=2.0, batches=4)
    assert reserve.seconds(seconds_per_step=3.0) == 4 * 0.5 + 2 * 3.0
    assert FinalPhaseReserve(0, 0).seconds(5.0) == 0.0
    # what fits of the final validation: the samples' share first, at least one batch
    assert reserve.batches_that_fit(seconds_left=7.0, seconds_per_step=3.0) == 2  # (7-6)/0.5
    assert reserve.batches_that_fit(seconds_left=100.0, seconds_per_step=3.0) == 4
    assert reserve.batches_that_fit(seconds_left=-5.0, seconds_per_step=3.0) == 1


def test_a_budget_too_small_for_the_final_validation_shortens_it(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks = iter(range(0, 10_000, 10))  # a CPU clock that advances 10 s per reading
    monkeypatch.setattr(time, "process_time", lambda: float(next(ticks)))
    recipe = tiny_recipe(trainer={"checkpoint_every": 100, "valid_every": 100})
    run = fit(
        recipe,
        "trainer.clock=cpu",
        "trainer.max_minutes=0.2",  # 12 s: the first step (10 s) leaves 2 s, not 30
        "trainer.max_steps=50",
        f"trainer.run_dir={tmp_path / 'run'}",
    )
    assert load_latest(run)["step"] == 1
    err = capsys.readouterr().err
    assert "final validation on 1 of 2 batches, to fit trainer.max_minutes=0.2" in err
    (last,) = [r for r in read_metrics(run) if "valid_recon_nll" in r]
    assert last["valid_partial_batches"] == 1  # marked: not comparable with full validations
    from latentebm.diagnostics import read_metrics as diagnostic_rows

    assert diagnostic_rows(run)[1] == []  # and left out of curves and summaries


def test_progress_bar_of_a_time_budget_ends_at_its_last_step_and_labels_validation(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``max_minutes`` the bar's total follows the budget (not ``max_steps``), so its ETA
    is the budget's; the validation batches are counted on it instead of a silent bar."""
    recipe = load_recipe(
        tiny_recipe(),
        [
            "trainer.max_steps=1000000",
            "trainer.max_minutes=0.02",
            "trainer.progress=true",
            "trainer.valid_every=1000000",
            "trainer.samples_at_end=1",
            f"trainer.run_dir={tmp_path / 'run'}",
        ],
    )
    trainer = train_module.Trainer(recipe)
    trainer.fit()
    step = trainer.state.step
    assert 0 < step < 1_000_000
    err = capsys.readouterr().err.replace("\r", "\n")
    assert f"{step}/{step} [" in err  # the bar ends full at the step the budget reached
    assert "/1000000" not in err
    # the end-of-run validation, counted (on 1 of its 2 batches where the budget is too short)
    assert re.search(r"valid 0/[12]", err)
    assert "drawing 1 samples" in err


class RecordingBar:
    """Stands in for the training bar: records its count whenever it is moved."""

    def __init__(self, total: int | None, initial: int, enabled: bool) -> None:
        self.n, self.total, self.counts = initial, total, []

    def update(self, by: int) -> None:
        self.n += by
        self.counts.append(self.n)

    def refresh(self) -> None:
        self.counts.append(self.n)

    def set_postfix(self, *args: object, **kwargs: object) -> None:
        pass

    def set_description_str(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_progress_bar_moves_every_step_between_log_rows(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar's count follows every step, not only the logged ones (a step of a second with
    log_every: 10 left the quick start's bar still for 10 s)."""
    bars: list[RecordingBar] = []

    def recording_bar(total: int | None, initial: int, enabled: bool) -> RecordingBar:
        bars.append(RecordingBar(total, initial, enabled))
        return bars[-1]

    monkeypatch.setattr(train_module, "training_bar", recording_bar)
    recipe = tiny_recipe()
    fit(
        recipe,
        "trainer.max_steps=4",
        "trainer.log_every=1000",
        "trainer.samples_at_end=0",
        "trainer.valid_every=1000",
        f"trainer.run_dir={tmp_path / 'run'}",
    )
    (bar,) = bars
    assert sorted(set(bar.counts)) == [1, 2, 3, 4]


def test_a_long_training_step_labels_the_bar_with_its_chain_step() -> None:
    """Inside a step that has run for ``after_seconds``, the Langevin chain's steps label the
    bar; the label goes back to ``train`` after the step; without a bar nothing happens."""
    from latentebm.langevin import LangevinSampler

    class Bar:
        def __init__(self) -> None:
            self.labels: list[str] = []

        def set_description_str(self, text: str, refresh: bool = True) -> None:
            self.labels.append(text)

    bar = Bar()
    label = train_module.ChainStepLabel(bar, after_seconds=0.0)
    sampler = LangevinSampler(n_steps=5, step_size=0.1)
    with label.listening():
        sampler.run(lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 3))
    assert bar.labels == ["train (chain 1/5)", "train"]  # at most once a second, then reset
    quiet = train_module.ChainStepLabel(bar, after_seconds=60.0)
    with quiet.listening():
        sampler.run(lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 3))
    assert bar.labels == ["train (chain 1/5)", "train"]  # a short step: no label
    with train_module.ChainStepLabel(None).listening():
        sampler.run(lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 3))
    valid = train_module.ChainStepLabel(bar, after_seconds=0.0)
    with valid.listening("valid 3/20"):
        sampler.run(lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 3))
    assert bar.labels[-2:] == ["valid 3/20 (chain 1/5)", "valid 3/20"]


def test_log_every_minutes_logs_rows_by_time_between_step_rows(tiny_recipe, tmp_path: Path) -> None:
    """Slow steps: a row once ``log_every_minutes`` have passed, not only every ``log_every``."""
    recipe = tiny_recipe()
    quiet = ["trainer.max_steps=4", "trainer.log_every=1000", "trainer.samples_at_end=0"]
    by_steps = fit(recipe, *quiet, f"trainer.run_dir={tmp_path / 'a'}")
    assert [r["step"] for r in read_metrics(by_steps) if "recon_nll" in r] == [4]  # the last
    by_time = fit(
        recipe, *quiet, "trainer.log_every_minutes=1e-6", f"trainer.run_dir={tmp_path / 'b'}"
    )
    assert [r["step"] for r in read_metrics(by_time) if "recon_nll" in r] == [1, 2, 3, 4]
