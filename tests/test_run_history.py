"""A run's history is append-only and its records say what it ran (issue 13): resuming from an
older checkpoint forks, optimiser changes on resume are applied, a run that stopped before its
first checkpoint can be restarted with ``resume=auto``, a failed checkpoint write is one line,
half-written, foreign and corrupt checkpoints are dealt with, a finite divergence is flagged.
All on the tiny text recipe of tests/conftest.py (and the tiny short-run recipe)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import torch

import latentebm
import latentebm.checkpoint as checkpoint_module
from latentebm.checkpoint import CheckpointError, checkpoint_path, list_checkpoints, save_atomic
from latentebm.cli import main as cli_main
from latentebm.config import load_recipe
from latentebm.data import DataFileError
from latentebm.model import LatentEBM
from latentebm.runs import RUN_ID_FILE
from latentebm.train import DIVERGED_WEIGHT, Trainer, TrainingError


def fit(recipe: Path, *overrides: str) -> Path:
    return Trainer(load_recipe(recipe, list(overrides))).fit()


def snapshot(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- append-only


def test_resume_from_an_older_checkpoint_forks_a_new_run(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resume=RUN/checkpoints/step_4.pt (no run_dir) must not replace step 5's checkpoint,
    samples or metrics rows of the first history; resume=auto then still finds step 5."""
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=5", "trainer.checkpoint_every=1", f"trainer.run_dir={run}")
    before = snapshot(run)
    older = checkpoint_path(run, 4)
    fork = fit(
        recipe,
        "trainer.max_steps=6",
        f"trainer.resume={older}",
        f"trainer.runs_root={tmp_path / 'runs'}",
    )
    assert fork != run and fork.parent == tmp_path / "runs" / "tiny"
    assert snapshot(run) == before
    assert "is not the newest checkpoint" in capsys.readouterr().err
    assert [p.name for p in list_checkpoints(fork)][-1] == "step_00000006.pt"
    assert torch.load(checkpoint_path(fork, 6), weights_only=True)["step"] == 6


def test_latest_points_at_the_newest_run_and_resume_auto_ignores_it(
    tiny_recipe, tmp_path: Path
) -> None:
    """``runs_root/NAME/latest`` follows each new timestamped run; it loads like the run, and
    ``resume=auto`` continues the newest run itself, never a second history through the link.
    A ``latest`` of the user's own that is not a link is left alone."""
    recipe, root = tiny_recipe(), tmp_path / "runs"
    first = fit(recipe, "trainer.max_steps=2", f"trainer.runs_root={root}")
    second = fit(recipe, "trainer.max_steps=3", f"trainer.runs_root={root}")
    latest = root / "tiny" / "latest"
    assert latest.is_symlink() and latest.resolve() == second.resolve() != first.resolve()
    assert os.readlink(latest) == second.name  # relative: the runs folder can be moved
    assert latentebm.load(latest).step == 3
    resumed = fit(recipe, "trainer.max_steps=4", "trainer.resume=auto", f"trainer.runs_root={root}")
    assert resumed.resolve() == second.resolve() and not resumed.is_symlink()
    assert [p.name for p in list_checkpoints(second)][-1] == "step_00000004.pt"
    latest.unlink()
    latest.mkdir()  # a folder of the user's called latest
    (latest / "notes.txt").write_text("mine")
    fit(recipe, "trainer.max_steps=1", f"trainer.runs_root={root}")
    assert not latest.is_symlink() and (latest / "notes.txt").read_text() == "mine"


