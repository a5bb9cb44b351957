"""Tests of ``latentebm evaluate`` (NLL / perplexity) on a tiny run trained in-process."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch

from latentebm.cli import main
from latentebm.evaluate import (
    KNOWN_METRICS,
    evaluate,
    length_sorted_batches,
    spread_batches,
    write_metrics,
)
from latentebm.metrics.likelihood_eval import LikelihoodEvalSettings
from latentebm.metrics.lm import (
    LMConfig,
    build_language_model,
    save_language_model,
    train_language_model,
)
from latentebm.metrics.marginal import AISSettings, LogPartitionSettings
from latentebm.metrics.text_eval import TextEvalSettings
from tests.conftest import train_tiny_run

QUICK = LikelihoodEvalSettings(
    ais=AISSettings(n_chains=2, n_temperatures=3, laplace_starts=1, laplace_steps=5),
    log_z=LogPartitionSettings(n_chains=16, n_temperatures=10),
)
FAST = {"likelihood": QUICK, "batch_size": 32, "progress": False}


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
    entry = data["valid"]["marginal_nll"]  # the text task's default metric
    for key in (
        "nll_per_example",
        "std_error",
        "total_nll",
        "total_tokens",
        "nll_per_token",
        "ppl",
        "n_examples",
        "log_z",
        "mean_ess",
        "mean_acceptance",
        "split",
        "examples",
        "checkpoint",
        "step",
        "seconds",
        "cpu_seconds",
        "seed",
        "settings",
    ):
        assert key in entry, key
    settings = entry["settings"]
    assert settings["estimator"] == "ais" and settings["init"] == "pilot"
    assert settings["n_chains"] == 2 and settings["n_temperatures"] == 3
    assert entry["log_z"]["n_chains"] == 16 and entry["log_z"]["std_error"] >= 0
    assert 1.0 <= entry["mean_ess"] <= 2.0 and 0.0 <= entry["mean_acceptance"] <= 1.0
    assert entry["step"] == 3 and entry["checkpoint"].endswith(".pt")
    assert entry["split"] == "valid" and entry["complete"] is True
    assert entry["n_examples"] == entry["examples"] == 40
    assert entry["nll_per_example"] > 0 and entry["std_error"] > 0
    assert entry["ppl"] == pytest.approx(math.exp(entry["total_nll"] / entry["total_tokens"]))
    assert entry["nll_per_example"] == pytest.approx(entry["total_nll"] / entry["n_examples"])
    # all sentences of the split, each exactly once
    batches = length_sorted_batches(load_task(tiny_run), "valid", 32)
    assert sum(b.shape[0] for b in batches) == 40


def test_nll_is_an_alias_and_importance_sampling_is_the_fast_option(tiny_run: Path) -> None:
    fast = LikelihoodEvalSettings(
        estimator="is", n_importance=4, is_chains=2, is_chain_steps=2, log_z=QUICK.log_z
    )
    result = evaluate(tiny_run, "valid", "nll", likelihood=fast, progress=False, write=False)
    entry = result["metrics"]["marginal_nll"]
    assert set(result["metrics"]) == {"marginal_nll"}
    assert entry["settings"]["estimator"] == "is" and entry["n_importance"] == 4
    assert entry["settings"]["chain_steps"] == 2 and 1.0 <= entry["mean_ess"] <= 4.0
    with pytest.raises(ValueError, match="is_chain_steps must be >= 1"):
        LikelihoodEvalSettings(estimator="is", is_chain_steps=0)


def test_recon_nll_and_latent_usage(tiny_run: Path) -> None:
    result = evaluate(
        tiny_run, "valid", "recon_nll,latent_usage", **FAST, write=False, max_batches=1
    )
    recon, usage = result["metrics"]["recon_nll"], result["metrics"]["latent_usage"]
    assert recon["chain_steps"] == 3  # the tiny recipe's K1
    assert recon["recon_gain"] == pytest.approx(recon["prior_z_nll"] - recon["recon_nll"])
    assert recon["recon_ppl"] == pytest.approx(math.exp(recon["recon_nll_per_token"]))
    assert 0 <= usage["active_units"] <= 4 and len(usage["mode_variances"]) == 4
    assert usage["mutual_information"] <= usage["mutual_information_max"] + 1e-9
    assert usage["n_examples"] == 32


def load_task(run: Path):  # noqa: ANN201
    from latentebm.pretrained import load

    return load(run).task


def test_second_evaluation_keeps_history(tmp_path: Path, tiny_run: Path) -> None:
    out = tmp_path / "m.json"
    write_metrics(out, "other", {"m": {"x": 1}})  # merged only into a file evaluate wrote
    first = evaluate(tiny_run, "valid", **FAST, seed=1, output=out)["metrics"]["marginal_nll"]
    second = evaluate(tiny_run, "valid", **FAST, seed=2, output=out, max_batches=1)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["other"] == {"m": {"x": 1}}
    entry = data["valid"]["marginal_nll"]
    assert entry["seed"] == 2 and entry["complete"] is False
    assert entry["total_nll"] == pytest.approx(second["metrics"]["marginal_nll"]["total_nll"])
    assert len(entry["history"]) == 1
    assert entry["history"][0]["total_nll"] == pytest.approx(first["total_nll"])
    # a third keeps both earlier results, oldest first, without nesting
    write_metrics(out, "valid", {"marginal_nll": {"total_nll": 1.0}})
    data = json.loads(out.read_text(encoding="utf-8"))
    history = data["valid"]["marginal_nll"]["history"]
    assert [h["seed"] for h in history] == [1, 2]
    assert all("history" not in h for h in history)
    assert not list(tmp_path.glob(".m.json.*"))  # no temporary file left


def test_same_seed_same_result(tiny_run: Path) -> None:
    a = evaluate(tiny_run, "valid", **FAST, seed=3, write=False)["metrics"]["marginal_nll"]
    b = evaluate(tiny_run, "valid", **FAST, seed=3, write=False)["metrics"]["marginal_nll"]
    assert a["total_nll"] == b["total_nll"]


def test_unknown_metric(tiny_run: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric.*perplexity") as error:
        evaluate(tiny_run, "valid", ["nll", "perplexity"], **FAST)
    for name in KNOWN_METRICS:
        assert name in str(error.value)


TINY_LM = LMConfig(embedding_dim=8, hidden_dim=16, dropout=0.0, epochs=2, batch_size=16)
SCORER = LMConfig(embedding_dim=16, hidden_dim=32, dropout=0.0, epochs=20, lr=1e-2, batch_size=16)


def tiny_text_settings(**overrides: object) -> TextEvalSettings:
    values: dict[str, object] = {
        "n_samples": 40,
        "rppl_samples": 40,
        "self_bleu_samples": 20,
        "reconstruction_sentences": 12,
        "lm": TINY_LM,
    }
    values.update(overrides)
    return TextEvalSettings(**values)  # type: ignore[arg-type]


def test_fppl_rppl_bleu_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    lm_path = tmp_path / "lm_real.pt"
    settings = tiny_text_settings(lm_path=str(lm_path))
    result = evaluate(
        tiny_run, "valid", "fppl,rppl,bleu", text=settings, output=out, progress=False, seed=3
    )
    fppl, rppl, bleu = (result["metrics"][name] for name in ("fppl", "rppl", "bleu"))
    assert lm_path.exists() and not fppl["lm"]["loaded"]
    assert fppl["lm"]["info"]["epochs"] == 2 and fppl["lm"]["config"]["hidden_dim"] == 16
    assert fppl["samples"]["sentences"] == 40 and 1 < fppl["fppl"] < 1e4
    assert 1 < fppl["real_ppl"] < 1e4 and fppl["real"]["sentences"] == 40  # the valid split
    assert rppl["rppl_samples"] == 40 and rppl["lm"]["info"]["train_sentences"] == 40
    assert 1 < rppl["rppl"] < 1e6
    assert 0 <= bleu["reconstruction_bleu"] <= 100 and bleu["reconstruction_sentences"] == 12
    assert bleu["self_bleu_samples"] == 20 and 0 <= bleu["self_bleu"] <= 100
    assert 0 < bleu["distinct_1"] <= 1 and bleu["real_avg_length"] > 2
    for entry in (fppl, rppl, bleu):
        assert entry["generation"]["decode"] == "greedy" and entry["step"] == 3
        assert len(entry["examples"]) == 10
    written = json.loads(out.read_text(encoding="utf-8"))["valid"]
    assert set(written) == {"fppl", "rppl", "bleu"}
    # the saved scorer is reused: the same samples (same seed, same number) -> the same FPPL
    again = evaluate(tiny_run, "valid", "fppl", text=settings, output=out, progress=False, seed=3)[
        "metrics"
    ]["fppl"]
    assert again["lm"]["loaded"] and again["fppl"] == pytest.approx(fppl["fppl"])
    assert again["lm"]["info"]["seconds"] == fppl["lm"]["info"]["seconds"]


def test_fppl_ranks_real_sentences_above_shuffled_ones(tiny_run: Path) -> None:
    from latentebm.metrics.text_eval import _batcher, forward_perplexity
    from latentebm.pretrained import load

    task = load(tiny_run).task
    lm = build_language_model(SCORER, **task.generator_kwargs())
    train_language_model(lm, _batcher(task, task.sentences("train")), SCORER)
    real = task.sentences("valid")
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(s.split(), len(s.split()))) for s in real]
    assert (
        forward_perplexity(lm, task, real, "valid")["fppl"]
        < 0.7 * (forward_perplexity(lm, task, shuffled, "valid")["fppl"])
    )


def test_rppl_rewards_coverage(tiny_run: Path) -> None:
    from latentebm.metrics.text_eval import reverse_perplexity
    from latentebm.pretrained import load

    task = load(tiny_run).task
    train = task.sentences("train")
    covering = reverse_perplexity(task, train, "valid", SCORER)["rppl"]
    one_sentence = reverse_perplexity(task, [train[0]] * len(train), "valid", SCORER)["rppl"]
    assert covering < 0.5 * one_sentence


def test_a_scorer_from_another_tokenizer_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    lm_path = tmp_path / "other_lm.pt"
    model = build_language_model(TINY_LM, vocab_size=7, pad_id=0, bos_id=1, eos_id=2)
    save_language_model(lm_path, model, TINY_LM, {"kind": "word", "itos": ["x"]}, {})
    with pytest.raises(ValueError, match="other_lm.pt: .*different tokenizer"):
        evaluate(
            tiny_run,
            "valid",
            "fppl",
            text=tiny_text_settings(lm_path=str(lm_path)),
            write=False,
            progress=False,
        )


def test_cli(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    argv = ["evaluate", str(tiny_run), "--split", "valid", "--chains", "2", "--temperatures", "3"]
    argv += ["--laplace-starts", "1", "--log-z-chains", "16", "--log-z-temperatures", "10"]
    argv += ["--max-batches", "1", "-o", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for label in (
        "marginal NLL (nats/example)",
        "PPL",
        "log Z",
        "the path a pilot chose",
        str(out),
    ):
        assert label in printed
    entry = json.loads(out.read_text(encoding="utf-8"))["valid"]["marginal_nll"]
    assert entry["settings"]["n_temperatures"] == 3
    fast = ["--estimator", "is", "--importance-samples", "4", "--chain-steps", "2"]
    assert main([*argv, *fast, "--metrics", "nll"]) == 0
    assert "importance sampling (fast, looser)" in capsys.readouterr().out
    entry = json.loads(out.read_text(encoding="utf-8"))["valid"]["marginal_nll"]
    assert entry["n_importance"] == 4 and entry["settings"]["chain_steps"] == 2
    assert len(entry["history"]) == 1
    with pytest.raises(SystemExit) as refused:  # refused while parsing, naming the option
        main([*argv, "--estimator", "is", "--chain-steps", "0"])
    assert refused.value.code == 2
    assert "argument --chain-steps: must be >= 1, got 0" in capsys.readouterr().err
    capsys.readouterr()
    text = ["--samples", "20", "--rppl-samples", "30", "--self-bleu-samples", "10"]
    text += ["--recon-sentences", "5", "--lm", str(tmp_path / "lm.pt"), "--decode", "sample"]
    text += ["--lm-set", "hidden_dim=12", "--lm-set", "epochs=1", "--lm-set", "embedding_dim=8"]
    argv = ["evaluate", str(tiny_run), "--split", "valid", "--metrics", "fppl,rppl,bleu"]
    assert main([*argv, *text, "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in ("FPPL", "RPPL", "real-data PPL", "reconstruction BLEU", "self-BLEU"):
        assert label in printed
    entry = json.loads(out.read_text(encoding="utf-8"))["valid"]["rppl"]
    assert entry["lm"]["config"]["hidden_dim"] == 12 and entry["generation"]["decode"] == "sample"
    assert main([*argv, "--lm-set", "hidden=3", "-o", str(out), "--no-progress"]) == 2
    assert "unknown language-model setting(s) hidden" in capsys.readouterr().err


class _CopyModel:
    """A "model" whose posterior z is the token ids themselves and whose decoder copies them
    back: a perfect reconstruction, so BLEU is 100 exactly when the order is kept."""

    class _Chain:
        def __init__(self, z: torch.Tensor) -> None:
            self.z = z

    class _Decoder:
        def sample(self, z: torch.Tensor, **options: object) -> torch.Tensor:
            return z.round().long()[:, 1:]  # drop <bos>

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.generator = self._Decoder()

    def sample_posterior(self, x: torch.Tensor, **options: object) -> _CopyModel._Chain:
        return self._Chain(x.float())


def test_reconstructions_keep_the_split_order(tiny_run: Path) -> None:
    from latentebm.metrics.text_eval import reconstruction_bleu
    from latentebm.pretrained import load

    task = load(tiny_run).task
    result = reconstruction_bleu(
        _CopyModel(),
        task,
        "valid",
        tiny_text_settings(reconstruction_sentences=None),
        generator=torch.Generator().manual_seed(0),
        batch_size=7,  # several length-sorted chunks
    )
    assert result["reconstruction_sentences"] == 40
    assert result["reconstruction_bleu"] == pytest.approx(100.0)
    first = result["reconstruction_examples"][0]
    assert first["sentence"] == first["reconstruction"] == task.sentences("valid")[0]


def test_spread_batches_cover_the_lengths() -> None:
    items = list(range(10))
    assert spread_batches(items, 3) == [0, 4, 9]  # ends included, evenly spaced
    assert spread_batches(items, 1) == [5]
    assert spread_batches(items, 10) == items and spread_batches(items, 25) == items
    assert len(set(spread_batches(items, 9))) == 9  # no batch twice


def test_spread_subset_has_longer_sentences_than_the_first_batches(
    tmp_path: Path, tiny_run: Path
) -> None:
    small = {**FAST, "batch_size": 8, "max_batches": 2, "write": False}
    first = evaluate(tiny_run, "valid", **small)
    spread = evaluate(tiny_run, "valid", **small, spread=True)
    first_nll, spread_nll = first["metrics"]["marginal_nll"], spread["metrics"]["marginal_nll"]
    assert first_nll["examples"] == spread_nll["examples"] == 16
    assert spread_nll["spread"] is True and first_nll["spread"] is False
    assert spread_nll["total_tokens"] > first_nll["total_tokens"]  # the last batch: the longest


def test_per_example_values_allow_paired_comparisons(tiny_run: Path) -> None:
    paired = dataclasses.replace(QUICK, per_example=True)
    result = evaluate(
        tiny_run, "valid", "marginal_nll", likelihood=paired, progress=False, write=False
    )
    entry = result["metrics"]["marginal_nll"]
    values, errors = entry["log_likelihoods"], entry["std_errors"]
    assert len(values) == len(errors) == entry["n_examples"] == 40
    assert -sum(values) / len(values) == pytest.approx(entry["nll_per_example"])
    assert all(e > 0 for e in errors)
    plain = evaluate(
        tiny_run, "valid", "marginal_nll", likelihood=QUICK, progress=False, write=False
    )["metrics"]["marginal_nll"]
    assert "log_likelihoods" not in plain
    with pytest.raises(ValueError, match="per_example needs the AIS estimator"):
        LikelihoodEvalSettings(estimator="is", per_example=True)


def test_latent_usage_examples_are_spread_over_the_lengths() -> None:
    from latentebm.metrics.likelihood_eval import spread_examples

    batches = [torch.arange(start, start + 4).unsqueeze(1) for start in range(0, 20, 4)]
    picked = spread_examples(batches, 5)
    assert torch.cat(picked).squeeze(1).tolist() == [0, 5, 10, 14, 19]  # first to last
    assert len(picked) == 5 and all(b.shape[1] == 1 for b in picked)
    assert spread_examples(batches, 50) == batches


def test_a_task_without_a_test_split_is_evaluated_on_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The quick start has no test split: `latentebm evaluate RUN` uses valid and says so; an
    explicit --split that does not exist is one line naming it."""
    from latentebm.cli import main as cli_main
    from tests.conftest import train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    args = ["evaluate", str(run), "--metrics", "recon_nll", "--max-batches", "1", "--no-progress"]
    assert cli_main(args) == 0
    assert "no test split; evaluating valid" in capsys.readouterr().err
    assert "valid" in json.loads((run / "metrics.json").read_text())
    assert cli_main([*args, "--split", "test"]) == 2
    assert "--split test: not a split of this task (it has: train, valid)" in (
        capsys.readouterr().err
    )


def test_max_batches_says_which_metrics_it_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentebm.cli import main as cli_main
    from tests.conftest import train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    args = ["evaluate", str(run), "--split", "valid", "--max-batches", "1", "--no-progress"]
    assert cli_main([*args, "--metrics", "recon_nll"]) == 0
    assert "--max-batches limits" not in capsys.readouterr().err
    assert cli_main([*args, "--metrics", "recon_nll,bleu", "--recon-sentences", "2"]) == 0
    assert "warning: --max-batches limits" in capsys.readouterr().err
