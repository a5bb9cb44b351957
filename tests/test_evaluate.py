"""Tests of ``latentebm evaluate`` (NLL / perplexity) on a tiny run trained in-process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from latentebm.cli import main
from latentebm.evaluate import (
    KNOWN_METRICS,
    NotImplementedMetricError,
    evaluate,
    length_sorted_batches,
    write_metrics,
)
from tests.conftest import train_tiny_run

FAST = {"n_importance": 4, "n_chains": 2, "chain_steps": 2, "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run (3 steps) trained once for this module."""
    root = tmp_path_factory.mktemp("evaluate")
    return train_tiny_run(
        root,
        f"trainer.run_dir={root / 'run'}",
        task={"valid_fraction": 0.2},
        trainer={"max_steps": 3, "samples_at_end": 0},
    )


def test_evaluate_writes_metrics_json(tiny_run: Path) -> None:
    result = evaluate(tiny_run, "valid", **FAST, seed=1)
    path = tiny_run / "metrics.json"
    assert result["output"] == str(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = data["valid"]["nll"]
    for key in (
        "nll_per_example",
        "total_nll",
        "total_tokens",
        "nll_per_token",
        "ppl",
        "n_importance",
        "n_chains",
        "chain_steps",
        "log_z",
        "log_z_std_error",
        "log_z_samples",
        "mean_ess",
        "split",
        "sentences",
        "tokens",
        "checkpoint",
        "step",
        "seconds",
        "seed",
        "settings",
    ):
        assert key in entry, key
    assert entry["n_importance"] == 4 and entry["n_chains"] == 2 and entry["chain_steps"] == 2
    assert entry["log_z_samples"] == 100_000 and entry["log_z_std_error"] >= 0
    assert 1.0 <= entry["mean_ess"] <= 4.0
    assert entry["step"] == 3 and entry["checkpoint"].endswith(".pt")
    assert entry["split"] == "valid" and entry["complete"] is True
    assert entry["sentences"] == 40 and entry["tokens"] == entry["total_tokens"]
    assert entry["nll_per_example"] > 0
    assert entry["ppl"] == pytest.approx(math.exp(entry["total_nll"] / entry["total_tokens"]))
    assert entry["nll_per_example"] == pytest.approx(entry["total_nll"] / entry["sentences"])
    # all sentences of the split, each exactly once
    batches = length_sorted_batches(load_task(tiny_run), "valid", 32)
    assert sum(b.shape[0] for b in batches) == 40


def load_task(run: Path):  # noqa: ANN201
    from latentebm.pretrained import load

    return load(run).task


def test_second_evaluation_keeps_history(tmp_path: Path, tiny_run: Path) -> None:
    out = tmp_path / "m.json"
    out.write_text(json.dumps({"other": {"x": 1}}), encoding="utf-8")
    first = evaluate(tiny_run, "valid", **FAST, seed=1, output=out)["metrics"]["nll"]
    second = evaluate(tiny_run, "valid", **FAST, seed=2, output=out, max_batches=1)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["other"] == {"x": 1}
    entry = data["valid"]["nll"]
    assert entry["seed"] == 2 and entry["complete"] is False
    assert entry["total_nll"] == pytest.approx(second["metrics"]["nll"]["total_nll"])
    assert len(entry["history"]) == 1
    assert entry["history"][0]["total_nll"] == pytest.approx(first["total_nll"])
    # a third keeps both earlier results, oldest first, without nesting
    write_metrics(out, "valid", {"nll": {"total_nll": 1.0}})
    data = json.loads(out.read_text(encoding="utf-8"))
    history = data["valid"]["nll"]["history"]
    assert [h["seed"] for h in history] == [1, 2]
    assert all("history" not in h for h in history)
    assert not list(tmp_path.glob(".m.json.*"))  # no temporary file left


def test_same_seed_same_result(tiny_run: Path) -> None:
    a = evaluate(tiny_run, "valid", **FAST, seed=3, write=False)["metrics"]["nll"]
    b = evaluate(tiny_run, "valid", **FAST, seed=3, write=False)["metrics"]["nll"]
    assert a["total_nll"] == b["total_nll"]


def test_unknown_metric(tiny_run: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric.*perplexity") as error:
        evaluate(tiny_run, "valid", ["nll", "perplexity"], **FAST)
    for name in KNOWN_METRICS:
        assert name in str(error.value)


@pytest.mark.parametrize("metrics", ["fppl", "nll,rppl,bleu"])
def test_not_implemented_metric(tiny_run: Path, metrics: str) -> None:
    with pytest.raises(NotImplementedMetricError, match="not implemented yet") as error:
        evaluate(tiny_run, "valid", metrics, **FAST)
    assert "nll" not in str(error.value).split("(")[0]
    assert not (tiny_run / "metrics.json").exists() or "fppl" not in (
        tiny_run / "metrics.json"
    ).read_text(encoding="utf-8")


def test_cli(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    argv = ["evaluate", str(tiny_run), "--split", "valid", "--importance-samples", "4"]
    argv += ["--chains", "2", "--chain-steps", "2", "--max-batches", "1", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in ("NLL (nats/sentence)", "PPL", "log Z", "mean ESS", "seconds", str(out)):
        assert label in printed
    assert json.loads(out.read_text(encoding="utf-8"))["valid"]["nll"]["n_importance"] == 4
    more = ["--chain-steps", "-1", "--max-batches", "1", "-o", str(out), "--no-progress"]
    assert main([*argv[:-6], *more]) == 0
    entry = json.loads(out.read_text(encoding="utf-8"))["valid"]["nll"]
    assert entry["chain_steps"] == 3  # the tiny recipe's K1
    assert len(entry["history"]) == 1
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), "--metrics", "bleu", "-o", str(out)]) == 2
    assert "not implemented yet" in capsys.readouterr().err
