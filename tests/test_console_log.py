"""RUN/console.log: what training printed, one line per line, progress bars at their last state."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from latentebm.console_log import ConsoleLog, _LineSink
from tests.conftest import train_tiny_run


def test_carriage_return_redraws_keep_the_last_state() -> None:
    out = io.StringIO()
    sink = _LineSink(out)
    for text in ("start\n", "bar  10%\r", "bar  50%\r", "\x1b[Abar 100%", "\n", "tail"):
        sink.feed(text)
    assert out.getvalue() == "start\nbar 100%\n"  # "tail" waits for its newline
    out.close = lambda: None  # type: ignore[method-assign]  # keep the buffer readable
    sink.close()
    assert out.getvalue() == "start\nbar 100%\ntail\n"


def test_the_log_copies_both_streams_and_restores_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (sys.stdout, sys.stderr)
    log = ConsoleLog(tmp_path / "console.log")
    log.start()
    print("to stdout")
    print("to stderr", file=sys.stderr)
    log.stop()
    assert (sys.stdout, sys.stderr) == before
    captured = capsys.readouterr()
    assert captured.out == "to stdout\n" and captured.err == "to stderr\n"  # terminal unchanged
    lines = (tmp_path / "console.log").read_text().splitlines()
    assert lines[0].startswith("===== ") and lines[1:] == ["to stdout", "to stderr"]


def test_a_log_that_cannot_be_written_never_stops_the_caller(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "missing-folder" / "console.log")
    log.start()
    print("still printed")
    log.stop()
    assert not (tmp_path / "missing-folder").exists()


def test_training_keeps_a_console_log_and_a_resume_appends_to_it(tmp_path: Path) -> None:
    run = train_tiny_run(tmp_path, "trainer.max_steps=2", f"trainer.run_dir={tmp_path / 'run'}")
    text = (run / "console.log").read_text()
    assert text.count("===== ") == 1 and "new run" in text
    train_tiny_run(tmp_path, "trainer.max_steps=3", "trainer.resume=auto", f"trainer.run_dir={run}")
    text = (run / "console.log").read_text()
    assert text.count("===== ") == 2 and "resuming from" in text
    assert text.index("new run") < text.index("resuming from")


def test_the_log_says_why_a_run_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    import latentebm.model as model_module
    from latentebm.config import load_recipe
    from latentebm.train import Trainer, TrainingError
    from tests.conftest import tiny_recipe_dict

    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n".join(["the cat sat"] * 50) + "\n", encoding="utf-8")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus)), encoding="utf-8")

    def not_finite(*args: object, **kwargs: object) -> None:
        raise model_module.NonFiniteError("generator_loss", float("nan"))

    monkeypatch.setattr(model_module.LatentEBM, "learning_step", not_finite)
    trainer = Trainer(load_recipe(recipe, [f"trainer.run_dir={tmp_path / 'run'}"]))
    with pytest.raises(TrainingError):
        trainer.fit()
    log = (tmp_path / "run" / "console.log").read_text()
    assert "stopped: TrainingError: step 1: generator_loss is nan" in log
