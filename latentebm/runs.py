"""Run directories shared by every trainer: where a resumed run continues from, and claiming a
fresh directory without ever writing into another run's."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from latentebm.checkpoint import latest_checkpoint, resolve_checkpoint


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite term, a run directory in the way, ...)."""


def find_resume(resume: str | None, run_dir: str | None, runs_root: str, name: str) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for, or None for a fresh run.

    ``resume``: None (fresh), ``"auto"`` (the newest checkpoint of ``run_dir`` if given, else of
    the newest run under ``runs_root/name`` that has one; None if there is none) or a
    checkpoint file or run directory (:func:`latentebm.checkpoint.resolve_checkpoint`).
    """
    if resume is None:
        return None
    if resume != "auto":
        return resolve_checkpoint(resume)
    if run_dir is not None:
        return latest_checkpoint(Path(run_dir))
    runs = Path(runs_root) / name
    candidates = sorted(p for p in runs.glob("*") if p.is_dir()) if runs.is_dir() else []
    for run in reversed(candidates):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    return None


def claim_run_dir(
    run_dir: str | None, runs_root: str, name: str, config_text: str, resume: str | None
) -> Path:
    """Create a fresh run directory and claim it by writing ``config.yaml`` exclusively.

    ``run_dir`` (``trainer.run_dir``) must be absent or empty; without it the directory is
    ``runs_root/name/<timestamp>`` (``-1``, ``-2``, ... appended on a clash). Creating and
    claiming are single atomic file-system operations, so two runs started at the same moment
    never share a directory.

    Raises:
        TrainingError: ``run_dir`` holds files, or another run claimed it first.
    """
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and any(path.iterdir()):
            hint = (
                "it has no checkpoint to resume from; choose another trainer.run_dir"
                if resume == "auto"
                else "continue it with trainer.resume=auto, or choose another trainer.run_dir"
            )
            raise TrainingError(f"trainer.run_dir: {path} exists and is not empty; {hint}")
        path.mkdir(parents=True, exist_ok=True)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(runs_root) / name
        base.mkdir(parents=True, exist_ok=True)
        path, n = base / stamp, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                path, n = base / f"{stamp}-{n}", n + 1
    try:
        with open(path / "config.yaml", "x", encoding="utf-8") as handle:
            handle.write(config_text)
    except FileExistsError as error:
        raise TrainingError(f"trainer.run_dir: {path} was taken by another run") from error
    return path


def first_difference(saved: Any, current: Any, path: str) -> str | None:
    """The first setting (dotted ``path``) where a checkpoint's recipe and the current one
    differ, as a sentence; None when they agree (lists and tuples compare equal)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current)):
            diff = first_difference(saved.get(key), current.get(key), f"{path}.{key}")
            if diff is not None:
                return diff
        return None
    if isinstance(saved, list | tuple) and isinstance(current, list | tuple):
        saved, current = list(saved), list(current)
    if saved != current:
        return f"{path} is {current!r} here but {saved!r} in the checkpoint"
    return None


def say(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


class TimedCheckpoints:
    """When to save a checkpoint by training time: each time the seconds spent pass a multiple of
    ``minutes`` (``trainer.checkpoint_every_minutes``).

    The multiples are counted from zero, not from the start of this segment, so a resumed run
    saves at the same training times as an uninterrupted one; a step that jumps over several
    multiples saves once.
    """

    def __init__(self, minutes: float | None, seconds_spent: float) -> None:
        self.interval = None if minutes is None else 60.0 * minutes
        self._next = None if self.interval is None else self._following(seconds_spent)

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def _following(self, seconds: float) -> float:
        assert self.interval is not None
        return (int(seconds // self.interval) + 1) * self.interval

    def due(self, seconds_spent: float) -> bool:
        """True (once) when ``seconds_spent`` has reached the next multiple."""
        if self._next is None or seconds_spent < self._next:
            return False
        self._next = self._following(seconds_spent)
        return True
