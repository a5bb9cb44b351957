"""Run directories shared by every trainer (latent and short-run EBM).

Contract (docs/guarantees.md): a run's history is append-only. A fresh directory is claimed
exclusively (``config.yaml``) and given an identity (``.run_id``); the one process writing into a
run holds its lock (``.lock``, taken before anything in it is read, renamed or written); a run
continues in place only from its own newest checkpoint (:func:`open_resume`), an older one forks
a new directory; damaged checkpoints are set aside, never deleted; no file of a run is replaced
(:func:`unused_path`, :func:`record_recipe`); each segment records what it ran on
(:func:`record_segment`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not locked there
    fcntl = None  # type: ignore[assignment]

from latentebm.atomic import write_bytes_atomic
from latentebm.checkpoint import (
    CHECKPOINT_DIR,
    CheckpointError,
    CheckpointFormatError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)
from latentebm.errors import TrainingError
from latentebm.train_budget import FinalPhaseReserve, TimedCheckpoints

__all__ = [  # the time-budget helpers moved to latentebm.train_budget; still importable from here
    "LATEST_LINK",
    "LOCK_FILE",
    "RUN_ID_FILE",
    "SEGMENTS_FILE",
    "FinalPhaseReserve",
    "TimedCheckpoints",
    "TrainingError",
    "check_same_run",
    "claim_run_dir",
    "continue_in",
    "environment",
    "find_resume",
    "first_difference",
    "load_for_resume",
    "lock_run_dir",
    "open_resume",
    "point_latest",
    "record_recipe",
    "record_segment",
    "release_run_dir",
    "remove_orphan_temporaries",
    "restartable_run_dir",
    "run_family",
    "run_id",
    "say",
    "unused_path",
    "model_family",
]

RUN_ID_FILE = ".run_id"
"""A run directory's identity (a random hex string written when the directory is claimed); every
checkpoint records it, so a checkpoint copied in from another run is recognised."""

LOCK_FILE = ".lock"
"""Held (``flock``) by the one process that writes into a run directory."""

_ORPHAN = re.compile(r"^\.step_\d+\.pt\..*\.tmp$")
_HELD_LOCKS: dict[Path, int] = {}


def lock_run_dir(run_dir: Path) -> None:
    """Take the run directory's exclusive lock for this process (until
    :func:`release_run_dir`, or the process ends): two processes never write into one run.

    Raises:
        TrainingError: another process holds it.
    """
    key = run_dir.resolve()
    if key in _HELD_LOCKS or fcntl is None:
        return
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise TrainingError(
                f"{run_dir}: another process is writing into this run (it holds {LOCK_FILE}); "
                "wait for it to end, or choose another trainer.run_dir"
            ) from error
        # a file system without locks (some network mounts): go on, unprotected
        say(
            f"warning: {run_dir}: cannot lock the run ({error.strerror}); not protected "
            "against a second process writing into it"
        )
        return
    _HELD_LOCKS[key] = fd


def release_run_dir(run_dir: Path | None) -> None:
    """Give up the lock :func:`lock_run_dir` took (no-op when not held)."""
    if run_dir is None:
        return
    fd = _HELD_LOCKS.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def unused_path(path: Path) -> Path:
    """``path``, or ``stem-1.suffix``, ``stem-2.suffix``, ... when it exists (a file of a run is
    never replaced: a later segment writes beside it)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _write_run_id(run_dir: Path) -> None:
    """Give ``run_dir`` an identity (:data:`RUN_ID_FILE`) when it has none."""
    path = run_dir / RUN_ID_FILE
    if not path.is_file():
        write_bytes_atomic(path, (uuid.uuid4().hex + "\n").encode())


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
    candidates = (
        sorted(p for p in runs.glob("*") if p.is_dir() and not p.is_symlink())
        if runs.is_dir()
        else []
    )
    for run in reversed(candidates):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    return None


