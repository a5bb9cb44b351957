"""The tqdm progress bars (on stderr) of training and evaluation.

Training: one bar over the updates (:func:`training_bar`) that shows a metrics row's main values
(:func:`show_row`) and, inside an update that runs long, the Langevin chain's step
(:class:`ChainStepLabel`). Evaluation: a bar over the examples of a split's batches that shows
the step within a batch (:func:`example_bar`), and one over counted items (:func:`count_bar`).
The steps within come from :func:`latentebm.progress.report_within`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from latentebm.progress import reporting_within

if TYPE_CHECKING:
    from torch import Tensor

BAR_KEYS = ("recon_nll", "energy_diff", "valid_recon_nll", "tokens_per_s", "images_per_s")
"""The values of a metrics row the training bar shows."""


# ------------------------------------------------------------------ training
def training_bar(total: int | None, initial: int, enabled: bool) -> Any:
    """The training bar (None when not ``enabled``): ``total`` updates, ``initial`` done."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)


def show_row(progress: Any, step: int, row: dict[str, float]) -> None:
    """Move the training bar to ``step`` and show the :data:`BAR_KEYS` of a metrics row."""
    progress.n = step
    shown = {k: row[k] for k in BAR_KEYS if k in row}
    progress.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
    progress.refresh()


class ChainStepLabel:
    """Labels the training bar with the Langevin step inside a training step once that step
    has run for ``after_seconds`` (a first PTB step can take half a minute on a loaded CPU:
    the bar would sit still), at most once a second; the label is reset after the step."""

    def __init__(self, progress: Any, after_seconds: float = 2.0) -> None:
        self.progress, self.after = progress, after_seconds
        self.started = self.shown = 0.0
        self.labelled = False
        self.label = "train"

    @contextlib.contextmanager
    def listening(self, label: str = "train") -> Any:
        """While the block runs, its chains label the bar ``LABEL (chain D/T)``; afterwards the
        bar says ``LABEL`` again if it was changed."""
        if self.progress is None:
            yield
            return
        self.started, self.labelled, self.label = time.perf_counter(), False, label
        try:
            with reporting_within(self.report):
                yield
        finally:  # also after a step that raised (a skipped non-finite batch)
            if self.labelled:
                self.progress.set_description_str(label, refresh=False)

    def report(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.started >= self.after and now - self.shown >= 1.0:
            self.progress.set_description_str(
                f"{self.label} (chain {done + 1}/{total})", refresh=True
            )
            self.shown, self.labelled = now, True


# ------------------------------------------------------------------ evaluation
def count_bar(items: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    """A tqdm bar over ``total`` items (batches) on stderr."""
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True, leave=False)


def example_bar(batches: list[Tensor], enabled: bool, desc: str) -> Iterator[Tensor]:
    """A bar over the examples of ``batches``; within a batch it shows the AIS path's step
    (:func:`latentebm.progress.report_within`), at most twice a second, so a batch that takes
    a minute is not a still bar."""
    if not enabled:
        yield from batches
        return
    from tqdm.auto import tqdm

    total = sum(b.shape[0] for b in batches)
    with tqdm(total=total, desc=desc, unit="sent", dynamic_ncols=True) as bar:
        shown, active = [0.0], [True]

        def within(done: int, steps: int) -> None:
            now = time.perf_counter()
            if active[0] and now - shown[0] >= 0.5:
                bar.set_postfix_str(f"batch step {done + 1}/{steps}", refresh=True)
                shown[0] = now

        try:
            for batch in batches:
                with reporting_within(within):
                    yield batch
                bar.set_postfix_str("", refresh=False)
                bar.update(batch.shape[0])
        finally:  # closed early (the consumer stopped or failed): never draw on this bar again
            active[0] = False
