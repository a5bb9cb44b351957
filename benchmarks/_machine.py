"""Facts about the machine and checkout that every benchmark records with its numbers."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git(*cmd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def write_record(
    path: Path, script: str, argv: list[str] | None, threads: int, **fields: object
) -> None:
    """Write a benchmark's JSON record: the command, commit, date, machine and thread count,
    then ``fields``; the folder is created if needed."""
    import json
    import sys
    import time

    record = {
        "command": " ".join([script, *(argv if argv is not None else sys.argv[1:])]),
        "commit": git("rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": cpu_model(),
        "threads": threads,
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