LATEST_LINK = "latest"
"""``runs_root/name/latest``: a symbolic link to the newest timestamped run of a recipe."""


def point_latest(run_dir: Path) -> None:
    """Make ``run_dir.parent/latest`` a relative symbolic link to ``run_dir``, replacing an
    older link atomically (a new link under a temporary name, renamed over it). A ``latest``
    that is not a link (a user's own folder or file) is left alone, and so is a file system
    without symbolic links: the link is a convenience, never a reason to fail a run."""
    link = run_dir.parent / LATEST_LINK
    if link.exists() and not link.is_symlink():
        return
    temporary = run_dir.parent / f".{LATEST_LINK}.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(run_dir.name, temporary, target_is_directory=True)
        os.replace(temporary, link)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


def claim_run_dir(
    run_dir: str | None, runs_root: str, name: str, config_text: str, resume: str | None
) -> Path:
    """Create a fresh run directory and claim it by writing ``config.yaml`` exclusively.

    ``run_dir`` (``trainer.run_dir``) must be absent or empty (or, with ``resume="auto"``, a run
    of this recipe that stopped before its first checkpoint: :func:`restartable_run_dir`);
    without it the directory is
    ``runs_root/name/<timestamp>`` (``-1``, ``-2``, ... appended on a clash). Creating and
    claiming are single atomic file-system operations, so two runs started at the same moment
    never share a directory.

    Raises:
        TrainingError: ``run_dir`` holds files, or another run claimed it first.
    """
    if run_dir is not None:
        path = Path(run_dir).expanduser()
        if path.exists() and any(path.iterdir()):
            if resume == "auto" and (
                restarted := restartable_run_dir(str(path), name, config_text)
            ):
                return restarted
            hint = (
                "it holds no run of this recipe to resume; choose another trainer.run_dir"
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
    lock_run_dir(path)
    try:
        _write_run_id(path)
    except BaseException:
        release_run_dir(path)
        raise
    if run_dir is None:
        point_latest(path)
    return path


def restartable_run_dir(run_dir: str | None, name: str, config_text: str) -> Path | None:
    """A run directory that ``trainer.resume=auto`` may start afresh in place, or None.

    That is ``trainer.run_dir`` when it was claimed by a run of this recipe (its ``.run_id``,
    and a ``config.yaml`` of the same family and name) that stopped before writing its first
    checkpoint (a crash, a missing data file): its ``checkpoints/`` holds nothing but
    half-written temporaries. The directory is locked first (:func:`lock_run_dir`). Nothing in
    it is deleted: a ``config.yaml`` that differs from this run's is kept as
    ``config.before_restart_N.yaml``, and ``metrics.jsonl`` gets a ``restarted`` event before
    the new run's rows.
    """
    if run_dir is None:
        return None
    path = Path(run_dir)
    if not (path / RUN_ID_FILE).is_file():  # not claimed by a run: never touched
        return None
    lock_run_dir(path)  # everything below is decided and done under the run's lock
    try:
        if not _never_checkpointed(path, config_text):
            release_run_dir(path)
            return None
        remove_orphan_temporaries(path)
        config = path / "config.yaml"
        if config.read_text(encoding="utf-8") != config_text:
            n = 1
            while (kept := path / f"config.before_restart_{n}.yaml").exists():
                n += 1
            write_bytes_atomic(kept, config.read_bytes())  # the old one kept, then replaced:
            write_bytes_atomic(config, config_text.encode())  # a crash leaves one of the two
    except BaseException:
        release_run_dir(path)
        raise
    event = {"event": "restarted", "reason": "no checkpoint to resume from", "time": time.time()}
    with open(path / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event) + "\n")
    say(
        f"trainer.resume=auto: {path} has no checkpoint yet (the run stopped before its first); "
        "starting it afresh in place"
    )
    return path


