"""Progress lines of long phases (:mod:`latentebm.progress`)."""

from __future__ import annotations

import logging

import pytest

import latentebm.progress as progress_module
from latentebm.progress import ProgressLines


def test_lines_at_most_every_few_seconds_then_a_closing_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = iter([0.0, 1.0, 6.0, 7.0, 13.0, 14.0])  # start, then one reading per update/exit
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    log = logging.getLogger("latentebm.test_progress")
    with (
        caplog.at_level(logging.INFO, logger=log.name),
        ProgressLines(log, "canonical SMILES", 4000, "molecules") as progress,
    ):
        for _ in range(4):
            progress.update(1000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "canonical SMILES: 2,000 of 4,000 molecules (50 %)",  # 6 s after the start
        "canonical SMILES: 4,000 molecules done in 14 s",
    ]


def test_a_short_phase_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("latentebm.test_progress")
    with (
        caplog.at_level(logging.INFO, logger=log.name),
        ProgressLines(log, "quick", 10, "rows") as progress,
    ):
        progress.update(10)
    assert caplog.records == []


def test_reports_within_go_to_the_innermost_listener_and_it_is_restored() -> None:
    from latentebm.progress import report_within, reporting_within

    outer: list[tuple[int, int]] = []
    inner: list[tuple[int, int]] = []
    report_within(1, 2)  # nobody listens: nothing happens
    with reporting_within(lambda d, t: outer.append((d, t))):
        report_within(1, 4)
        with reporting_within(lambda d, t: inner.append((d, t))):
            report_within(2, 4)
        report_within(3, 4)
    report_within(4, 4)
    assert outer == [(1, 4), (3, 4)] and inner == [(2, 4)]


def test_the_evaluation_bar_shows_the_step_within_a_batch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A batch whose AIS path reports its steps moves the evaluation bar's label."""
    import torch

    from latentebm.progress import report_within
    from latentebm.progress_bars import example_bar

    for _batch in example_bar([torch.zeros(3, 4), torch.zeros(2, 4)], True, "marginal_nll valid"):
        report_within(7, 200)
    err = capsys.readouterr().err
    assert "batch step 8/200" in err
    assert "5/5" in err


def test_logged_within_turns_inner_steps_into_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """A phase with no bar of its own (log Z by AIS, diagnose's long chain) says its inner
    loop's step as INFO lines, at most one per ``every_seconds``."""
    import logging

    import torch

    from latentebm.langevin import LangevinSampler
    from latentebm.progress import logged_within

    logger = logging.getLogger("latentebm.test_logged_within")
    with caplog.at_level(logging.INFO, logger=logger.name):
        with logged_within(logger, "long prior chain", every_seconds=0.0):
            LangevinSampler(n_steps=3, step_size=0.1).run(
                lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 2)
            )
        with logged_within(logger, "quiet", every_seconds=3600.0):
            LangevinSampler(n_steps=3, step_size=0.1).run(
                lambda z: -0.5 * z.pow(2).sum(1), torch.zeros(2, 2)
            )
    assert [r.getMessage() for r in caplog.records] == [
        "long prior chain: step 1 of 3",
        "long prior chain: step 2 of 3",
        "long prior chain: step 3 of 3",
    ]


def test_a_short_run_long_chain_reports_the_whole_chain_not_its_segments() -> None:
    """diagnose's long chain of a data-space run goes in segments (one per record step): the
    reports count the whole chain's steps."""
    import torch

    from latentebm.progress import reporting_within
    from latentebm.shortrun.energy import ConvEnergy
    from latentebm.shortrun.sampler import ShortRunChain
    from latentebm.shortrun.tools import ShortRunModel, long_chain

    torch.manual_seed(0)
    model = ShortRunModel(ConvEnergy((1, 8, 8), n_filters=2, n_down=1), ShortRunChain(5, 0.1))
    seen: list[tuple[int, int]] = []
    with reporting_within(lambda done, total: seen.append((done, total))):
        long_chain(model, n_chains=2, n_steps=6, record_every=2)
    assert seen and all(total == 6 for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
