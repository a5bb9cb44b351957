"""Tests of ``latentebm.chain_step`` (the step index of an unadjusted Langevin chain, eq. (8) of
Pang et al. 2020) against a chain run on a Gaussian, and of its report in ``diagnose``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from latentebm.chain_step import WIDE_CHAIN_INFLATION, chi_mean_factor, step_index
from latentebm.diagnostics import _chain_drifts, diagnose, prior_chain_step
from latentebm.langevin import LangevinSampler


@pytest.mark.parametrize(
    ("a", "v", "tau"), [(0.4, 0.16, 1.0), (0.4, 0.05, 1.0), (0.3, 0.05, 1.0), (0.4, 0.06, 0.5)]
)
def test_the_index_read_from_a_chains_gradients_gives_its_variance_on_a_gaussian(
    a: float, v: float, tau: float
) -> None:
    """On N(0, v I), a chain started at its own stationary law N(0, tau^2 v / (1 - c) I),
    c = a^2 / (4 v), keeps it; the index read from its mean gradient norm must give c and the
    variance it samples (up to sampling error: the mean norm is corrected to a root mean
    square by the chi factor)."""
    d, n = 48, 4000
    c = a * a / (4 * v)
    stationary = tau * tau * v / (1 - c)
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, d, generator=generator, dtype=torch.float64) * math.sqrt(stationary)
    chain = LangevinSampler(n_steps=30, step_size=a, noise_factor=tau)
    result = chain.run(lambda z: -0.5 * (z * z).sum(1) / v, z0, generator=generator)
    index = step_index(a, float(result.grad_norm.mean()), d, tau)
    measured = float(result.z.var()) / (tau * tau * v)  # over the tempered target's
    assert index.bound_fraction == pytest.approx(c, rel=0.01)
    assert index.variance_inflation == pytest.approx(1 / (1 - c), rel=0.01)
    assert index.variance_inflation == pytest.approx(measured, rel=0.02)
    assert index.too_wide == (1 / (1 - c) >= WIDE_CHAIN_INFLATION)


def test_the_index_by_hand_and_its_errors() -> None:
    # chi factor: d = 1: sqrt(2 / pi); d = 2: sqrt(pi) / 2 (E chi_2 = sqrt(pi / 2), / sqrt(2))
    assert chi_mean_factor(1) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert chi_mean_factor(2) == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-12)
    # a = 0.4, mean ||grad|| = 15, d = 32: rms = 15 / 0.9922192 = 15.117627;
    # rho = 0.4 * 15.117627 / (2 * sqrt(32)) = 0.534488; rho^2 = 0.285678:
    # bound fraction 0.285678 / 1.285678 = 0.222200, inflation 1.285678.
    index = step_index(0.4, 15.0, 32)
    assert index.rho == pytest.approx(0.534488, rel=1e-5)
    assert index.bound_fraction == pytest.approx(0.222200, rel=1e-5)
    assert index.variance_inflation == pytest.approx(1.285678, rel=1e-6)
    assert not index.too_wide
    # rho = 1.05 T: just over twice the variance, reported as too wide; 0.95 T: not
    for share, wide in ((1.05, True), (0.95, False)):
        norm = share * 0.5 * 2 * math.sqrt(8) / 0.5 * chi_mean_factor(8)  # rho = share * 0.5
        assert step_index(0.5, norm, 8, 0.5).too_wide is wide
    for bad in ((0.0, 1.0, 4, 1.0), (0.1, -1.0, 4, 1.0), (0.1, math.nan, 4, 1.0), (0.1, 1, 0, 1)):
        with pytest.raises(ValueError):
            step_index(*bad)


MODEL = {
    "z_dim": 32,
    "prior_chain": {"n_steps": 60, "step_size": 0.4},
    "posterior_chain": {"n_steps": 20, "step_size": 0.1},
}


def test_prior_chain_step_windows_and_advice() -> None:
    norms = [15.0] * 10 + [20.0] * 80 + [60.0] * 10  # a tenth of 100 rows: 10 per window
    report = prior_chain_step(norms, MODEL)
    assert report is not None
    assert report["rows_per_window"] == 10
    assert report["rho_first"] == pytest.approx(step_index(0.4, 15.0, 32).rho)
    assert report["rho_last"] == pytest.approx(step_index(0.4, 60.0, 32).rho)
    assert report["rho_max"] == report["rho_last"]
    rho = 0.4 * 60 / chi_mean_factor(32) / (2 * 32**0.5)
    assert report["variance_inflation_last"] == pytest.approx(1 + rho**2)
    assert report["too_wide"] and "lower model.prior_chain.step_size (now 0.4;" in report["advice"]
    # a colder chain (noise factor T) is read against the tempered Gaussian: 1 + (rho / T)^2
    cold = prior_chain_step(norms, {**MODEL, "prior_chain": {"step_size": 0.4, "noise_factor": 2}})
    assert cold is not None and cold["variance_inflation_last"] == pytest.approx(1 + rho**2 / 4)
    calm = prior_chain_step([15.0] * 5, MODEL)
    assert calm is not None and calm["rows_per_window"] == 1
    assert not calm["too_wide"] and calm["advice"] is None
    # a schedule counts as its root mean square step: 0.4 and 0.2 alternating -> sqrt(0.1)
    scheduled = {**MODEL, "prior_chain": {"n_steps": 4, "step_schedule": [0.4, 0.2, 0.4, 0.2]}}
    report = prior_chain_step([200.0], scheduled)
    assert report is not None and report["step_size"] == pytest.approx(math.sqrt(0.1))
    assert "lower model.prior_chain.step_schedule" in report["advice"]
    # non-finite rows are left out, not fatal
    report = prior_chain_step([15.0, math.nan, math.inf], MODEL)
    assert report is not None and report["rho_last"] == pytest.approx(step_index(0.4, 15, 32).rho)
    # nothing to read: no logged norms, no config, a config without z_dim
    assert prior_chain_step([], MODEL) is None
    assert prior_chain_step([15.0], None) is None
    assert prior_chain_step([15.0], {"prior_chain": {"step_size": 0.4}}) is None
    assert prior_chain_step([15.0], {**MODEL, "prior_chain": None}) is None
    assert _chain_drifts({**MODEL, "prior_chain": None}) is None  # not an AttributeError
    assert (
        prior_chain_step([15.0], {**MODEL, "prior_chain": {"step_size": 0.4, "noise": False}})
        is None
    )


def test_diagnose_reports_a_prior_chain_that_samples_too_wide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose logged prior-chain gradient norm climbs (as PTB's did under Table 5's
    a0 = 0.4, docs/RESULTS.md 12c): diagnose's JSON and its printed table carry the index, and
    a warning names the key to lower."""
    from latentebm.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(json.dumps({"model": MODEL}))  # YAML is a superset of JSON
    rows = [
        {
            "step": 10 * (i + 1),
            "energy_diff": 0.5 + 0.1 * i,
            "prior_grad_norm": 15.0 + i,
            "posterior_grad_norm": 6.0,
        }
        for i in range(50)
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = diagnose(run, n_steps=0, usage_examples=0)
    report = result["prior_chain_step"]
    assert report["rho_last"] == pytest.approx(step_index(0.4, 62.0, 32).rho)  # mean of 60..64
    assert report["too_wide"]
    saved = json.loads((Path(result["out_dir"]) / "diagnostics.json").read_text())
    assert saved["prior_chain_step"] == report
    capsys.readouterr()
    assert main(["diagnose", str(run), "--long-chain-steps", "0", "--usage-examples", "0"]) == 0
    out = capsys.readouterr().out
    assert "prior chain step index rho" in out
    assert "warning: the prior chain samples about" in out