def test_resume_from_an_older_checkpoint_into_its_own_run_dir_is_refused(
    tiny_recipe, tmp_path: Path
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=5", "trainer.checkpoint_every=1", f"trainer.run_dir={run}")
    before = snapshot(run)
    older = checkpoint_path(run, 4)
    with pytest.raises(TrainingError, match=r"holds later checkpoints.*step_00000005\.pt"):
        fit(recipe, "trainer.max_steps=6", f"trainer.resume={older}", f"trainer.run_dir={run}")
    assert snapshot(run) == before


def test_samples_of_a_resumed_final_step_do_not_replace_the_first(
    tiny_recipe, tmp_path: Path
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    first = (run / "samples" / "step_00000003.txt").read_bytes()
    fit(recipe, "trainer.max_steps=3", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert (run / "samples" / "step_00000003.txt").read_bytes() == first
    assert (run / "samples" / "step_00000003-1.txt").is_file()


# ----------------------------------------------------------------------------- optimiser


def test_changed_learning_rate_and_betas_are_applied_on_resume(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    fit(
        recipe,
        "trainer.max_steps=4",
        "trainer.resume=auto",
        f"trainer.run_dir={run}",
        "optim.generator.lr=2.5e-4",
        "optim.prior.betas=[0.3,0.9]",
    )
    state = torch.load(checkpoint_path(run, 4), weights_only=True)
    generator_group = state["optim_generator"]["param_groups"][0]
    prior_group = state["optim_prior"]["param_groups"][0]
    assert generator_group["lr"] == pytest.approx(2.5e-4)
    assert tuple(prior_group["betas"]) == (0.3, 0.9)
    assert state["recipe"]["optim"]["generator"]["lr"] == 2.5e-4  # recorded = ran
    err = capsys.readouterr().err
    assert "optim.generator.lr 0.001 -> 0.00025 applied" in err
    events = [r for r in metrics(run) if r.get("event") == "optimiser changed"]
    assert len(events) == 1 and len(events[0]["changes"]) == 2


def test_a_changed_learning_rate_keeps_the_decay_already_applied(
    tiny_recipe, tmp_path: Path
) -> None:
    """Epoch decay 0.5 has halved the rate once before the resume; the new rate is halved too."""
    recipe = tiny_recipe(
        task={"max_sentences": 40}, optim={"generator": {"lr_decay": 0.5}}
    )  # 36 training sentences: 3 batches of 16 per epoch
    run = tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    fit(
        recipe,
        "trainer.max_steps=4",
        "trainer.resume=auto",
        f"trainer.run_dir={run}",
        "optim.generator.lr=1e-4",
    )
    state = torch.load(checkpoint_path(run, 4), weights_only=True)
    assert state["optim_generator"]["param_groups"][0]["lr"] == pytest.approx(0.5e-4)


# ----------------------------------------------------------------------------- restart


def test_resume_auto_restarts_a_run_that_stopped_before_its_first_checkpoint(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    original = LatentEBM.learning_step

    def crash(self: LatentEBM, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated crash before the first checkpoint")

    monkeypatch.setattr(LatentEBM, "learning_step", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(recipe, f"trainer.run_dir={run}")
    assert (run / "config.yaml").is_file() and not list_checkpoints(run)
    config_before = (run / "config.yaml").read_bytes()

    monkeypatch.setattr(LatentEBM, "learning_step", original)
    assert fit(recipe, "trainer.resume=auto", f"trainer.run_dir={run}") == run
    assert torch.load(checkpoint_path(run, 6), weights_only=True)["step"] == 6
    # the first attempt's recipe (resume: null) is kept beside the one that ran
    assert (run / "config.before_restart_1.yaml").read_bytes() == config_before
    assert load_recipe(run / "config.yaml").trainer.resume == "auto"
    assert metrics(run)[0]["event"] == "restarted"


def test_resume_auto_does_not_restart_another_recipe_s_folder(tiny_recipe, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: something-else\n")
    with pytest.raises(TrainingError, match="exists and is not empty"):
        fit(tiny_recipe(), "trainer.resume=auto", f"trainer.run_dir={run}")
    assert (run / "config.yaml").read_text() == "name: something-else\n"


# ----------------------------------------------------------------------------- failed writes


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_earlier_checkpoint(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    real_save = torch.save
    calls: list[int] = []

    def save(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: the disk is full
            try:
                raise OSError(28, "No space left on device")
            except OSError as error:
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:664] . unexpected pos 5184 vs 5072"
                ) from error
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    code = cli_main(["train", str(recipe), f"trainer.run_dir={run}"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("latentebm: error")]
    assert len(lines) == 1 and "Traceback" not in err
    assert str(checkpoint_path(run, 6)) in lines[0] and "No space left on device" in lines[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003.pt"]


def test_checkpoints_get_ordinary_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "step_00000001.pt"
    save_atomic({"model": {}, "recipe": {}}, path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_save_atomic_reports_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CheckpointError, match=r"file/step_00000001\.pt: cannot write checkpoint"):
        save_atomic({"model": {}}, blocker / "step_00000001.pt")


# ----------------------------------------------------------------------------- odd checkpoints


def test_orphan_temporary_checkpoints_are_removed_on_resume(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    orphan = run / "checkpoints" / ".step_00000004.pt.k3j2_x.tmp"
    orphan.write_bytes(b"half a checkpoint")
    fit(recipe, "trainer.max_steps=4", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert not orphan.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000003.pt",
        "step_00000004.pt",
    ]


def test_a_checkpoint_of_another_run_copied_in_is_refused(tiny_recipe, tmp_path: Path) -> None:
    recipe, ours, theirs = tiny_recipe(), tmp_path / "ours", tmp_path / "theirs"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={ours}")
    fit(recipe, "trainer.max_steps=4", "seed=5", f"trainer.run_dir={theirs}")
    assert (ours / RUN_ID_FILE).read_text() != (theirs / RUN_ID_FILE).read_text()
    shutil.copy(checkpoint_path(theirs, 4), checkpoint_path(ours, 4))
    with pytest.raises(TrainingError, match=r"step_00000004\.pt was written by another run"):
        fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={ours}")


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={run}")
    newest = checkpoint_path(run, 6)
    bad = newest.read_bytes()[:1000]
    newest.write_bytes(bad)
    fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={run}")
    err = capsys.readouterr().err
    assert "warning:" in err and "step_00000006.pt.corrupt" in err
    assert (run / "checkpoints" / "step_00000006.pt.corrupt").read_bytes() == bad  # kept
    assert torch.load(newest, weights_only=True)["step"] == 6  # redone from step 3


def test_an_explicitly_named_corrupt_checkpoint_is_an_error(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    checkpoint_path(run, 3).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"step_00000003\.pt: cannot read checkpoint"):
        fit(recipe, f"trainer.resume={checkpoint_path(run, 3)}")
    assert checkpoint_path(run, 3).exists()


# ----------------------------------------------------------------------------- divergence


def test_a_finite_divergence_is_flagged(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    assert not [r for r in metrics(run) if r.get("event") == "diverging"]
    path = checkpoint_path(run, 3)
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.startswith("prior.") and k.endswith("bias"))
    state["model"][key] = state["model"][key] + 10 * DIVERGED_WEIGHT
    save_atomic(state, path)
    fit(recipe, "trainer.max_steps=4", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert "training is diverging" in capsys.readouterr().err
    events = [r for r in metrics(run) if r.get("event") == "diverging"]
    assert len(events) == 1 and events[0]["max_abs_parameter"] > DIVERGED_WEIGHT


def test_a_prior_chain_that_samples_too_wide_is_flagged_once(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prior chain step past the reference's stability bound (a^2 = 9 > 4 sigma^2) samples
    far wider than any Gaussian of the curvature it meets: one warning naming the key, one
    event; Table 5's 0.4 on the same model none."""
    recipe = tiny_recipe()
    calm = tmp_path / "calm"
    fit(recipe, "trainer.max_steps=4", f"trainer.run_dir={calm}")
    assert "prior chain samples" not in capsys.readouterr().err
    assert not [r for r in metrics(calm) if r.get("event") == "prior_chain_too_wide"]
    wide = tmp_path / "wide"
    fit(recipe, "trainer.max_steps=4", "model.prior_chain.step_size=3.0", f"trainer.run_dir={wide}")
    err = capsys.readouterr().err
    assert err.count("the prior chain samples about") == 1
    assert "lower model.prior_chain.step_size (now 3;" in err
    rows = metrics(wide)
    events = [r for r in rows if r.get("event") == "prior_chain_too_wide"]
    assert len(events) == 1 and events[0]["variance_inflation"] >= 2.0
    # the index of the row it was read from, with the chain's step and the model's z_dim
    from latentebm.chain_step import step_index

    row = next(r for r in rows if r.get("step") == events[0]["step"] and "prior_grad_norm" in r)
    assert events[0]["rho"] == pytest.approx(step_index(3.0, row["prior_grad_norm"], 4).rho)


# ----------------------------------------------------------------------------- short-run EBM


def test_shortrun_resume_from_a_loose_checkpoint_file_claims_a_new_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint outside RUN/checkpoints/ must not make the trainer write into the file's
    grandparent directory."""
    monkeypatch.setenv("LATENTEBM_TRUSTED_MODULES", "tests.test_shortrun")
    from latentebm.shortrun.train import ShortRunTrainer
    from tests.test_shortrun import tiny_recipe as shortrun_recipe

    first = ShortRunTrainer(shortrun_recipe(tmp_path / "a", trainer={"max_steps": 2})).fit()
    loose_dir = tmp_path / "home" / "downloads"
    loose_dir.mkdir(parents=True)
    loose = loose_dir / "model.pt"
    shutil.copy(list_checkpoints(first)[-1], loose)
    before = snapshot(tmp_path / "home")
    trainer = {"max_steps": 3, "resume": str(loose), "run_dir": None}
    recipe = shortrun_recipe(tmp_path, trainer={**trainer, "runs_root": str(tmp_path / "runs")})
    resumed = ShortRunTrainer(recipe).fit()
    assert resumed.parent == tmp_path / "runs" / "tiny"
    assert snapshot(tmp_path / "home") == before
    assert sorted(p.name for p in (tmp_path / "home").rglob("*")) == ["downloads", "model.pt"]


def test_a_missing_test_file_is_reported_before_the_run_dir_is_claimed(
    tiny_recipe, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(DataFileError, match=r"nope\.txt"):
        fit(tiny_recipe(), f"task.test={tmp_path / 'nope.txt'}", f"trainer.run_dir={run}")
    assert not run.exists()


# ----------------------------------------------------------------------------- review cases


def test_when_no_checkpoint_reads_nothing_is_renamed(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={run}")
    for path in list_checkpoints(run):
        path.write_bytes(path.read_bytes()[:500])
    before = snapshot(run)
    with pytest.raises(CheckpointError, match="no checkpoint can be read.*nothing was renamed"):
        fit(recipe, "trainer.resume=auto", f"trainer.run_dir={run}")
    assert snapshot(run) == before
    # and the run is not mistaken for one that never wrote a checkpoint
    with pytest.raises(CheckpointError, match="no checkpoint can be read"):
        fit(recipe, "trainer.resume=auto", f"trainer.run_dir={run}")


def test_a_read_error_that_is_not_damage_sets_nothing_aside(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={run}")
    before = snapshot(run)

    def failing_load(*args: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint_module.torch, "load", failing_load)
    with pytest.raises(CheckpointError, match="Input/output error"):
        fit(recipe, "trainer.max_steps=7", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert snapshot(run) == before


def test_resume_auto_does_not_adopt_a_folder_that_is_not_a_run(tiny_recipe, tmp_path: Path) -> None:
    """A folder with the user's own config.yaml (no run identity) is not taken over."""
    run = tmp_path / "run"
    run.mkdir()
    recipe = tiny_recipe()
    (run / "config.yaml").write_bytes(recipe.read_bytes())
    (run / "notes.md").write_text("mine")
    before = snapshot(run)
    with pytest.raises(TrainingError, match="exists and is not empty"):
        fit(recipe, "trainer.resume=auto", f"trainer.run_dir={run}")
    assert snapshot(run) == before


def test_a_run_dir_in_use_by_another_process_is_refused(tiny_recipe, tmp_path: Path) -> None:
    import subprocess
    import sys

    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        with pytest.raises(TrainingError, match="another process is writing into this run"):
            fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={run}")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_two_resumes_from_one_step_keep_both_recipes(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    first = fit(recipe, "trainer.max_steps=4", "trainer.resume=auto", f"trainer.run_dir={run}")
    # the 4-step checkpoint is lost (say the machine died): resume again from step 3
    checkpoint_path(first, 4).unlink()
    fit(recipe, "trainer.max_steps=5", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert load_recipe(run / "config.step_00000003.yaml").trainer.max_steps == 4
    assert load_recipe(run / "config.step_00000003-1.yaml").trainer.max_steps == 5


def test_shortrun_outputs_of_a_resumed_run_are_written_beside_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentebm.shortrun.train import ShortRunTrainer
    from tests.test_shortrun import tiny_recipe as shortrun_recipe

    monkeypatch.setenv("LATENTEBM_TRUSTED_MODULES", "tests.test_shortrun")
    run = ShortRunTrainer(shortrun_recipe(tmp_path / "r", trainer={"max_steps": 2})).fit()
    names = ["samples/final.png", "interpolation.png", "reconstruction.png"]
    before = {name: (run / name).read_bytes() for name in names}
    first = json.loads((run / "metrics.json").read_text())["test"]["mse"]
    again = shortrun_recipe(tmp_path / "r", trainer={"max_steps": 4, "resume": "auto"})
    assert ShortRunTrainer(again).fit() == run
    for name in names:
        assert (run / name).read_bytes() == before[name], name
        path = run / name
        assert path.with_name(f"{path.stem}-1{path.suffix}").is_file(), name
    # the metrics file is merged into, as evaluate does: the first end's entry is its history
    entry = json.loads((run / "metrics.json").read_text())["test"]["mse"]
    assert entry["step"] == 4 and entry["history"] == [first]


def test_damaged_rng_or_tokenizer_state_is_one_line(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={run}")
    state = torch.load(checkpoint_path(run, 3), weights_only=True)
    cases = {
        "rng": {**state, "rng": [{"torch": "x"}]},
        "task_state": {**state, "task_state": {"tokenizer": 5}},
    }
    for key, damaged in cases.items():
        path = tmp_path / f"{key}.pt"
        torch.save(damaged, path)
        with pytest.raises(CheckpointError, match=rf"{key}\.pt: damaged checkpoint: {key}"):
            fit(recipe, f"trainer.resume={path}", f"trainer.run_dir={tmp_path / key}")


@pytest.mark.slow
def test_an_error_on_the_main_process_stops_every_process(tiny_recipe, tmp_path: Path) -> None:
    """With two processes, a refusal the main process alone can see (the run directory is
    in use) ends both with the error, instead of leaving the other waiting."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    recipe, run = tiny_recipe(), tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("not a run")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "latentebm.cli"]
    command += ["train", str(recipe), f"trainer.run_dir={run}"]
    done = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode != 0
    assert "on the main process: trainer.run_dir" in done.stderr, done.stderr[-2000:]
    assert sorted(p.name for p in run.iterdir()) == ["mine.txt"]


def test_each_segment_records_what_it_ran_on(tiny_recipe, tmp_path: Path) -> None:
    import torch as torch_module

    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=2", f"trainer.run_dir={run}")
    fit(recipe, "trainer.max_steps=3", "trainer.resume=auto", f"trainer.run_dir={run}")
    rows = [json.loads(line) for line in (run / "segments.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in rows] == [("started", 0), ("resumed", 2)]
    for row in rows:
        assert row["torch"] == torch_module.__version__
        assert {"latentebm", "python", "platform", "git_commit", "argv"} <= set(row)


def test_the_lock_is_released_when_a_resume_is_refused(tiny_recipe, tmp_path: Path) -> None:
    import latentebm.runs as runs_module

    recipe, ours, theirs = tiny_recipe(), tmp_path / "ours", tmp_path / "theirs"
    fit(recipe, "trainer.max_steps=3", f"trainer.run_dir={ours}")
    fit(recipe, "trainer.max_steps=4", f"trainer.run_dir={theirs}")
    shutil.copy(checkpoint_path(theirs, 4), checkpoint_path(ours, 4))
    with pytest.raises(TrainingError, match="written by another run"):
        fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={ours}")
    assert not runs_module._HELD_LOCKS  # nothing stays locked after a failed fit
    checkpoint_path(ours, 4).unlink()
    assert fit(recipe, "trainer.max_steps=4", "trainer.resume=auto", f"trainer.run_dir={ours}")


def test_a_damaged_config_yaml_does_not_block_a_resume(tiny_recipe, tmp_path: Path) -> None:
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=2", f"trainer.run_dir={run}")
    (run / "config.yaml").write_text("task: [unclosed\n")
    fit(recipe, "trainer.max_steps=3", "trainer.resume=auto", f"trainer.run_dir={run}")
    assert (run / "config.yaml").read_text() == "task: [unclosed\n"  # kept as it was
    assert load_recipe(run / "config.step_00000002.yaml").trainer.max_steps == 3


def test_a_device_this_machine_lacks_is_named_before_reading(tiny_recipe, tmp_path: Path) -> None:
    import latentebm
    from latentebm.config import RecipeError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = fit(tiny_recipe(), "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    with pytest.raises(RecipeError, match="device: 'cuda' asked for, but CUDA is not available"):
        latentebm.load(run, device="cuda")


def test_a_path_that_does_not_exist_is_not_read_as_a_short_run_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`latentebm evaluate typo` in a folder whose config.yaml is a short-run recipe."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("family: shortrun\nname: x\n")
    assert cli_main(["evaluate", "typo"]) == 2
    err = capsys.readouterr().err
    assert "typo: no such checkpoint file or run directory" in err, err


def test_a_newest_checkpoint_overwritten_with_text_falls_back(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not a checkpoint container at all are damage, however torch words it."""
    recipe, run = tiny_recipe(), tmp_path / "run"
    fit(recipe, "trainer.max_steps=6", f"trainer.run_dir={run}")
    checkpoint_path(run, 6).write_text("not a checkpoint\n" * 50)
    fit(recipe, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={run}")
    err = capsys.readouterr().err
    assert "step_00000006.pt.corrupt" in err and "Unsupported operand" in err