def record_recipe(run_dir: Path, step: int, config_text: str) -> None:
    """Record the recipe a run segment runs: ``config.yaml`` for the first; a resumed segment
    whose recipe differs from it gets ``config.step_N.yaml`` (``-1``, ``-2``, ... when a segment
    already resumed from that step), so every setting used is on record and none replaced."""
    first = run_dir / "config.yaml"
    if not first.exists():
        write_bytes_atomic(first, config_text.encode())
        return
    try:
        same = yaml.safe_load(first.read_text(encoding="utf-8")) == yaml.safe_load(config_text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        same = False  # an unreadable config.yaml: this segment's recipe is recorded beside it
    if not same:
        target = unused_path(run_dir / f"config.step_{step:08d}.yaml")
        write_bytes_atomic(target, config_text.encode())


def _never_checkpointed(path: Path, config_text: str) -> bool:
    """``path`` holds a run of the recipe ``config_text`` (same family and name in its
    ``config.yaml``) whose ``checkpoints/`` has nothing but half-written temporaries."""
    folder = path / CHECKPOINT_DIR
    if folder.is_dir() and any(not _ORPHAN.match(p.name) for p in folder.iterdir()):
        return False
    try:
        old = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        new = yaml.safe_load(config_text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    return (old.get("family"), old.get("name")) == (new.get("family"), new.get("name"))


def run_family(run: str | Path) -> str:
    """The model family (``latent``, ``shortrun``) of a run directory or of a checkpoint in a
    run's ``checkpoints/``, from the run's ``config.yaml``; ``latent`` when no readable
    ``config.yaml`` says otherwise (a loose checkpoint file, a path that does not exist, a
    damaged file: then the checkpoint loader decides and reports)."""
    from latentebm.config import RecipeError, read_yaml

    path = Path(run)
    if path.is_dir():
        run_dir = path
    elif path.is_file() and path.parent.name == CHECKPOINT_DIR:
        run_dir = path.parent.parent
    else:
        return "latent"
    config = run_dir / "config.yaml"
    try:
        family = read_yaml(config, str(config)).get("family", "latent") if config.is_file() else ""
    except (RecipeError, OSError, AttributeError):
        return "latent"
    return family if isinstance(family, str) and family else "latent"


def model_family(run: str | Path) -> str:
    """:func:`run_family`, and for a checkpoint file outside a run's ``checkpoints/`` (a copied
    file, an exported ``model.pt``, a ``pretrained:NAME`` or ``hf:OWNER/REPO``) the family the
    file itself records (read with
    ``weights_only=True``, mapped, not loaded); ``latent`` when it cannot be read (the loader
    then reports why)."""
    family = run_family(run)
    if family != "latent":
        return family
    path = Path(run)
    if str(run).startswith(("pretrained:", "hf:")):  # a shipped or downloaded model
        from latentebm.export import resolve_model

        path = resolve_model(run)
    if not path.is_file():
        return family
    try:
        recorded = load_checkpoint(path, mmap=True).get("family", "latent")
    except (CheckpointError, AttributeError):
        return "latent"
    return recorded if isinstance(recorded, str) else "latent"


def run_id(run_dir: Path) -> str | None:
    """The identity of ``run_dir`` (:data:`RUN_ID_FILE`), None for runs older than it."""
    try:
        return (run_dir / RUN_ID_FILE).read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def continue_in(checkpoint: Path, run_dir: str | None) -> Path | None:
    """The run directory a run resumed from ``checkpoint`` continues in, or None for a new one.

    A run's history is append-only: it continues in place only when ``checkpoint`` is
    ``RUN/checkpoints/step_N.pt``, ``trainer.run_dir`` is unset or names ``RUN``, and
    ``checkpoint`` is the newest checkpoint of ``RUN``. Resuming from an older checkpoint
    without ``trainer.run_dir`` forks a new run directory (said on stderr), so no later
    checkpoint, sample or metrics row of ``RUN`` is replaced.

    Raises:
        TrainingError: ``trainer.run_dir`` names ``RUN`` but ``checkpoint`` is not its newest.
    """
    owner = _owning_run(checkpoint, run_dir)
    if owner is None:
        return None
    newest = latest_checkpoint(owner)
    if newest is not None and newest.resolve() != checkpoint.resolve():
        if run_dir is not None:
            raise TrainingError(
                f"trainer.run_dir: {owner} holds later checkpoints than {checkpoint.name} "
                f"(newest: {newest.name}); resuming there would replace them. Resume from the "
                "newest, or choose another trainer.run_dir for this branch"
            )
        say(
            f"{checkpoint} is not the newest checkpoint of {owner} (that is {newest.name}): "
            "this branch continues in a new run directory, the old history is kept"
        )
        return None
    return owner


def open_resume(
    resume: str | None,
    run_dir: str | None,
    runs_root: str,
    name: str,
    load: Callable[[Path], dict[str, Any]],
) -> tuple[Path | None, dict[str, Any] | None, Path | None]:
    """Find and read the checkpoint ``trainer.resume`` asks for and decide where the run writes:
    ``(checkpoint, state, in_place)``, all None for a fresh run; ``in_place`` is the run
    directory to continue (locked, :func:`lock_run_dir`), None when a new one must be claimed.

    When the checkpoint could continue its own run (:func:`continue_in`), that run is locked
    before anything in it is read, renamed or written, and the newest checkpoint is looked up
    again under the lock; the run must be the one that wrote the checkpoint
    (:func:`check_same_run`), gets an identity if it predates them, and loses its half-written
    temporaries. An older checkpoint named explicitly forks without locking its run (another
    process may still be writing there).

    Raises:
        CheckpointError, TrainingError: the lock is released before they propagate.
    """
    found = find_resume(resume, run_dir, runs_root, name)
    if found is None:
        return None, None, None
    auto = resume == "auto"
    owner = _could_continue(found, run_dir)
    if owner is None:
        found, saved = load_for_resume(found, auto, load)
        continue_in(found, run_dir)  # says why this branch forks
        return found, saved, None
    lock_run_dir(owner)
    try:
        if auto:  # the newest checkpoint, now that no other process can add one
            found = find_resume(resume, run_dir, runs_root, name) or found
        else:  # an explicit older checkpoint into its own run: refused before it is read
            continue_in(found, run_dir)
        found, saved = load_for_resume(found, auto, load)
        in_place = continue_in(found, run_dir)
        if in_place is None:
            release_run_dir(owner)
            return found, saved, None
        check_same_run(saved, found, in_place)
        _write_run_id(in_place)
        remove_orphan_temporaries(in_place)
    except BaseException:
        release_run_dir(owner)
        raise
    return found, saved, in_place


def _could_continue(checkpoint: Path, run_dir: str | None) -> Path | None:
    """The run directory ``checkpoint`` may continue in place (it sits in its
    ``checkpoints/``, ``trainer.run_dir`` is unset or names it, and it is that run's newest
    checkpoint as far as can be seen without the lock), else None."""
    owner = _owning_run(checkpoint, run_dir)
    if owner is None:
        return None
    newest = latest_checkpoint(owner)
    if run_dir is None and newest is not None and newest.resolve() != checkpoint.resolve():
        return None  # an older checkpoint: a fork (continue_in says so)
    return owner


def _owning_run(checkpoint: Path, run_dir: str | None) -> Path | None:
    """``RUN`` for ``RUN/checkpoints/step_N.pt`` when ``trainer.run_dir`` is unset or names it,
    else None (a loose checkpoint file, or a resume into another directory)."""
    if checkpoint.parent.name != CHECKPOINT_DIR:
        return None
    owner = checkpoint.parent.parent
    if run_dir is not None and Path(run_dir).expanduser().resolve() != owner.resolve():
        return None
    return owner


def check_same_run(saved: dict[str, Any], source: Path, run_dir: Path) -> None:
    """Refuse to continue ``run_dir`` from a checkpoint another run wrote (copied into its
    ``checkpoints/``); runs and checkpoints from before run identities are accepted."""
    theirs, ours = saved.get("run_id"), run_id(run_dir)
    if theirs is not None and ours is not None and theirs != ours:
        raise TrainingError(
            f"{source} was written by another run (run id {theirs}, this run is {ours}); "
            f"to continue from it, set trainer.resume={source} and a new trainer.run_dir"
        )


def remove_orphan_temporaries(run_dir: Path) -> None:
    """Delete half-written checkpoint files (``.step_N.pt.*.tmp``) a killed run left behind."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return
    for orphan in folder.iterdir():
        if _ORPHAN.match(orphan.name):
            orphan.unlink(missing_ok=True)
            say(f"removed {orphan}: a checkpoint left half-written by an interrupted run")


def load_for_resume(
    found: Path, auto: bool, load: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any]]:
    """Read the checkpoint a run resumes from with ``load``.

    With ``trainer.resume=auto`` a damaged newest checkpoint (truncated, not a checkpoint:
    :class:`~latentebm.checkpoint.CheckpointFormatError`) does not block the run: the older
    checkpoints of the same run are tried, newest first, and once one reads, each damaged file
    is renamed ``step_N.pt.corrupt`` (kept, never deleted or replaced) with a warning. When none
    reads, nothing is renamed. A failure to read that is not damage (an I/O error, no memory)
    and a checkpoint named explicitly are errors at once.

    Raises:
        CheckpointError: as above.
    """
    in_run = found.parent.name == CHECKPOINT_DIR
    candidates = list_checkpoints(found.parent.parent) if in_run else []
    older = [p for p in candidates if p.resolve() != found.resolve()]
    damaged: list[tuple[Path, CheckpointError]] = []
    candidate = found
    while True:
        try:
            saved = load(candidate)
            break
        except CheckpointFormatError as error:
            if not auto or not candidates:
                raise
            damaged.append((candidate, error))
            if not older:
                raise CheckpointError(
                    f"{found.parent}: no checkpoint can be read ({damaged[0][1]}); "
                    "nothing was renamed"
                ) from error
            candidate = older.pop()
    for path, error in damaged:
        kept = unused_path(path.with_name(path.name + ".corrupt"))
        path.rename(kept)
        say(f"warning: {error}; kept as {kept.name}, resuming from {candidate.name}")
    return candidate, saved


SEGMENTS_FILE = "segments.jsonl"
"""One JSON line per start of a run segment (``started``, ``resumed``) with its environment."""


def record_segment(run_dir: Path, event: str, step: int, **extra: Any) -> None:
    """Append the start of a run segment (``event``, ``step``, the time, ``extra`` and
    :func:`environment`) to ``RUN/segments.jsonl``, so a run says what ran each part of it."""
    row = {"event": event, "step": step, "time": time.time(), **extra, **environment()}
    with open(run_dir / SEGMENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def environment() -> dict[str, Any]:
    """What a run segment ran on (:func:`record_segment`):
    the library, torch, Python and platform versions, the git commit of the toolkit's source
    (with ``-dirty`` when it has uncommitted changes; None unless the toolkit runs from its own
    git checkout), the host and the command line."""
    import platform
    import subprocess

    import torch

    from latentebm import __version__

    source = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        """``git -C SOURCE ARGS``'s output (raises when git fails)."""
        done = subprocess.run(
            ["git", "-C", str(source), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    commit: str | None = None
    try:
        top = git("rev-parse", "--show-toplevel")
        if top and Path(top).resolve() == source:  # not an installed copy inside another repo
            head = git("rev-parse", "HEAD")
            dirty = git("status", "--porcelain", "--untracked-files=no")
            commit = head + ("-dirty" if dirty else "") if head else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "latentebm": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": platform.node(),
        "git_commit": commit,
        "argv": list(sys.argv),
    }


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
