"""Smoke tests of ``benchmarks/train_step.py`` (the timing itself is not checked)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step.py"


def run_benchmark(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<name> args...``, output captured, exit status not checked."""
    return subprocess.run(
        [sys.executable, str(SCRIPT.with_name(name)), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    start = time.perf_counter()
    proc = run_benchmark("train_step.py", "--quick", "--json", str(out))
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 15.0, f"--quick took {elapsed:.1f} s"
    assert "ratio iteration / plain" in proc.stdout

    data = json.loads(out.read_text())
    assert set(data) >= {"benchmark", "config", "timings_s", "results", "machine"}
    for piece in ("plain", "iteration", "posterior_step", "prior_chain", "fwd_bwd"):
        stats = data["timings_s"][piece]
        assert len(stats["samples"]) == data["config"]["repeats"] == 2
        assert stats["median"] > 0 and stats["iqr"] >= 0
        assert all(t > 0 for t in stats["samples"])
    results = data["results"]
    for key in (
        "ratio",
        "ratio_of_medians",
        "ratio_vs_fwd_bwd",
        "floor",
        "target_ratio",
        "target_tokens_per_s",
        "plain_target_tokens_per_s",
        "posterior_steps_per_s",
        "posterior_step_over_plain",
        "expected_ratio_from_parts",
    ):
        assert results[key] > 0, key
    assert isinstance(results["above_floor_pct"], float)
    assert isinstance(results["meets_target"], bool)
    k1 = data["config"]["k1"]
    assert results["floor"] == pytest.approx((2 * k1 + 3) / 3)
    config = data["config"]
    assert config["target_tokens"] == config["batch_size"] * config["length"]
    machine = data["machine"]
    for key in ("torch", "threads", "cpu_model", "date", "git_commit", "command"):
        assert key in machine, key
    assert machine["threads"] >= 1
    assert "--quick" in machine["command"]


def test_quick_image_run_compares_the_plain_path(tmp_path: Path) -> None:
    """``--preset svhn``: the image model of recipes/svhn.yaml on a synthetic batch, with the
    generator's plain path timed alongside."""
    out = tmp_path / "bench.json"
    proc = run_benchmark(
        "train_step.py", "--preset", "svhn", "--quick", "--compare-plain-path", "--json", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "plain generator step" in proc.stdout and "fast path speed-up" in proc.stdout
    data = json.loads(out.read_text())
    config = data["config"]
    assert config["kind"] == "image" and config["image_shape"] == [3, 32, 32]
    assert config["architecture"] == "svhn32" and config["fast_path"] is True
    assert config["batch_size"] == 4 and config["k1"] == 3
    assert "target_tokens" not in config
    for piece in ("plain", "iteration", "posterior_step", "prior_chain", "fwd_bwd"):
        assert len(data["timings_s"][piece]["samples"]) == 2
    for piece in ("iteration_plain_path", "posterior_step_plain_path"):
        assert len(data["timings_s"][piece]["samples"]) == 2
    results = data["results"]
    for key in ("ratio", "floor", "images_per_s", "plain_images_per_s", "posterior_steps_per_s"):
        assert results[key] > 0, key
    assert results["fast_path_speedup_iteration"] > 0
    assert results["fast_path_speedup_posterior_step"] > 0
    assert "target_tokens_per_s" not in results


def test_image_batch_and_preset() -> None:
    bench = _load_script()
    x = bench.make_image_batch(3, (3, 32, 32), torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    again = bench.make_image_batch(3, (3, 32, 32), torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    assert bench.image_shape_for("svhn32") == (3, 32, 32)
    assert bench.image_shape_for("mnist28") == (1, 28, 28)
    assert bench.image_shape_for("auto") == (3, 32, 32)
    args = bench.parse_args(["--preset", "svhn", "--ngf", "8"])
    assert args.recipe.name == "svhn.yaml"
    assert "model.generator.ngf=8" in bench.recipe_overrides(args)
    assert bench.parse_args([]).recipe.name == "ptb.yaml"
    times = {name: [0.3, 0.2, 0.1] for name in bench.PIECES}
    times["iteration"] = [3.0, 2.0, 1.0]
    times["iteration_plain_path"] = [6.0, 3.0, 1.5]
    results = bench.derive(times, k1=3, images=100)
    assert results["images_per_s"] == pytest.approx(50.0)
    assert results["fast_path_speedup_iteration"] == pytest.approx(1.5)
    assert "fast_path_speedup_posterior_step" not in results


def test_batch_and_presets() -> None:
    bench = _load_script()
    task = bench.SyntheticTextTask(vocab_size=50)
    x = bench.make_batch(5, 7, task, torch.Generator().manual_seed(0))
    assert x.shape == (5, 8)
    assert (x[:, 0] == task.bos_id).all() and (x[:, -1] == task.eos_id).all()
    assert ((x[:, 1:-1] >= 4) & (x[:, 1:-1] < 50)).all()
    assert int((x[:, 1:] != task.pad_id).sum()) == 35

    args = bench.parse_args(["--preset", "reference", "--k1", "5", "--set", "model.z_dim=16"])
    overrides = bench.recipe_overrides(args)
    assert "model.generator.hidden_dim=256" in overrides
    assert overrides[-2:] == ["model.posterior_chain.n_steps=5", "model.z_dim=16"]
    assert args.vocab_size == 10002 and args.length == 27 and args.repeats == 10
    assert args.batch_size is None  # the recipe's trainer.batch_size (32 in ptb.yaml)

    times = {name: [0.3, 0.2, 0.1] for name in bench.PIECES}
    times["iteration"] = [3.0, 2.0, 1.0]
    results = bench.derive(times, k1=3, target_tokens=100)
    assert results["ratio"] == pytest.approx(10.0)
    assert results["floor"] == pytest.approx(3.0)
    assert results["target_tokens_per_s"] == pytest.approx(50.0)


def test_generate_benchmark_counts_tokens_to_eos(tmp_path: Path) -> None:
    script = SCRIPT.with_name("generate.py")
    out = tmp_path / "gen.json"
    proc = run_benchmark(
        script.name,
        "--n",
        "3",
        "--repeats",
        "1",
        "--decode",
        "greedy",
        "--json",
        str(out),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["decode"] == "greedy" and row["n"] == 3
    # an untrained decoder: between 1 and max_decode_length (60) tokens per sentence
    assert 1 <= row["mean_tokens_per_sentence"] <= 60
    assert row["sentences_per_s"] == pytest.approx(3 / (row["prior_chain_s"] + row["decode_s"]))


def test_bdmc_benchmark_on_a_tiny_run(tmp_path: Path) -> None:
    from tests.conftest import train_tiny_run

    run = train_tiny_run(
        tmp_path,
        f"trainer.run_dir={tmp_path / 'run'}",
        task={"valid_fraction": 0.2},
        trainer={"max_steps": 3, "samples_at_end": 0},
    )
    out = tmp_path / "bdmc.json"
    ais = json.dumps({"n_chains": 2, "n_temperatures": 3, "laplace_starts": 1, "laplace_steps": 3})
    proc = run_benchmark(
        "bdmc.py",
        str(run),
        "--examples",
        "4",
        "--ais",
        ais,
        "--split",
        "valid",
        "--time-batches",
        "1",
        "--json",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["bdmc"]["examples"] == 4 and record["settings"]["n_temperatures"] == 3
    assert record["timing"]["extrapolated"] is True and record["timing"]["cpu_seconds"] > 0
    assert "mean gap" in proc.stdout


def test_ground_truth_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Tiny data and 2 updates per model: the pipeline, not the numbers."""
    script = SCRIPT.with_name("ground_truth.py")
    spec = importlib.util.spec_from_file_location("bench_ground_truth", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    from latentebm.ground_truth import GroundTruthConfig, write_dataset

    out = tmp_path / "gt"
    write_dataset(
        GroundTruthConfig(kind="text", n_train=40, n_valid=8, n_test=8), out / "data" / "text2"
    )
    record = tmp_path / "gt.json"
    figure = tmp_path / "gt.png"
    args = ["--out", str(out), "--kinds", "text", "--steps", "2", "--eval-examples", "3"]
    args += ["--json", str(record), "--figure", str(figure), "--set", "trainer.valid_batches=1"]
    args += ["--then", "1", "--then-set", "optim.generator.lr_decay=0.5"]  # a second phase
    assert bench.main(args) == 0
    phases = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("ground_truth:")
    ]
    assert len(phases) == 6 and "the true model: AIS" in phases[0]  # a line per evaluation phase
    (row,) = json.loads(record.read_text())["rows"]
    assert row["examples"] == 3 and row["steps"] == 3 and row["then"] == 1
    for prior in ("ebm", "gaussian"):  # scored: the second phase, started from the first
        assert row[prior]["run"] == str(out / "runs" / f"text2_{prior}_then1")
        config = (out / "runs" / f"text2_{prior}_then1" / "config.yaml").read_text()
        assert "lr_decay: 0.5" in config and f"text2_{prior}" in config  # init_from the first
    for who in ("true", "ebm", "gaussian"):
        assert "nll_quadrature" in row[who] and row[who]["grid_error"] < 0.05
    assert row["true"]["nll"] < row["gaussian"]["nll"]  # untrained models are far from the truth
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ground_truth_linear_references_match_the_truth_for_a_gaussian_prior(
    tmp_path: Path,
) -> None:
    """With a Gaussian true prior, the probabilistic-PCA fit to many draws is the true model,
    so its NLL equals the closed form to sampling error; a wrong fit (e.g. W without the
    ``- tau^2``) would be off by nats."""
    script = SCRIPT.with_name("ground_truth.py")
    spec = importlib.util.spec_from_file_location("bench_ground_truth_linear", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from latentebm.generators.linear import LinearGenerator
    from latentebm.langevin import LangevinSampler
    from latentebm.mixture_prior import GaussianMixturePrior
    from latentebm.model import LatentEBM

    torch.manual_seed(0)
    generator = LinearGenerator(
        LinearGenerator.Config(likelihood_sigma=1.0), z_dim=2, image_shape=(1, 3, 3)
    )  # W W^T's eigenvalues about 1.6: tau^2 = 1 is a large part of the covariance
    prior = GaussianMixturePrior(torch.zeros(1, 2), 1.0)  # N(0, I)
    model = LatentEBM(prior, generator, LangevinSampler(1, 0.1), LangevinSampler(1, 0.1))
    with torch.no_grad():
        generator.linear.bias.normal_()  # a mean the fit must find
        train = generator.sample(torch.randn(50_000, 2), noise=True, clamp=False)
        x = generator.sample(torch.randn(400, 2), noise=True, clamp=False)
    np.save(tmp_path / "train.npy", train.numpy())
    refs = bench.linear_references(tmp_path, model, x)
    assert refs["gaussian_class_ml"]["nll"] == pytest.approx(refs["true_nll_closed_form"], abs=0.01)
    assert 5 < refs["true_nll_closed_form"] < 30  # 9 pixels: a few nats each


def test_ground_truth_benchmark_refuses_an_unknown_kind(tmp_path: Path) -> None:
    proc = run_benchmark("ground_truth.py", "--out", str(tmp_path), "--kinds", "images,imagez")
    assert proc.returncode == 2 and "--kinds: unknown imagez" in proc.stderr
    assert "images_linear" in proc.stderr and not list(tmp_path.iterdir())  # nothing written


def _ground_truth_record(
    path: Path, true: float, ebm: float, gaussian: float, kinds: tuple[str, ...] = ("images",)
) -> str:
    rows = [
        {
            "kind": kind,
            "z_dim": 2,
            "true": {"nll": true},
            "ebm": {"nll": ebm, "std_error": 0.01},
            "gaussian": {"nll": gaussian, "std_error": 0.01},
        }
        for kind in kinds
    ]
    path.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    return str(path)


def test_ground_truth_seeds_pools_paired_differences(tmp_path: Path) -> None:
    """Hand-computed: gaps EBM 0.2, 0.6 and Gaussian 0.5, 0.4 give differences -0.3, +0.2
    (mean -0.05, standard error sd / sqrt(2) = 0.25), shares 60 % and -50 %, and 1 - 0.4 / 0.45
    of the mean gaps."""
    first = _ground_truth_record(tmp_path / "s1.json", 10.0, 10.2, 10.5)
    second = _ground_truth_record(tmp_path / "s2.json", 10.0, 10.6, 10.4)
    out = tmp_path / "pooled.json"
    proc = run_benchmark("ground_truth_seeds.py", first, second, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    pooled = json.loads(out.read_text())
    assert [s["share_closed"] for s in pooled["seeds"]] == pytest.approx([0.6, -0.5])
    assert pooled["mean_ebm_minus_gaussian"] == pytest.approx(-0.05)
    assert pooled["std_error_ebm_minus_gaussian"] == pytest.approx(0.25)
    assert pooled["seeds_favouring_ebm"] == 1 and pooled["n"] == 2
    assert pooled["share_closed_of_mean_gaps"] == pytest.approx(1 - 0.4 / 0.45)
    assert pooled["mean_gap_ebm"] == pytest.approx(0.4)
    assert pooled["std_error_gap_ebm"] == pytest.approx(0.2)  # sd 0.2828 / sqrt(2)
    assert pooled["mean_gap_gaussian"] == pytest.approx(0.45)
    assert pooled["std_error_gap_gaussian"] == pytest.approx(0.05)
    assert "-0.050 ± 0.250" in proc.stdout
    proc = run_benchmark("ground_truth_seeds.py", first, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["std_error_ebm_minus_gaussian"] is None  # strict JSON


def test_ground_truth_seeds_refuses_records_of_other_data(tmp_path: Path) -> None:
    first = _ground_truth_record(tmp_path / "s1.json", 10.0, 10.2, 10.5)
    other = _ground_truth_record(tmp_path / "other.json", 11.0, 11.2, 11.5)
    proc = run_benchmark("ground_truth_seeds.py", first, other)
    assert proc.returncode == 2
    assert "other.json: the true model's NLL" in proc.stderr and proc.stdout == ""
    both = _ground_truth_record(tmp_path / "both.json", 10.0, 10.2, 10.5, ("text", "images"))
    proc = run_benchmark("ground_truth_seeds.py", first, both)
    assert proc.returncode == 2 and "both.json: 2 rows match" in proc.stderr
    proc = run_benchmark("ground_truth_seeds.py", first, both, "--kind", "images")
    assert proc.returncode == 0, proc.stderr
    broken = tmp_path / "broken.json"
    for text in (
        "[1]",
        '{"rows": [1]}',
        '{"rows": [{"true": {"nll": "x"}, "ebm": {}, "gaussian": {}}]}',
        "{",
    ):
        broken.write_text(text, encoding="utf-8")
        proc = run_benchmark("ground_truth_seeds.py", first, str(broken))
        assert proc.returncode == 2 and f"{broken}:" in proc.stderr, text
        assert "Traceback" not in proc.stderr


def test_prior_learning_benchmark(tmp_path: Path) -> None:
    """The grid NLL is exact for closed-form priors, and a short run of eq. (10) on exact ring
    samples moves the EBM prior toward the ring (it closes part of N(0, I)'s gap)."""
    script = SCRIPT.with_name("prior_learning.py")
    spec = importlib.util.spec_from_file_location("bench_prior_learning", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from latentebm.mixture_prior import GaussianMixturePrior
    from latentebm.prior import GaussianPrior

    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * 1.5
    closed_form = float((0.5 * z.double().pow(2).sum(1)).mean()) + float(
        torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    )
    assert bench.nll(GaussianPrior(2), z) == pytest.approx(closed_form, abs=1e-4)
    ring = GaussianMixturePrior.ring(8, 2.0, 0.25)
    assert bench.nll(ring, z) == pytest.approx(float(-ring.log_prob(z).double().mean()), abs=1e-3)

    out = tmp_path / "prior.json"
    argv = ["--steps", "20,60", "--lr", "1e-3", "--k0", "20", "--json", str(out)]
    assert bench.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["nll_true"] < record["nll_gaussian"]
    assert [r["step"] for r in record["rows"]] == [20, 60]
    assert record["rows"][-1]["share_closed"] > 0.05


def test_ais_vs_quadrature_rejects_an_unknown_variant_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = SCRIPT.with_name("ais_vs_quadrature.py")
    spec = importlib.util.spec_from_file_location("bench_ais_vs_quadrature", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--variants", "8 mode searches (default),no such thing"])
    assert exit_info.value.code == 2
    assert "--variants: unknown 'no such thing'" in capsys.readouterr().err


def test_cores_benchmark_end_to_end(tmp_path: Path) -> None:
    """``benchmarks/cores.py`` on a tiny image model: one process and two (``--processes``)."""
    out = tmp_path / "cores.json"
    args = [
        "--modality", "images", "--cores", "2", "--steps", "3", "--log-every", "1",
        "--rounds", "1", "--settings", "1x1,Nx1half", "--json", str(out),
        "--override", "model.generator.ngf=4", "--override", "model.prior.hidden_dims=[8,8]",
        "--override", "model.posterior_chain.n_steps=1",
        "--override", "model.prior_chain.n_steps=1",
    ]  # fmt: skip
    done = run_benchmark("cores.py", *args, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert set(summary) == {"1x1", "Nx1half"}
    assert summary["1x1"]["speedup_vs_1x1"] == pytest.approx(1.0)
    for row in summary.values():  # an image is an example: the two rates agree
        assert row["unit"] == "images" and row["examples_per_s_median"] > 0
        assert row["units_per_s_median"] == pytest.approx(row["examples_per_s_median"], rel=0.05)
    assert "Nx1half" in done.stdout


def test_cores_throughput_weights_intervals_by_their_duration(tmp_path: Path) -> None:
    """Two intervals after the warm-up one: 5 steps in 10 s at 1000 tokens/s and 1 step in 10 s
    at 10 tokens/s give 505 tokens/s and 20 s / 6 steps, not the mean of the two rates."""
    script = SCRIPT.with_name("cores.py")
    spec = importlib.util.spec_from_file_location("bench_cores", script)
    assert spec is not None and spec.loader is not None
    cores = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cores)
    rows = [
        {"step": 5, "tokens_per_s": 1.0, "steps_per_s": 0.01},  # warm-up: left out
        {"step": 10, "tokens_per_s": 1000.0, "steps_per_s": 0.5, "recon_nll": 100.0},
        {"event": "checkpoint", "step": 10},
        {"step": 11, "tokens_per_s": 10.0, "steps_per_s": 0.1},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = cores.throughput(tmp_path, batch=4, procs=2)
    assert got["unit"] == "tokens"
    assert got["units_per_s"] == pytest.approx(505.0)
    assert got["seconds_per_update"] == pytest.approx(20.0 / 6)
    assert got["examples_per_s"] == pytest.approx(6 * 4 * 2 / 20.0)
    (tmp_path / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(SystemExit, match="no logged interval"):
        cores.throughput(tmp_path, batch=4, procs=2)


def test_cores_benchmark_rejects_too_few_steps() -> None:
    done = run_benchmark("cores.py", "--steps", "2", "--log-every", "3")
    assert done.returncode == 2 and "--steps must exceed --log-every" in done.stderr
