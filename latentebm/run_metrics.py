"""The training and validation rows of a run's ``metrics.jsonl`` (contract:
:func:`read_metrics`); read by ``diagnose``, ``plot`` and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(run_dir: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training rows and validation rows of ``run_dir/metrics.jsonl``.

    Event rows (with an ``event`` key, e.g. ``resumed``) are skipped; a row with
    ``valid_recon_nll`` is a validation row, any other row a training row. A validation cut
    short by a time budget (``valid_partial_batches``: other sentences than the full ones) is
    skipped too, so curves and "the last validation" compare like with like.

    Raises:
        ValueError: ``metrics.jsonl`` is missing, empty, has no training or validation row,
            or holds a line that is not JSON.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (is {run_dir} a latentebm run directory?)")
    train: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from error
        if "event" in row or "valid_partial_batches" in row:
            continue
        (valid if "valid_recon_nll" in row else train).append(row)
    if not train and not valid:
        raise ValueError(f"{path}: empty (no logged training step yet)")
    return train, valid
