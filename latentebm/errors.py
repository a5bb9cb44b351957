"""The toolkit's exception types, in a module that imports nothing heavy.

The command line (:func:`latentebm.cli.main`) turns each of these into one error line and a
non-zero exit; it imports them from here so that ``latentebm --help`` starts without importing
torch. The modules that raise them re-export them under their old homes
(``latentebm.checkpoint.CheckpointError``, ``latentebm.runs.TrainingError``,
``latentebm.train.Interrupted``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "DataSpaceCheckpoint",
    "Interrupted",
    "MissingDependencyError",
    "require",
    "TrainingError",
]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


class CheckpointFormatError(CheckpointError):
    """The file's bytes are not a readable checkpoint (truncated, damaged, another format), as
    opposed to a failure to read it at all (an I/O error, no memory)."""


class DataSpaceCheckpoint(CheckpointError):
    """The checkpoint is a data-space short-run EBM's, not a latent EBM's: raised by the latent
    loader so that :func:`latentebm.load` can hand the file to the short-run loader.
    ``checkpoint``: its path."""

    def __init__(self, message: str, checkpoint: object = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite term, a run directory in the way, ...)."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; a checkpoint was saved. ``exit_code`` is 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it
    (``pip install 'latentebm[mol]'``)."""


def require(module: str, extra: str, what: str) -> Any:
    """``import module``, or a :class:`MissingDependencyError` saying that ``what`` needs it and
    which extra of the toolkit installs it (``require("scipy", "image", "the SVHN data set")``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{what} needs {module.split('.')[0]} ({error}): pip install 'latentebm[{extra}]'"
        ) from error
