"""One-file checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds everything needed to continue a run exactly or to use the model without its
recipe: weights, optimiser states, step and data position, the RNG states of every process,
the resolved recipe, the task's tokenizer state and the library version.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latentebm.atomic import atomic_write
from latentebm.errors import CheckpointError, CheckpointFormatError

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """``RUN_DIR/checkpoints/step_00001234.pt``."""
    return run_dir / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that a reader sees the old file or the new one, never half
    (:func:`latentebm.atomic.atomic_write`: a temporary file in the same folder, fsync, rename;
    a new file gets ordinary permissions, ``0o666`` less the umask).

    A failed write (disk full, no permission) removes the temporary file, leaves any earlier
    checkpoint untouched and raises one :class:`CheckpointError` naming ``path``.
    """
    try:
        with atomic_write(path) as handle:
            torch.save(state, handle)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as RuntimeError
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({_reason(error)}); earlier checkpoints are intact"
        ) from error


def _reason(error: BaseException) -> str:
    """The short cause of a failed write (``strerror`` of an OSError, else the first line)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    cause = error.__cause__ or error.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _load_reason(error: BaseException) -> str:
    """One line saying why ``torch.load`` failed: the unpickler's own complaint where torch
    wraps it in its multi-paragraph ``weights_only`` advice, else the first line."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        paragraphs = [" ".join(part.split()) for part in text.split(marker, 1)[1].split("\n\n")]
        detail = next((part for part in paragraphs if part), "refused")
        return f"not a checkpoint this version can read safely: {detail}"
    return _reason(error)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest step first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step in ``run_dir``, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints of ``run_dir``."""
    if keep <= 0:
        return
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    target = Path(path)
    if target.is_file():
        return target
    if target.is_dir():
        latest = latest_checkpoint(target)
        if latest is None:
            raise CheckpointError(f"{target}: no checkpoint in {target / CHECKPOINT_DIR}")
        return latest
    raise CheckpointError(f"{target}: no such checkpoint file or run directory")


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    ``mmap``: map the file instead of reading it (``torch.load(mmap=True)``): tensors that are
    never used (the optimiser moments, when only the model is wanted) are never read into
    memory. The tensors are then copy-on-write views of the file: copy what you keep.

    Raises:
        CheckpointFormatError: the bytes are not a latentebm checkpoint (damaged, truncated).
        CheckpointError: the file cannot be read (an I/O error, no memory).
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (OSError, MemoryError) as error:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_reason(error)})") from error
    except Exception as error:  # noqa: BLE001 - any failure of the bytes is reported the same way
        message = f"{path}: cannot read checkpoint ({_load_reason(error)})"
        if zipfile.is_zipfile(path) and "WeightsUnpickler" in str(error):
            # an intact container whose contents weights_only refuses (a newer format, say)
            raise CheckpointError(message) from error  # not damage: not set aside
        raise CheckpointFormatError(message) from error
    if not isinstance(state, dict) or "model" not in state or "recipe" not in state:
        raise CheckpointFormatError(f"{path}: not a latentebm checkpoint")
    return state


def require_fields(
    state: Mapping[str, Any], path: Path, fields: Mapping[str, type | tuple[type, ...]]
) -> None:
    """Check that a checkpoint read from ``path`` has each key of ``fields`` with a value of
    its type (a damaged or hand-edited checkpoint fails here in one line, not later).

    Raises:
        CheckpointError: naming ``path`` and the first missing or mistyped key.
    """
    for key, kind in fields.items():
        if key not in state:
            raise CheckpointError(f"{path}: incomplete checkpoint: no '{key}'")
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind if isinstance(kind, tuple) else (kind,)
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in names)
            raise CheckpointError(
                f"{path}: damaged checkpoint: '{key}' is {type(value).__name__}, not {wanted}"
            )


def load_weights(target: Any, weights: Any, path: Path, key: str = "model") -> None:
    """``target.load_state_dict(weights)`` (a module or an optimiser) with a mismatch (missing
    or unexpected names, other shapes, other parameter groups) reported as one
    :class:`CheckpointError` naming ``path``, ``key`` and the first difference."""
    if not isinstance(weights, Mapping):
        kind = type(weights).__name__
        raise CheckpointError(f"{path}: damaged checkpoint: '{key}' is {kind}, not dict")
    try:
        target.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        first = details[0] if details else str(error).strip().splitlines()[0]
        if len(first) > 300:
            first = first[:297] + "..."
        raise CheckpointError(
            f"{path}: '{key}' does not fit this model ({first}); was the checkpoint written "
            "for another recipe?"
        ) from error
