"""What the main process of a training run records as it trains: rows of ``RUN/metrics.jsonl``
(metrics and events, each with the step, epoch and wall time), TensorBoard scalars
(``RUN/tensorboard/``, with ``trainer.tensorboard``), and each metrics row shown on the
progress bar or, without one, now and then on stderr."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from latentebm.progress_bars import show_row
from latentebm.runs import say


class MetricsLog:
    """The records of the run in ``run_dir``; TensorBoard's writer is opened at once (when
    ``tensorboard``) to continue from ``step``."""

    def __init__(self, run_dir: Path, *, tensorboard: bool, step: int, log_every: int) -> None:
        self.run_dir, self.log_every = run_dir, log_every
        self.writer: Any = None
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but keep training without it
            say("tensorboard is not installed: TensorBoard logging is off")
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step)

    def append(self, row: dict[str, Any], step: int, epoch: int) -> None:
        """One JSON line in ``metrics.jsonl`` with the step, epoch and wall time."""
        record = {"step": step, "epoch": epoch, "time": time.time(), **row}
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def log(
        self, row: dict[str, float], step: int, epoch: int, progress: Any, echo: bool = False
    ) -> None:
        """Append a metrics row; show it on the bar, or without one print it every tenth
        row, at validations and when it was logged by time (``echo``)."""
        self.append(row, step, epoch)
        if self.writer is not None:
            for key, value in row.items():
                self.writer.add_scalar(key, value, step)
        if progress is not None:
            show_row(progress, step, row)
        elif echo or "valid_recon_nll" in row or step % (self.log_every * 10) == 0:
            text = " ".join(f"{k}={v:.4g}" for k, v in row.items())
            say(f"step {step}: {text}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
