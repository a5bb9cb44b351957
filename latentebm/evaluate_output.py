"""The metrics file ``latentebm evaluate`` writes (``RUN/metrics.json``, or ``-o PATH``).

Contract (docs/guarantees.md): the file holds ``{"format": METRICS_FORMAT, split: {metric:
entry}}``; only a file ``evaluate`` wrote is merged into (anything else is refused before the
evaluation, :func:`check_output`); an earlier entry for the same split and metric moves into the
new entry's ``history``; the file is replaced atomically (:func:`write_metrics`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from latentebm.atomic import atomic_write

METRICS_FILE = "metrics.json"
FORMAT_KEY = "format"
METRICS_FORMAT = "latentebm-evaluate-metrics"
"""``metrics.json[FORMAT_KEY]``: marks a file ``evaluate`` wrote, the only kind it merges into."""


def _is_metrics_file(data: object) -> bool:
    """Whether parsed JSON is a file :func:`write_metrics` wrote: it carries the format marker,
    or (written before the marker existed) it is ``{split: {metric: entry}}`` with every entry
    holding the ``checkpoint`` and ``step`` that ``evaluate`` records."""
    if not isinstance(data, dict):
        return False
    if data.get(FORMAT_KEY) == METRICS_FORMAT:
        return True
    return bool(data) and all(
        isinstance(section, dict)
        and section
        and all(
            isinstance(entry, dict) and "checkpoint" in entry and "step" in entry
            for entry in section.values()
        )
        for section in data.values()
    )


def read_metrics_file(path: str | Path) -> dict[str, Any]:
    """The content of a metrics file ``evaluate`` wrote at ``path`` (``{}`` if there is none).

    Raises:
        ValueError: ``path`` is a folder, cannot be read, or is not a file that ``evaluate``
            wrote (not JSON, or JSON of another format): merging into it or replacing it
            could lose someone's data. One line naming the file.
    """
    path = Path(path)
    refuse = "not written by latentebm evaluate, so not merged into or replaced: choose another -o"
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give evaluate a file name (-o PATH.json)")
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: exists and is not JSON (not UTF-8 text); {refuse}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror or error})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: exists and is not JSON ({error.msg} at line {error.lineno}); {refuse}"
        ) from None
    if not _is_metrics_file(data):
        raise ValueError(f"{path}: a JSON file {refuse}")
    return data


def run_metrics_path(run_dir: str | Path) -> Path:
    """The metrics file of a run directory to merge into: ``metrics.json``, or, where that holds
    something else (a run whose trainer wrote another format, e.g. a short-run EBM run trained
    before it wrote this one), the first of ``metrics-1.json``, ``metrics-2.json``, ... that is
    absent or a file ``evaluate`` wrote. The other file is kept as it is."""
    path = Path(run_dir) / METRICS_FILE
    candidate, n = path, 0
    while True:
        try:
            read_metrics_file(candidate)
            return candidate
        except ValueError:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")


def check_output(path: str | Path) -> None:
    """Fail now, not after the evaluation, when ``write_metrics(path, ...)`` would: ``path``
    is a folder or a file ``evaluate`` did not write (:func:`read_metrics_file`), or its folder
    cannot be created or written. Raises ``ValueError`` with one line naming the path."""
    path = Path(path)
    read_metrics_file(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"{path}: cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot be written: no write permission in {folder}")


def write_metrics(path: str | Path, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge ``{split: {metric: entry}}`` into the metrics file at ``path`` atomically.

    The file holds ``{"format": METRICS_FORMAT, split: {metric: entry}}``. Only a file this
    function wrote is merged into (:func:`read_metrics_file`; anything else raises
    ``ValueError`` and is left as it is). Other splits and metrics are kept. An earlier entry
    for the same split and metric is not lost: it moves into the new entry's ``history`` list
    (oldest first), together with the earlier entry's own history. Written with
    :func:`latentebm.atomic.atomic_write` (temporary file, fsync, rename): an existing file
    keeps its permissions, a new one gets the umask's. Returns the whole new content.
    """
    path = Path(path)
    if split == FORMAT_KEY:
        raise ValueError(f"{split!r} is reserved in a metrics file; not a split name")
    old = read_metrics_file(path)
    old.pop(FORMAT_KEY, None)
    data: dict[str, Any] = {FORMAT_KEY: METRICS_FORMAT, **old}
    section = data.setdefault(split, {})
    for name, entry in metrics.items():
        entry = dict(entry)
        previous = section.get(name)
        if previous is not None:
            previous = dict(previous)
            history = list(previous.pop("history", []))
            entry["history"] = [*history, previous]
        section[name] = entry
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=2, allow_nan=True)
        handle.write("\n")
    return data


def finish_evaluation(
    out_path: Path,
    split: str,
    result: dict[str, Any],
    *,
    checkpoint: Path,
    step: int | None,
    seconds: float,
    write: bool,
) -> dict[str, Any]:
    """Write ``result`` (``{metric: entry}``) into the metrics file unless ``write`` is False,
    and return what ``latentebm evaluate`` returns: ``{"split", "metrics", "checkpoint",
    "step", "seconds", "output"}``."""
    if write:
        write_metrics(out_path, split, result)
    return {
        "split": split,
        "metrics": result,
        "checkpoint": str(checkpoint),
        "step": step,
        "seconds": seconds,
        "output": str(out_path) if write else None,
    }
