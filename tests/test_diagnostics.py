"""Tests of ``latentebm.diagnostics`` (Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of
MCMC-Based Maximum Likelihood Learning of Energy-Based Models": d_t oscillation, r_t, long prior
chain) and of ``latentebm diagnose``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from latentebm.chain_records import long_prior_chain
from latentebm.cli import main
from latentebm.config import load_recipe
from latentebm.diagnostics import (
    autocorrelation,
    diagnose,
    oscillation_summary,
    read_metrics,
    rolling_mean,
)
from latentebm.plotting import fresh_dir
from latentebm.pretrained import load
from latentebm.train import Trainer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- autocorrelation
def test_autocorrelation_alternating_by_hand() -> None:
    # x = +1, -1, +1, -1, +1, -1: mean 0, sum of squares 6.
    # lag 1: five products, each -1 -> -5/6; lag 2: four products +1 -> 4/6;
    # lag 3: three products -1 -> -3/6; lag 5: one product -1 -> -1/6; lag 6 >= n -> 0.
    acf = autocorrelation([1, -1, 1, -1, 1, -1], 6)
    expected = [1.0, -5 / 6, 4 / 6, -3 / 6, 2 / 6, -1 / 6, 0.0]
    np.testing.assert_allclose(acf, expected, atol=1e-12)


def test_autocorrelation_small_case_by_hand() -> None:
    # x = 1, 2, 3, 4: mean 2.5, centred -1.5, -0.5, 0.5, 1.5, sum of squares 5.
    # lag 1: (-1.5)(-0.5) + (-0.5)(0.5) + (0.5)(1.5) = 0.75 - 0.25 + 0.75 = 1.25 -> 0.25
    # lag 2: (-1.5)(0.5) + (-0.5)(1.5) = -1.5 -> -0.3;  lag 3: (-1.5)(1.5) = -2.25 -> -0.45
    np.testing.assert_allclose(autocorrelation([1, 2, 3, 4], 3), [1, 0.25, -0.3, -0.45])


def test_autocorrelation_constant_and_errors() -> None:
    np.testing.assert_array_equal(autocorrelation([2.0] * 5, 3), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(autocorrelation([7.0], 2), [1.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        autocorrelation([], 2)
    with pytest.raises(ValueError):
        autocorrelation([1.0, 2.0], -1)


def test_rolling_mean() -> None:
    np.testing.assert_allclose(rolling_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


# -------------------------------------------------------------------- oscillation_summary
def test_oscillation_strong_for_alternating_series() -> None:
    rng = np.random.default_rng(0)
    d_t = [(-1) ** t * (1.0 + 0.1 * rng.standard_normal()) for t in range(100)]
    summary = oscillation_summary(d_t)
    assert summary["label"] == "strong"
    assert summary["sign_change_fraction"] == 1.0
    assert summary["lag1_autocorrelation"] < -0.9
    assert summary["n"] == 100


def test_oscillation_weak_for_smooth_and_white_series() -> None:
    smooth = np.sin(np.linspace(0, 4 * np.pi, 200))
    summary = oscillation_summary(smooth)
    assert summary["label"] == "weak"
    assert summary["lag1_autocorrelation"] > 0.9
    assert summary["sign_change_fraction"] < 0.05
    white = np.random.default_rng(1).standard_normal(400)
    assert oscillation_summary(white)["label"] == "weak"


def test_oscillation_summary_stats() -> None:
    summary = oscillation_summary([1.0, -1.0, 1.0, 3.0])
    assert summary["mean"] == pytest.approx(1.0)
    assert summary["std"] == pytest.approx(np.std([1.0, -1.0, 1.0, 3.0]))
    assert summary["sign_change_fraction"] == pytest.approx(2 / 3)
    assert oscillation_summary([1.0, -1.0])["label"] == "insufficient"
    with pytest.raises(ValueError):
        oscillation_summary([])


# ---------------------------------------------------------------------------- read_metrics
def test_read_metrics_skips_events(tmp_path: Path) -> None:
    rows = [
        {"step": 1, "recon_nll": 3.0, "energy_diff": 0.1},
        {"step": 1, "event": "resumed", "checkpoint": "x.pt"},
        {"step": 2, "recon_nll": 2.5, "energy_diff": -0.1},
        {"step": 2, "valid_recon_nll": 2.7, "valid_recon_ppl": 15.0},
    ]
    text = "\n".join(json.dumps(r) for r in rows) + "\n"
    (tmp_path / "metrics.jsonl").write_text(text, encoding="utf-8")
    train, valid = read_metrics(tmp_path)
    assert [r["step"] for r in train] == [1, 2]
    assert all("event" not in r for r in train + valid)
    assert len(valid) == 1 and valid[0]["valid_recon_nll"] == 2.7


def test_read_metrics_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metrics.jsonl"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="metrics.jsonl.*empty"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "event": "resumed"}\n')
    with pytest.raises(ValueError, match="empty"):
        read_metrics(tmp_path)


def test_fresh_dir_never_reuses_a_non_empty_dir(tmp_path: Path) -> None:
    first = fresh_dir(tmp_path / "diagnostics")
    assert first == tmp_path / "diagnostics" and first.is_dir()
    assert fresh_dir(tmp_path / "diagnostics") == first  # still empty: reused
    (first / "a.png").write_bytes(b"x")
    assert fresh_dir(tmp_path / "diagnostics") == tmp_path / "diagnostics-2"


# ------------------------------------------------------------------------------ end to end
@pytest.fixture
def tiny_run(tiny_recipe: Callable[..., Path], tmp_path: Path) -> Path:
    recipe = tiny_recipe()
    return Trainer(load_recipe(recipe, [f"trainer.runs_root={tmp_path / 'runs'}"])).fit()


def test_long_prior_chain(tiny_run: Path) -> None:
    model = load(tiny_run).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    out = long_prior_chain(model, n_chains=8, n_steps=25, record_every=10, generator=generator)
    assert out["steps"] == [0, 10, 20, 25]
    assert len(out["energy"]) == len(out["log_density"]) == 4
    assert out["energy_end"] == out["energy"][-1]
    assert out["training_steps"] == 5
    assert all(np.isfinite(out["energy"] + out["log_density"]))
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_diagnose_end_to_end(tiny_run: Path) -> None:
    result = diagnose(tiny_run, n_chains=8, n_steps=50, seed=0)
    out = tiny_run / "diagnostics"
    assert Path(result["out_dir"]) == out
    for name in ("d_t.png", "r_t.png", "autocorrelation.png", "long_chain.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    saved = json.loads((out / "diagnostics.json").read_text(encoding="utf-8"))
    assert {"oscillation", "long_chain", "files", "r_t", "autocorrelation"} <= saved.keys()
    assert saved["oscillation"]["n"] == 6
    assert saved["oscillation"]["label"] in ("strong", "weak")
    assert saved["long_chain"]["n_steps"] == 50
    assert "d_t.png" in saved["files"] and "diagnostics.json" in saved["files"]
    assert saved["r_t"]["prior"] > 0 and saved["r_t"]["posterior"] > 0
    # Nijkamp et al.'s sign and scale: the tiny recipe's chains have a0 = 0.4, a1 = 0.1
    nijkamp = saved["nijkamp"]
    assert nijkamp["r_t_prior"] == pytest.approx(0.08 * saved["r_t"]["prior"])
    assert nijkamp["r_t_posterior"] == pytest.approx(0.005 * saved["r_t"]["posterior"])
    assert nijkamp["d_t_mean"] == pytest.approx(-saved["oscillation"]["mean"])
    usage = saved["latent_usage"]  # does the decoder use z? (100 examples asked, 20 valid)
    assert usage["split"] == "valid" and usage["n_examples"] == 20
    assert 0 <= usage["active_units"] <= 4 and "recon_gain" in usage

    stamp = (out / "d_t.png").stat().st_mtime_ns
    again = diagnose(tiny_run, n_chains=8, n_steps=0)  # no overwrite: a sibling directory
    assert Path(again["out_dir"]) == tiny_run / "diagnostics-2"
    assert (out / "d_t.png").stat().st_mtime_ns == stamp
    assert json.loads((out / "diagnostics.json").read_text()) == saved
    assert again["long_chain"] is None
    assert not (tiny_run / "diagnostics-2" / "long_chain.png").exists()


def test_cli_diagnose(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "diag"
    args = ["diagnose", str(tiny_run), "--long-chain-steps", "20", "--chains", "4"]
    assert main([*args, "--seed", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lag-1 autocorrelation" in printed and str(out) in printed
    for label in ("d_t, Nijkamp et al. 2020 sign", "r_t prior, Nijkamp scale", "active units"):
        assert label in printed
    assert (out / "long_chain.png").read_bytes()[:8] == PNG_MAGIC
    assert main([*args, "-o", str(out)]) == 0
    assert (tmp_path / "diag-2" / "diagnostics.json").is_file()


def test_nijkamp_scale_maps_sign_and_drift() -> None:
    from latentebm.diagnostics import nijkamp_scale

    out = nijkamp_scale([0.5, -1.5], [10.0, 30.0], [4.0], shortrun=False, drifts=(0.08, 0.005))
    assert out["d_t_mean"] == pytest.approx(0.5)  # -(0.5 - 1.5) / 2
    assert out["r_t_prior"] == pytest.approx(1.6) and out["r_t_posterior"] == pytest.approx(0.02)
    short = nijkamp_scale([0.5], [0.1], [], shortrun=True, drifts=None)
    assert short["d_t_mean"] == -0.5 and short["r_t_prior"] == 0.1
    assert short["r_t_posterior"] is None


def test_cli_diagnose_missing_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "metrics.jsonl" in err[0]


def test_without_matplotlib_diagnose_gives_its_numbers_and_says_the_plots_are_skipped(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's plain install has no matplotlib: the numbers still come (a fresh-clone
    walkthrough met an error here), with one line naming the extra that draws the plots."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["diagnose", str(tiny_run), "--long-chain-steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "d_t mean" in out
    assert "plots skipped: matplotlib is missing: pip install 'latentebm[plot]'" in out
    folder = tiny_run / "diagnostics"
    assert sorted(p.name for p in folder.iterdir()) == ["diagnostics.json"]
    summary = json.loads((folder / "diagnostics.json").read_text())
    assert summary["plots_skipped"].startswith("matplotlib is missing")
    assert summary["files"] == ["diagnostics.json"]


def test_plot_without_matplotlib_is_one_clear_error(
    tiny_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(tiny_run)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install 'latentebm[plot]'" in err[0]
    assert not (tiny_run / "curves.png").exists()


def test_diagnose_a_run_whose_config_yaml_is_damaged(tmp_path: Path) -> None:
    """The chain drifts need config.yaml; a damaged one is skipped, not a YAML traceback."""
    from latentebm.cli import main as cli_main
    from tests.conftest import train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=2", f"trainer.run_dir={tmp_path / 'run'}")
    (run / "config.yaml").write_text("task: [unclosed\n")
    assert cli_main(["diagnose", str(run)]) == 0


def test_plot_draws_the_logged_curves_and_never_overwrites(tmp_path: Path) -> None:
    """``latentebm plot RUN``: the default panels with the keys the run logged; ``--keys``."""
    pytest.importorskip("matplotlib")
    from latentebm.cli import main

    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"step": s, "recon_nll": 30.0 - s, "energy_diff": 0.01 * s, "tokens_per_s": 9.0}
        for s in range(1, 6)
    ]
    rows.append({"step": 5, "valid_recon_nll": 26.5})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(run)]) == 2  # exists: not overwritten
    from latentebm.curves import plot_training_curves

    drawn = plot_training_curves(run, tmp_path / "two.png")
    assert drawn == ["recon_nll", "valid_recon_nll", "energy_diff", "tokens_per_s"]
    assert plot_training_curves(run, tmp_path / "one.png", ["energy_diff"]) == ["energy_diff"]
    with pytest.raises(ValueError, match=r"none of nope was logged \(logged: energy_diff"):
        plot_training_curves(run, tmp_path / "none.png", ["nope"])
