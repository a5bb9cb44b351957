"""When a training run saves by time and when it stops within its time budget: shared by every
trainer (latent and short-run EBM).

:class:`TimedCheckpoints` decides when ``trainer.checkpoint_every_minutes`` asks for a checkpoint;
:class:`FinalPhaseReserve` prices what follows a run's last update (the final validation and the
end-of-run samples), so that ``trainer.max_minutes`` bounds the whole run.
"""

from __future__ import annotations


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


class FinalPhaseReserve:
    """Seconds a time-budgeted run keeps for what follows its last update (the final validation
    and the end-of-run samples), so that ``trainer.max_minutes`` bounds the whole run rather
    than only its updates.

    A validation batch is priced at the measured seconds per batch of the last validation, or,
    before any, at one training step (its posterior chain is most of a step's work); the
    end-of-run samples at ``sample_batches`` training steps. The trainer prices a step by the
    first step of a segment, then by the steps after it (the first holds start-up and
    compilation), keeps at most half the budget, and shortens a final validation that still
    does not fit (:meth:`batches_that_fit`).
    """

    def __init__(self, valid_batches: int, sample_batches: float) -> None:
        self.valid_batches = valid_batches
        self.sample_batches = sample_batches
        self.seconds_per_valid_batch: float | None = None

    def record_validation(self, seconds: float, batches: int) -> None:
        """A validation of ``batches`` batches took ``seconds``."""
        if batches > 0:
            self.seconds_per_valid_batch = seconds / batches

    def batches_that_fit(self, seconds_left: float, seconds_per_step: float) -> int:
        """How many validation batches (at least 1, at most all) fit in ``seconds_left``, the
        samples' share kept aside: the final validation of a run whose budget is nearly
        spent (a single validation batch of long documents can take minutes)."""
        per_batch = self.seconds_per_valid_batch
        if per_batch is None:
            per_batch = seconds_per_step
        left = seconds_left - self.sample_batches * seconds_per_step
        fit = int(left // per_batch) if per_batch > 0 else self.valid_batches
        return max(1, min(self.valid_batches, fit))

    def seconds(self, seconds_per_step: float) -> float:
        """The reserve, given the measured seconds per training step."""
        per_batch = self.seconds_per_valid_batch
        if per_batch is None:
            per_batch = seconds_per_step
        return self.valid_batches * per_batch + self.sample_batches * seconds_per_step
