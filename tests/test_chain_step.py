"""Tests of ``latentebm.chain_step`` (the step index of an unadjusted Langevin chain, eq. (8) of
Pang et al. 2020) against a chain run on a Gaussian, and of its report in ``diagnose``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from latentebm.chain_step import WIDE_CHAIN_INFLATION, step_index
from latentebm.diagnostics import diagnose, prior_chain_step
from latentebm.langevin import LangevinSampler


@pytest.mark.parametrize(
    ("a", "v", "tau"), [(0.4, 0.16, 1.0), (0.4, 0.05, 1.0), (0.3, 0.05, 1.0), (0.4, 0.06, 0.5)]
)
def test_the_index_read_from_a_chains_gradients_gives_its_variance_on_a_gaussian(
    a: float, v: float, tau: float
) -> None:
    """On N(0, v I), a chain started at its own stationary law N(0, tau^2 v / (1 - c) I),
    c = a^2 / (4 v), keeps it; the index read from its mean gradient norm must give c and the
    variance it samples (to the ~1 % by which a chi's mean falls short of its root mean
    square in 48 dimensions, plus sampling error)."""
    d, n = 48, 4000
    c = a * a / (4 * v)
    stationary = tau * tau * v / (1 - c)
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(n, d, generator=generator, dtype=torch.float64) * math.sqrt(stationary)
    chain = LangevinSampler(n_steps=30, step_size=a, noise_factor=tau)
    result = chain.run(lambda z: -0.5 * (z * z).sum(1) / v, z0, generator=generator)
    index = step_index(a, float(result.grad_norm.mean()), d, tau)
    measured = float(result.z.var()) / (tau * tau * v)  # over the tempered target's
    assert index.bound_fraction == pytest.approx(c, rel=0.03)
    assert index.variance_inflation == pytest.approx(1 / (1 - c), rel=0.02)
    assert index.variance_inflation == pytest.approx(measured, rel=0.03)
    assert index.too_wide == (1 / (1 - c) >= WIDE_CHAIN_INFLATION)


def test_the_index_by_hand_and_its_errors() -> None:
    # a = 0.4, ||grad|| = 15, d = 32: rho = 0.4 * 15 / (2 * sqrt(32)) = 6 / 11.3137 = 0.53033;
    # rho^2 = 0.28125: bound fraction 0.28125 / 1.28125 = 0.21951, inflation 1.28125.
    index = step_index(0.4, 15.0, 32)
    assert index.rho == pytest.approx(0.530330, rel=1e-5)
    assert index.bound_fraction == pytest.approx(0.219512, rel=1e-5)
    assert index.variance_inflation == pytest.approx(1.28125, rel=1e-12)
    assert not index.too_wide
    # rho = tau exactly: twice the variance, half the bound, reported as too wide
    edge = step_index(0.5, 2 * math.sqrt(8) * 0.5 / 0.5, 8, 0.5)  # rho = 0.5 = tau
    assert edge.variance_inflation == pytest.approx(2.0) and edge.too_wide
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
    assert report["variance_inflation_last"] == pytest.approx(1 + (0.4 * 60 / (2 * 32**0.5)) ** 2)
    assert report["too_wide"] and "model.prior_chain.step_size" in report["advice"]
    calm = prior_chain_step([15.0] * 5, MODEL)
    assert calm is not None and calm["rows_per_window"] == 1
    assert not calm["too_wide"] and calm["advice"] is None
    # a schedule counts as its root mean square step: 0.4 and 0.2 alternating -> sqrt(0.1)
    scheduled = {**MODEL, "prior_chain": {"n_steps": 4, "step_schedule": [0.4, 0.2, 0.4, 0.2]}}
    report = prior_chain_step([15.0], scheduled)
    assert report is not None and report["step_size"] == pytest.approx(math.sqrt(0.1))
    # nothing to read: no logged norms, no config, a config without z_dim
    assert prior_chain_step([], MODEL) is None
    assert prior_chain_step([15.0], None) is None
    assert prior_chain_step([15.0], {"prior_chain": {"step_size": 0.4}}) is None


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
