"""End-to-end tests of the ``latentebm`` command on a tiny synthetic corpus (tests/conftest.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import latentebm
from latentebm.checkpoint import checkpoint_path, list_checkpoints
from latentebm.cli import main
from latentebm.config import load_recipe, recipe_to_dict
from tests.conftest import (
    cli_env,
    latentebm_command,
    sigint_as_usual,
    tiny_recipe_dict,
    tiny_sentences,
)

STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def one_error_line(stderr: str) -> str:
    """``stderr`` must be exactly one line starting with ``latentebm: error:`` besides the line a
    training command starts with (``latentebm: training RECIPE: loading ...``, said before the
    data is read); returns it."""
    lines = [line for line in stderr.splitlines() if not line.startswith("latentebm: training ")]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("latentebm: error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One CLI training run of 6 steps, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("cli_run")
    corpus = root / "tiny.txt"
    corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus)), encoding="utf-8")
    runs_root = root / "runs"
    overrides = ["trainer.max_steps=6", f"trainer.runs_root={runs_root}"]
    done = subprocess.run(
        [*latentebm_command(), "train", str(recipe), *overrides],
        cwd=root,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return {
        "recipe": recipe,
        "overrides": overrides,
        "runs_root": runs_root,
        "corpus": corpus,
        "process": done,
    }


def run_dir_of(trained: dict[str, object]) -> Path:
    folder = trained["runs_root"] / "tiny"  # type: ignore[operator]
    runs = sorted(p for p in folder.iterdir() if not p.is_symlink())
    assert len(runs) == 1, runs
    assert (folder / "latest").resolve() == runs[0].resolve()  # the latest link
    return runs[0]


# ----------------------------------------------------------------------------- train


def test_train_end_to_end(trained: dict[str, object]) -> None:
    done = trained["process"]
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 0, done.stderr
    run = run_dir_of(trained)
    assert run.parent == trained["runs_root"] / "tiny"  # type: ignore[operator]
    assert STAMP.match(run.name), run.name
    assert f"run dir {run}" in done.stderr

    # config.yaml is the resolved recipe, overrides included
    saved = load_recipe(run / "config.yaml")
    expected = load_recipe(trained["recipe"], trained["overrides"])  # type: ignore[arg-type]
    assert recipe_to_dict(saved) == recipe_to_dict(expected)
    assert saved.trainer.max_steps == 6

    # metrics: one training row per step (log_every 1), validation rows at 3 and 6
    rows = read_metrics(run)
    train_rows = [r for r in rows if "recon_nll" in r]
    valid_rows = [r for r in rows if "valid_recon_nll" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in valid_rows] == [3, 6]
    others = [r for r in rows if r not in train_rows and r not in valid_rows]
    assert all("event" in r for r in others), others  # nothing else but event rows
    for row in train_rows:
        for key in ("recon_nll", "energy_pos", "energy_neg", "energy_diff"):
            assert isinstance(row[key], float), (key, row)
        assert row["energy_diff"] == pytest.approx(row["energy_pos"] - row["energy_neg"], abs=1e-9)
        assert row["recon_nll"] > 0
        assert row["prior_grad_norm"] > 0
        assert row["posterior_grad_norm"] > 0
    for row in valid_rows:
        assert row["valid_recon_nll"] > 0
        assert row["valid_recon_ppl"] > 1

    # checkpoints every 3 steps
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003.pt", "step_00000006.pt"]

    # the samples printed on stdout (and nothing else) are those written to samples/
    written = (run / "samples" / "step_00000006.txt").read_text(encoding="utf-8").splitlines()
    assert len(written) == 2
    assert done.stdout.splitlines() == written


def test_generate_prints_n_lines(trained: dict[str, object]) -> None:
    run = run_dir_of(trained)
    args = ["generate", str(run), "-n", "5", "--decode", "sample", "--seed", "1"]
    done = subprocess.run(
        [*latentebm_command(), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 5
    words = {w for s in tiny_sentences() for w in s.split()}
    assert all(set(line.split()) <= words | {"<unk>"} for line in lines)


def test_generate_output_file_is_not_overwritten(
    trained: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_dir_of(trained)
    out = tmp_path / "samples.txt"
    args = ["generate", str(run), "-n", "5", "--seed", "0", "-o", str(out)]
    assert main(args) == 0
    first = out.read_bytes()
    assert len(first.decode().splitlines()) == 5
    assert capsys.readouterr().out == ""  # with -o nothing goes to stdout

    out.write_text("keep me\n", encoding="utf-8")
    assert main(args) != 0
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--force" in line
    assert out.read_text(encoding="utf-8") == "keep me\n"

    assert main([*args, "--force"]) == 0
    assert out.read_bytes() == first  # same seed, same samples


def test_ls_lists_builtin_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"ptb", "quickstart"} <= set(names)


def test_help_ends_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.strip() == "examples:")
    examples = lines[start + 1 :]
    assert len(examples) >= 3
    assert all(line.startswith("  ") and "latentebm" in line for line in examples), examples
    assert any("latentebm train" in line for line in examples)
    assert any("latentebm generate" in line for line in examples)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_stpes=3", "command line: trainer.max_stpes=3: unknown key (known: "),
        ("trainer.max_steps=abc", "command line: trainer.max_steps=abc: expected int, got str"),
    ],
    ids=["unknown-key", "wrong-type"],
)
def test_recipe_error_is_one_line_from_the_command(
    tiny_recipe, run_cli, tmp_path: Path, override: str, expected: str
) -> None:
    done = run_cli("train", tiny_recipe(), override, f"trainer.runs_root={tmp_path}")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith(f"latentebm: error: {expected}"), line
    if "stpes" in override:
        assert line.endswith("did you mean 'max_steps'?")
    assert done.stdout == ""
    assert not (tmp_path / "tiny").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_steps=abc", r"trainer\.max_steps.*expected int"),
        ("trainer.max_stpes=3", r"trainer\.max_stpes.*unknown key.*max_steps"),
        ("model.prior.hidden_dims=[8, -1]", r"model\.prior\.hidden_dims.*> 0"),
        ("trainer.nonfinite=ignore", r"trainer\.nonfinite.*'stop', 'skip'"),
    ],
    ids=["wrong-type", "unknown-key", "bad-value", "bad-choice"],
)
def test_bad_override_is_one_error_line(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, expected: str
) -> None:
    code = main(["train", str(tiny_recipe()), override, f"trainer.runs_root={tmp_path}"])
    assert code != 0
    captured = capsys.readouterr()
    assert re.search(expected, one_error_line(captured.err)), captured.err
    assert captured.out == ""
    assert not (tmp_path / "tiny").exists()


def test_missing_data_file_names_file_and_env(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    recipe = tiny_recipe(task={"train": "corpora/missing.txt"})
    args = ["train", str(recipe), f"trainer.runs_root={tmp_path / 'runs'}"]

    monkeypatch.setenv("LATENTEBM_DATA", str(tmp_path / "data_root"))
    assert main(args) != 0
    line = one_error_line(capsys.readouterr().err)
    assert "corpora/missing.txt" in line and "LATENTEBM_DATA" in line
    assert str(tmp_path / "data_root") in line

    monkeypatch.delenv("LATENTEBM_DATA")
    assert main(args) != 0
    line = one_error_line(capsys.readouterr().err)
    assert "corpora/missing.txt" in line and "LATENTEBM_DATA" in line
    assert not (tmp_path / "runs").exists()  # nothing created for a run that never started


def test_run_dir_is_never_overwritten(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", str(tiny_recipe()), "trainer.max_steps=2", f"trainer.run_dir={run}"]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert main(args) != 0
    line = one_error_line(capsys.readouterr().err)
    assert str(run) in line and "resume=auto" in line
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_resume_with_changed_model_names_the_key(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(tiny_recipe())
    run = tmp_path / "run"
    assert main(["train", recipe, "trainer.max_steps=2", f"trainer.run_dir={run}"]) == 0
    files = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()

    changed = ["model.z_dim=5", "trainer.resume=auto", "trainer.max_steps=4"]
    assert main(["train", recipe, f"trainer.run_dir={run}", *changed]) != 0
    line = one_error_line(capsys.readouterr().err)
    assert "model.z_dim" in line
    assert "5" in line and "4" in line
    assert sorted(p.name for p in run.rglob("*")) == files  # nothing written


# ----------------------------------------------------------------------------- signals


def test_sigint_saves_checkpoint_and_resume_continues(tiny_recipe, run_cli, tmp_path: Path) -> None:
    recipe = tiny_recipe(trainer={"checkpoint_every": 10_000, "valid_every": 10_000})
    run = tmp_path / "run"
    command = [*latentebm_command(), "train", str(recipe)]
    command += ["trainer.max_steps=1000000", f"trainer.run_dir={run}"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / "metrics.jsonl").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no metrics.jsonl after 60 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signal.SIGINT == 130, stderr
    found = re.search(r"latentebm: SIGINT at step (\d+): checkpoint saved to (\S+);", stderr)
    assert found, stderr
    step = int(found.group(1))
    assert "resume=auto" in stderr.splitlines()[-1]
    assert Path(found.group(2)) == checkpoint_path(run, step)
    # checkpoint_every is 10000: the only checkpoint is the one the signal asked for
    assert list_checkpoints(run) == [checkpoint_path(run, step)]
    state = torch.load(checkpoint_path(run, step), weights_only=True)
    assert state["step"] == step
    assert max(r["step"] for r in read_metrics(run)) == step
    assert stdout == ""  # interrupted: no samples

    done = run_cli(
        "train",
        recipe,
        f"trainer.run_dir={run}",
        "trainer.resume=auto",
        f"trainer.max_steps={step + 2}",
    )
    assert done.returncode == 0, done.stderr
    assert f"resuming from {checkpoint_path(run, step)} at step {step}" in done.stderr
    steps = [r["step"] for r in read_metrics(run) if "recon_nll" in r]
    assert steps == list(range(1, step + 3))
    assert latest_step(run) == step + 2


def latest_step(run: Path) -> int:
    return int(torch.load(list_checkpoints(run)[-1], weights_only=True)["step"])


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_torchrun_two_processes(tiny_recipe, tmp_path: Path) -> None:
    runs_root = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "latentebm.cli",
        "train",
        str(tiny_recipe()),
        "trainer.max_steps=4",
        "trainer.valid_every=2",
        "trainer.checkpoint_every=2",
        f"trainer.runs_root={runs_root}",
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    runs = [p for p in (runs_root / "tiny").iterdir() if not p.is_symlink()]
    assert len(runs) == 1, runs  # rank 0 chose the run dir, rank 1 used it
    run = runs[0]
    assert done.stderr.count("new run; run dir") == 1
    assert "2 process(es)" in done.stderr

    rows = read_metrics(run)
    assert [r["step"] for r in rows if "recon_nll" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "valid_recon_nll" in r] == [2, 4]
    assert len(done.stdout.splitlines()) == 2  # samples printed once

    state = torch.load(checkpoint_path(run, 4), weights_only=True)
    assert state["world_size"] == 2
    assert len(state["rng"]) == 2  # one random state per rank
    # rank r reads batches r, r+2, ...: 4 steps used 8 batches of the first epoch
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 4)

    samples = latentebm.load(run).generate(3, seed=0)
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)


def test_cat_prints_the_resolved_recipe(
    tiny_recipe, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe()
    assert main(["cat", str(recipe), "trainer.max_steps=7", "model.posterior_chain.n_steps=2"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = recipe_to_dict(
        load_recipe(recipe, ["trainer.max_steps=7", "model.posterior_chain.n_steps=2"])
    )
    assert printed == expected
    assert printed["trainer"]["max_steps"] == 7


def test_keys_documents_every_schema_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = {line.split()[0]: line for line in lines if line.strip()}
    for key in (
        "model.posterior_chain.step_size",
        "optim.generator.grad_clip",
        "trainer.resume",
        "task._component_",
        "model.generator._component_",
    ):
        assert key in keys
    assert "0.1" in keys["model.posterior_chain.step_size"]  # Table 5's s1 is the default
    assert "a^2/2" in keys["model.posterior_chain.step_size"]
    # the toolkit's components are named, for `latentebm keys CLASS`
    assert "latentebm.generators.conv.ConvGenerator" in keys["model.generator"]


def test_keys_of_a_recipe_list_its_components_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "ptb"]) == 0
    keys = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "latentebm.generators.lstm.LSTMDecoder" in keys["model.generator._component_"]
    assert "Table 7: 512 for PTB" in keys["model.generator.hidden_dim"]  # attribute docstring
    assert "512" in keys["model.generator.hidden_dim"].split()[2]  # the class's default
    assert "task.sentence_split" in keys and "task.max_vocab" in keys
    assert not any(key.startswith("model.generator.ngf") for key in keys)
    assert main(["keys", "latentebm.generators.conv.ConvGenerator"]) == 0
    conv = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "ngf" in conv and "architecture" in conv and "model.generator.ngf" not in conv
    assert main(["keys", "latentebm.generators.nothing.Here"]) != 0
    assert "cannot import 'latentebm.generators.nothing.Here'" in capsys.readouterr().err


def test_every_builtin_component_key_is_documented() -> None:
    """`latentebm keys` prints each key's meaning: a component key without a docstring (or
    ``checked_field`` doc) is a documentation bug."""
    from latentebm.cli import BUILTIN_COMPONENTS
    from latentebm.config import ComponentConfig, describe_keys

    for classes in BUILTIN_COMPONENTS.values():
        for target in classes:
            cls = ComponentConfig(component=target, args=None).resolve()
            rows = describe_keys(cls.Config)
            assert rows, target
            undocumented = [key for key, _, _, doc in rows if not doc]
            assert undocumented == [], f"{target}: {undocumented}"


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    from latentebm import __version__
    from tests.conftest import cli_env

    done = subprocess.run(
        [sys.executable, "-m", "latentebm", "--version"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"latentebm {__version__} (torch ")


@pytest.mark.parametrize(
    "command", [["--help"], ["ls"], ["--version"], ["train", "--help"], ["keys"]]
)
def test_quick_commands_do_not_import_torch(command: list[str], tmp_path: Path) -> None:
    """``latentebm --help``, ``ls`` and ``--version`` start in a fraction of a second because they
    import no torch (the start-up time itself is measured by benchmarks/cli_startup.py)."""
    from tests.conftest import cli_env

    code = (
        "import sys\n"
        "from latentebm.cli import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(code or 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *command],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr, done.stderr


def test_model_commands_default_to_device_auto() -> None:
    from latentebm.cli import build_parser

    parser = build_parser()
    commands = (
        ["generate", "RUN"],
        ["evaluate", "RUN"],
        ["interpolate", "RUN", "a", "b"],
        ["diagnose", "RUN"],
        ["mnist-features", "net.pt"],
    )
    for command in commands:
        assert parser.parse_args(command).device == "auto", command


def test_decoding_options_of_another_mode_are_named_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentebm.cli import main as cli_main
    from tests.conftest import train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    capsys.readouterr()
    assert cli_main(["generate", str(run), "-n", "2", "--temperature", "0.5", "--top-k", "3"]) == 0
    err = capsys.readouterr().err
    assert "warning: --temperature applies to --decode sample; ignored with --decode greedy" in err
    assert "warning: --top-k applies to --decode sample" in err
    args = ["generate", str(run), "-n", "2", "--decode", "sample", "--temperature", "0.5"]
    assert cli_main(args) == 0
    assert "warning" not in capsys.readouterr().err


def test_generate_top_p_repetition_penalty_max_new_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentebm.cli import main as cli_main
    from tests.conftest import train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    capsys.readouterr()
    out = tmp_path / "samples.txt"
    args = ["generate", str(run), "-n", "6", "--seed", "0", "-o", str(out), "--decode", "sample"]
    new = ["--top-p", "0.9", "--repetition-penalty", "1.3", "--max-new-tokens", "3"]
    assert cli_main([*args, *new]) == 0
    assert "warning" not in capsys.readouterr().err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all(len(line.split()) <= 3 for line in lines)
    # the options reach the decoder: without them the same seed gives other samples
    assert cli_main([*args, "--force"]) == 0
    assert out.read_text(encoding="utf-8").splitlines() != lines
    # --top-p with greedy decoding is named in a warning; the penalty applies to greedy
    greedy = ["generate", str(run), "-n", "2", "--seed", "0", "--max-new-tokens", "2"]
    assert cli_main([*greedy, "--top-p", "0.9", "--repetition-penalty", "1.3"]) == 0
    captured = capsys.readouterr()
    assert "warning: --top-p applies to --decode sample; ignored with --decode greedy" in (
        captured.err
    )
    assert "--repetition-penalty" not in captured.err
    assert all(len(line.split()) <= 2 for line in captured.out.splitlines())
    # beam search refuses the penalty: one error line naming it
    assert cli_main([*greedy, "--decode", "beam", "--repetition-penalty", "1.3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentebm: error: repetition_penalty") and "beam" in err
    assert cli_main([*greedy, "--decode", "beam", "--top-p", "0.5"]) == 0
    assert "warning: --top-p applies to --decode sample; ignored with --decode beam" in (
        capsys.readouterr().err
    )
    # out-of-range values stop the command line parser, naming the option
    for flag, value in (("--top-p", "0"), ("--top-p", "1.5"), ("--repetition-penalty", "0")):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*greedy, flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def test_evaluate_passes_the_ais_start_options_on() -> None:
    from latentebm.cli import build_parser, likelihood_settings

    parser = build_parser()
    args = ["evaluate", "RUN", "--ais-init", "reference", "--temperatures", "500"]
    ais = likelihood_settings(parser.parse_args(args)).ais  # type: ignore[attr-defined]
    assert (ais.init, ais.n_temperatures, ais.defensive) == ("reference", 500, 0.3)
    ais = likelihood_settings(parser.parse_args(["evaluate", "RUN", "--defensive", "0"])).ais  # type: ignore[attr-defined]
    assert (ais.init, ais.defensive) == ("pilot", 0.0)
    for init in ("both", "pilot"):
        given = ["evaluate", "RUN", "--ais-init", init, "--reference-temperatures", "900"]
        ais = likelihood_settings(parser.parse_args(given)).ais  # type: ignore[attr-defined]
        assert (ais.init, ais.n_temperatures, ais.reference_temperatures) == (init, 500, 900)
    alone = ["evaluate", "RUN", "--ais-init", "reference", "--reference-temperatures", "900"]
    with pytest.raises(ValueError, match="--reference-temperatures: the reference path's share"):
        likelihood_settings(parser.parse_args(alone))


def test_a_malformed_rank_variable_is_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from latentebm.cli import main as cli_main

    monkeypatch.setenv("RANK", "not-a-number")
    assert cli_main(["ls"]) == 0


def test_generate_samples_molecules_and_decodes_text_greedily_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``generate`` decodes as ``evaluate`` does: molecules sampled, text greedily."""
    pytest.importorskip("selfies", reason="the QM9 SELFIES model needs selfies (extra 'mol')")
    molecules = latentebm.load("pretrained:qm9-selfies")
    assert main(["generate", "pretrained:qm9-selfies", "-n", "6", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == molecules.generate(6, seed=3, decode="sample")
    assert printed != molecules.generate(6, seed=3, decode="greedy")
    text = latentebm.load("pretrained:quickstart")
    assert main(["generate", "pretrained:quickstart", "-n", "4", "--seed", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == text.generate(4, seed=3, decode="greedy")


@pytest.mark.parametrize(
    ("args", "bar_drawn"),
    [
        (["generate", "pretrained:quickstart", "-n", "1000000"], "sample/s"),
        (
            ["evaluate", "pretrained:quickstart", "--metrics", "marginal_nll", "-o", "m.json"],
            "sent/s",
        ),
    ],
    ids=["generate", "evaluate"],
)
def test_ctrl_c_stops_a_model_command_with_one_line(
    tmp_path: Path, args: list[str], bar_drawn: str
) -> None:
    """SIGINT while a model command works, its progress bar open: exit 130,
    ``latentebm: interrupted`` as the last line (the bar does not draw again below it), no
    traceback, nothing half-written."""
    import os
    import select

    process = subprocess.Popen(
        [*latentebm_command(), *args], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=sigint_as_usual,
    )  # fmt: skip
    assert process.stderr is not None
    seen = b""
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a speed target
        while bar_drawn.encode() not in seen:  # interrupt only once the bar is on stderr
            assert process.poll() is None and time.monotonic() < deadline, seen.decode()
            if select.select([process.stderr], [], [], 1.0)[0]:
                seen += os.read(process.stderr.fileno(), 65536)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    stderr = (seen + rest).decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].endswith("latentebm: interrupted"), stderr
    assert not (tmp_path / "m.json").exists()
