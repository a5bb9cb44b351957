"""``benchmarks/quality_per_compute.py``: the checkpoint chosen per time mark, and its cache."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from latentebm.metrics.likelihood_eval import LikelihoodEvalSettings
from latentebm.metrics.marginal import AISSettings, LogPartitionSettings
from tests.test_train import fit

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_per_compute.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality_per_compute", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_table_takes_the_first_checkpoint_past_each_mark(
    tiny_recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks = iter(range(0, 10_000, 10))  # a CPU clock that advances 10 s per step
    with monkeypatch.context() as patch:
        patch.setattr(time, "process_time", lambda: float(next(ticks)))
        recipe = tiny_recipe(trainer={"checkpoint_every": 100, "valid_every": 100})
        run = fit(
            recipe,
            "trainer.clock=cpu",
            "trainer.max_minutes=1.5",  # 90 s, 30 of them kept for the final validation
            "trainer.checkpoint_every_minutes=0.5",  # and samples: 6 steps
            "trainer.keep_checkpoints=0",
            f"trainer.run_dir={tmp_path / 'run'}",
        )
    bench = _load_script()
    calls: list[Path] = []
    real_evaluate = bench.evaluate

    def counting_evaluate(path: Path, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(Path(path))
        return real_evaluate(path, *args, **kwargs)

    monkeypatch.setattr(bench, "evaluate", counting_evaluate)
    small = {  # cheap AIS: the test is about which checkpoint is scored and the cache
        "ais": AISSettings(n_chains=2, n_temperatures=3, laplace_steps=5, laplace_starts=1),
        "log_z": LogPartitionSettings(n_chains=16, n_temperatures=10),
    }
    monkeypatch.setattr(
        bench, "LikelihoodEvalSettings", lambda **kw: LikelihoodEvalSettings(**small, **kw)
    )
    out = tmp_path / "table.json"
    argv = [str(run), "--minutes", "0.5,1", "--max-batches", "1", "--json", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["minutes"], r["step"], r["train_seconds"]) for r in rows] == [
        (0.5, 3, 30.0),
        (1.0, 6, 60.0),
    ]
    assert [p.name for p in calls] == ["step_00000003.pt", "step_00000006.pt"]
    table = capsys.readouterr().out
    assert "| run | 0.5 min: NLL (updates) | 1 min: NLL (updates) |" in table
    assert f"({rows[0]['step']:,})" in table
    assert bench.main(argv) == 0  # cached: nothing evaluated again
    assert len(calls) == 2
