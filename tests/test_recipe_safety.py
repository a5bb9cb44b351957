"""Recipes never import foreign code, never blow up, and every bad value is one line naming the key
(issue 13): which modules a recipe may import, YAML alias bombs, range checks of the component
Configs and the seed, command-line blame, unavailable devices, ``~`` in paths, the anomaly split
on a task without one, and ``cat`` / ``keys`` for short-run recipes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import latentebm
from latentebm.build import resolve_device
from latentebm.cli import main
from latentebm.config import (
    RecipeError,
    describe_value,
    load_recipe,
    recipe_from_dict,
    validate,
)
from latentebm.generators.lstm import LSTMDecoder
from latentebm.inference import SequenceEncoder
from latentebm.shortrun.config import ShortRunRecipe, load_shortrun_recipe
from tests.conftest import cli_env, tiny_recipe_dict, tiny_sentences

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(RecipeError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def python_cli(
    cwd: Path, *args: str | Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m latentebm.cli ARGS`` in ``cwd``: Python puts ``cwd`` first on ``sys.path``, as
    for a user who runs the module from a folder they downloaded."""
    environment = cli_env(**env)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-m", "latentebm.cli", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 2 and exactly one ``latentebm: error:`` line (besides the
    line a training command starts with)."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [
        line
        for line in done.stderr.strip().splitlines()
        if not line.startswith("latentebm: training ")
    ]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("latentebm: error: "), lines[0]
    return lines[0]


def text_recipe(tmp_path: Path, **sections: Any) -> Path:
    """The tiny text recipe of conftest and its corpus as files; returns the recipe."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    path = tmp_path / "tiny.yaml"
    data = tiny_recipe_dict(corpus, **sections)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def recipe_with_task(task_component: str) -> dict[str, Any]:
    """The tiny recipe as a checkpoint stores it, with ``task_component`` as its task."""
    recipe = tiny_recipe_dict("tiny.txt")
    recipe["task"] = {"_component_": task_component}
    return recipe


def fake_checkpoint(path: Path, task_component: str) -> Path:
    """A checkpoint file (``torch.load(weights_only=True)``-safe) whose stored recipe names
    ``task_component`` as its task."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": {}, "recipe": recipe_with_task(task_component), "step": 1}
    torch.save({**state, "task_state": None}, path)
    return path


MARKER_MODULE = """\
from dataclasses import dataclass
from pathlib import Path

Path(__file__).with_name("{marker}").write_text("imported")


class Task:
    @dataclass
    class Config:
        size: int = 1

    def __init__(self, config, **kwargs):
        self.config = config
"""


def marker_module(folder: Path, name: str) -> Path:
    """``folder/name.py``: importing it writes ``folder/name.imported``; it has a ``Task``
    component. Returns the marker file's path."""
    marker = f"{name}.imported"
    (folder / f"{name}.py").write_text(MARKER_MODULE.format(marker=marker), encoding="utf-8")
    return folder / marker


# --------------------------------------------------------------------------------------------
# 1. A recipe that is not a file the user runs imports only trusted modules
# --------------------------------------------------------------------------------------------


def test_checkpoint_component_from_the_working_directory_is_not_imported(tmp_path: Path) -> None:
    marker = marker_module(tmp_path, "evilmod")
    fake_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000001.pt", "evilmod.Task")
    line = one_error_line(python_cli(tmp_path, "generate", "run", "-n", "1"))
    assert not marker.exists(), "the checkpoint's component module was imported"
    assert "run/checkpoints/step_00000001.pt: task._component_:" in line
    assert "'evilmod'" in line and "LATENTEBM_TRUSTED_MODULES=evilmod" in line


def test_load_refuses_before_importing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = marker_module(tmp_path, "evilmod_api")
    checkpoint = fake_checkpoint(tmp_path / "ckpt.pt", "evilmod_api.Task")
    monkeypatch.syspath_prepend(str(tmp_path))  # as the working directory of `python` is
    monkeypatch.delenv("LATENTEBM_TRUSTED_MODULES", raising=False)
    message = error_of(lambda: latentebm.load(str(checkpoint)))
    assert message.startswith(f"{checkpoint}: task._component_: not importing module ")
    assert not marker.exists() and "evilmod_api" not in sys.modules


def test_installed_module_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``this`` prints the Zen of Python when imported: the check must not import it."""
    monkeypatch.delitem(sys.modules, "this", raising=False)
    monkeypatch.delenv("LATENTEBM_TRUSTED_MODULES", raising=False)
    data = recipe_with_task("this.X")
    message = error_of(lambda: recipe_from_dict(data, source="ckpt.pt"))
    assert message.startswith("ckpt.pt: task._component_: not importing module 'this'")
    assert "this" not in sys.modules
    # validate (used for short-run checkpoints) is just as strict
    short = {"family": "shortrun", "task": {"_component_": "this.X"}}
    message = error_of(lambda: validate(ShortRunRecipe, short, source="short.pt"))
    assert message.startswith("short.pt: task._component_: not importing module 'this'")
    assert "this" not in sys.modules


def test_trusted_modules_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = marker_module(tmp_path, "trusted_pkg_q")
    marker_module(tmp_path, "trusted_pkg_qx")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LATENTEBM_TRUSTED_MODULES", " other.pkg , trusted_pkg_q")
    good = recipe_with_task("trusted_pkg_q.Task")
    assert recipe_from_dict(good).task.component == "trusted_pkg_q.Task"
    assert marker.exists()
    # a prefix covers the module and its submodules, not every name that starts like it
    other = recipe_with_task("trusted_pkg_qx.Task")
    assert "not importing module 'trusted_pkg_qx'" in error_of(lambda: recipe_from_dict(other))
    monkeypatch.setenv("LATENTEBM_TRUSTED_MODULES", "bad-name")
    message = error_of(lambda: recipe_from_dict(other))
    assert message.startswith("LATENTEBM_TRUSTED_MODULES: 'bad-name' is not a module name")


def test_a_recipe_the_user_runs_may_use_local_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe file run directly is trusted like a script: its own components still work."""
    marker = marker_module(tmp_path, "my_local_components")
    recipe = text_recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["task"] = {"_component_": "my_local_components.Task"}
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    done = python_cli(tmp_path, "cat", recipe)
    assert done.returncode == 0, done.stderr
    assert "_component_: my_local_components.Task" in done.stdout
    assert marker.exists()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_recipe(recipe).task.component == "my_local_components.Task"


# --------------------------------------------------------------------------------------------
# 2. YAML aliases cannot expand without bound; error messages stay short
# --------------------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    """Nested anchors: level k is 9 aliases of level k-1, so 9**levels strings in all."""
    names = [f"l{i}" for i in range(levels)]
    items = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for previous, name in zip(names, names[1:], strict=False):
        items.append(f"&{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


def test_alias_bomb_recipe_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(f"name: {billion_laughs()}\n", encoding="utf-8")
    line = one_error_line(python_cli(tmp_path, "cat", path, timeout=60))
    assert line.startswith(f"latentebm: error: {path}: invalid YAML: expands to more than")
    override = one_error_line(
        python_cli(tmp_path, "cat", "quickstart", f"name={billion_laughs()}", timeout=60)
    )
    assert override.startswith("latentebm: error: command line: name=[")
    assert "expands to more than" in override


def test_deep_or_recursive_yaml_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 2000 + "]" * 2000 + "\n", encoding="utf-8")
    assert "nested more than" in error_of(lambda: load_recipe(deep))
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("name: &a [*a]\n", encoding="utf-8")
    assert "an alias refers to itself" in error_of(lambda: load_recipe(recursive))
    # ordinary aliases and merge keys still work
    ok = text_recipe(tmp_path)
    data = yaml.safe_load(ok.read_text())
    text = yaml.safe_dump(data).replace("checkpoint_every: 3", "checkpoint_every: &three 3")
    text = text.replace("valid_every: 3", "valid_every: *three")
    ok.write_text(text, encoding="utf-8")
    assert load_recipe(ok).trainer.valid_every == 3


class _Counted:
    calls = 0

    def __repr__(self) -> str:
        _Counted.calls += 1
        return "c"


def test_describe_does_not_walk_the_whole_value() -> None:
    _Counted.calls = 0
    text = describe_value([_Counted()] * 1_000_000)
    assert len(text) <= 70 and text.startswith("list [c, c")
    assert _Counted.calls < 20


# --------------------------------------------------------------------------------------------
# 3. Generator and inference Configs are range-checked when the recipe is read
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.generator.embedding_dim=-3", "must be > 0, got -3"),
        ("model.generator.hidden_dim=0", "must be > 0, got 0"),
        ("model.generator.max_decode_length=0", "must be > 0, got 0"),
        ("model.generator.num_layers=0", "must be > 0, got 0"),
        ("model.generator.dropout=1.5", "must be in [0, 1), got 1.5"),
        ("model.generator.init_range=0", "must be > 0, got 0.0"),
    ],
)
def test_lstm_config_values_are_checked(tmp_path: Path, override: str, expected: str) -> None:
    message = error_of(lambda: load_recipe(text_recipe(tmp_path), [override]))
    assert message == f"command line: {override}: {expected}"


def test_config_values_in_a_file_name_file_and_key(tmp_path: Path) -> None:
    generator = {"_component_": "latentebm.generators.lstm.LSTMDecoder", "hidden_dim": 0}
    path = text_recipe(tmp_path, model={"generator": generator})
    assert error_of(lambda: load_recipe(path)) == (
        f"{path}: model.generator.hidden_dim: must be > 0, got 0"
    )
    inference = {"_component_": "latentebm.inference.SequenceEncoder", "embedding_dim": -1}
    path = text_recipe(tmp_path, model={"inference": inference})
    assert error_of(lambda: load_recipe(path)) == (
        f"{path}: model.inference.embedding_dim: must be > 0, got -1"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.generator.n_head=0", "command line: model.generator.n_head=0: must be > 0"),
        ("model.generator.n_layer=-1", "command line: model.generator.n_layer=-1: must be > 0"),
        ("model.generator.dropout=-0.1", "command line: model.generator.dropout=-0.1: must be"),
        ("model.generator.max_decode_length=0", "command line: model.generator.max_decode_len"),
    ],
)
def test_transformer_config_values_are_checked(override: str, expected: str) -> None:
    message = error_of(lambda: load_recipe(RECIPES / "ptb_transformer.yaml", [override]))
    assert message.startswith(expected)


def test_configs_built_in_python_are_checked() -> None:
    with pytest.raises(ValueError, match="hidden_dim: must be > 0, got 0"):
        LSTMDecoder.Config(hidden_dim=0)
    with pytest.raises(ValueError, match="embedding_dim: must be > 0, got -3"):
        SequenceEncoder.Config(embedding_dim=-3)


# --------------------------------------------------------------------------------------------
# 4. The seed is range-checked
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", str(2**32)])
def test_seed_out_of_range_names_the_key(tmp_path: Path, seed: str) -> None:
    message = error_of(lambda: load_recipe(text_recipe(tmp_path), [f"seed={seed}"]))
    assert message.startswith(f"command line: seed={seed}: must be in 0..4294967295")
    short = RECIPES / "shortrun_mnist.yaml"
    message = error_of(lambda: load_shortrun_recipe(short, [f"seed={seed}"]))
    assert message.startswith(f"command line: seed={seed}: must be in 0..")
    assert load_recipe(text_recipe(tmp_path), [f"seed={2**32 - 1}"]).seed == 2**32 - 1


def test_huge_seed_on_train_is_one_line(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    done = run_cli("train", text_recipe(tmp_path), "seed=99999999999999999999")
    assert "command line: seed=99999999999999999999: must be in" in one_error_line(done)


# --------------------------------------------------------------------------------------------
# 5. An error caused by a command-line override says so
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "overrides", "expected"),
    [
        (None, ["model.z_dim=abc"], "command line: model.z_dim=abc: expected int"),
        (
            None,
            ["anomaly.train_fraction=0.5"],
            "command line: anomaly.train_fraction=0.5: anomaly.digit: missing required key",
        ),
        (
            None,
            ["model.posterior_chain.init=amortized"],
            "command line: model.posterior_chain.init=amortized: amortized needs model.inference",
        ),
        (
            None,
            ["model.prior_chain.init=amortized"],
            "command line: model.prior_chain.init=amortized: amortized is for the posterior",
        ),
        ("mnist", ["model.generator.ngf=0"], "command line: model.generator.ngf=0: must be > 0"),
    ],
)
def test_override_errors_name_the_override(
    tmp_path: Path, recipe: str | None, overrides: list[str], expected: str
) -> None:
    path = text_recipe(tmp_path) if recipe is None else RECIPES / f"{recipe}.yaml"
    assert error_of(lambda: load_recipe(path, overrides)).startswith(expected)


def test_checks_across_keys_name_the_override_too(tmp_path: Path) -> None:
    transformer = RECIPES / "ptb_transformer.yaml"
    message = error_of(lambda: load_recipe(transformer, ["model.generator.n_head=3"]))
    assert message.startswith(f"{transformer}: model.generator: n_embd (256) must be a multiple")
    assert message.endswith("(with the command-line override 'model.generator.n_head=3')")
    conv = "model.generator._component_=latentebm.generators.conv.ConvGenerator"
    message = error_of(lambda: load_recipe(text_recipe(tmp_path), [conv]))
    assert "model.generator.embedding_dim: unknown key" in message
    assert message.endswith(f"(with the command-line override '{conv}')")


def test_override_error_on_the_command_line_is_one_line(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    done = run_cli("train", text_recipe(tmp_path), "anomaly.train_fraction=0.5")
    line = one_error_line(done)
    assert line.startswith("latentebm: error: command line: anomaly.train_fraction=0.5: ")


TRANSFORMER = "model.generator._component_=latentebm.generators.transformer.TransformerDecoder"


def test_a_deletion_swaps_the_generator_of_a_builtin_recipe() -> None:
    qm9 = RECIPES / "qm9.yaml"
    message = error_of(lambda: load_recipe(qm9, [TRANSFORMER, "model.generator.n_embd=64"]))
    assert "model.generator.embedding_dim: unknown key" in message  # the LSTM's keys
    recipe = load_recipe(qm9, ["~model.generator", TRANSFORMER, "model.generator.n_embd=64"])
    assert recipe.model.generator.component.endswith("transformer.TransformerDecoder")
    args = recipe.model.generator.args
    assert (args.n_embd, args.n_head, args.max_decode_length) == (64, 4, 60)  # others: defaults
    assert recipe.task.args.held_out_index == "builtin:valid_idx_qm9.json"  # the rest: the file's
    recipe = load_recipe(qm9, ["~task.held_out_index"])
    assert recipe.task.args.held_out_index is None


def test_a_deletion_on_the_command_line(
    tmp_path: Path,
    run_cli,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = text_recipe(tmp_path)
    assert main(["cat", str(path), "~trainer.max_steps", "~model.generator.hidden_dim"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["trainer"]["max_steps"] == 40000  # tiny recipe: 6; the default
    assert resolved["model"]["generator"]["hidden_dim"] == LSTMDecoder.Config().hidden_dim
    done = run_cli("train", path, "~model.generatr", "trainer.max_steps=1")
    assert one_error_line(done) == (
        "latentebm: error: command line: ~model.generatr: cannot delete 'model.generatr': the "
        "recipe has no key 'generatr' in 'model' (keys there: generator, posterior_chain, prior, "
        "prior_chain, z_dim); did you mean 'generator'?"
    )


# --------------------------------------------------------------------------------------------
# 6. A device this machine does not have is one line naming the key
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_without_mps_names_device(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RecipeError, match=r"^device: 'mps' asked for, but MPS"):
        resolve_device("mps")
    runs = tmp_path / "runs"
    done = run_cli("train", text_recipe(tmp_path), "device=mps", f"trainer.runs_root={runs}")
    assert one_error_line(done).startswith("latentebm: error: device: 'mps' asked for")
    assert not runs.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_device() -> None:
    for name in ("cuda", "cuda:3"):
        with pytest.raises(RecipeError, match=rf"^device: '{name}' asked for, but CUDA"):
            resolve_device(name)


def test_cuda_index_beyond_the_gpus_names_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(RecipeError, match=r"^device: 'cuda:2' asked for, but this machine has 2"):
        resolve_device("cuda:2")


# --------------------------------------------------------------------------------------------
# 7. A leading ~ in a path-valued key is the home directory
# --------------------------------------------------------------------------------------------


def test_tilde_in_paths_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    overrides = [
        "trainer.run_dir=~/runs/a",
        "trainer.runs_root=~/runs",
        "trainer.resume=~/old/step_1.pt",
        "data.root=~/data",
    ]
    recipe = load_recipe(text_recipe(tmp_path), overrides)
    assert recipe.trainer.run_dir == str(home / "runs" / "a")
    assert recipe.trainer.runs_root == str(home / "runs")
    assert recipe.trainer.resume == str(home / "old" / "step_1.pt")
    assert recipe.data.root == str(home / "data")
    assert load_recipe(text_recipe(tmp_path), ["trainer.resume=auto"]).trainer.resume == "auto"
    short = load_shortrun_recipe(RECIPES / "shortrun_mnist.yaml", overrides)
    assert short.trainer.run_dir == str(home / "runs" / "a")
    assert short.trainer.resume == str(home / "old" / "step_1.pt")
    assert short.data.root == str(home / "data")


# --------------------------------------------------------------------------------------------
# 8. An anomaly section needs a task that has an anomaly split
# --------------------------------------------------------------------------------------------


def test_anomaly_on_a_text_task_is_refused(tmp_path: Path) -> None:
    message = error_of(lambda: load_recipe(text_recipe(tmp_path), ["anomaly.digit=3"]))
    assert message.startswith(
        "command line: anomaly.digit=3: the task latentebm.tasks.text.TextTask has no"
    )
    path = text_recipe(tmp_path, anomaly={"digit": 3})
    assert error_of(lambda: load_recipe(path)).startswith(f"{path}: anomaly: the task ")
    # image tasks take it, and their own checks run when the recipe is read
    assert load_recipe(RECIPES / "mnist.yaml", ["anomaly.digit=3"]).anomaly is not None
    message = error_of(
        lambda: load_recipe(RECIPES / "mnist.yaml", ["anomaly.digit=3", "task.dataset=celeba"])
    )
    assert "needs class labels" in message


# --------------------------------------------------------------------------------------------
# 9. cat and keys know the short-run schema
# --------------------------------------------------------------------------------------------


def test_cat_prints_a_shortrun_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cat", "shortrun_mnist", "chain.n_steps=7"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["family"] == "shortrun" and data["chain"]["n_steps"] == 7
    assert data["energy"]["n_filters"] == 16
    assert main(["cat", "shortrun_mnist", "chain.n_stepz=7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentebm: error: command line: chain.n_stepz=7: unknown key")


@pytest.mark.parametrize(
    "which", ["shortrun_mnist", "shortrun", str(RECIPES / "shortrun_cifar10.yaml")]
)
def test_keys_of_the_shortrun_family(which: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", which]) == 0
    keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"chain.n_steps", "energy.n_filters", "convergent.data_noise"} <= keys
    assert "model.z_dim" not in keys


def test_keys_of_a_latent_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "ptb"]) == 0
    keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert "model.z_dim" in keys and "chain.n_steps" not in keys


ENERGY_MODULE = """\
from dataclasses import dataclass

import torch
from torch import nn


class QuadraticEnergy(nn.Module):
    @dataclass
    class Config:
        scale: float = 0.5

    def __init__(self, config, *, z_dim):
        super().__init__()
        self.centre = nn.Parameter(torch.zeros(z_dim))
        self.scale = config.scale

    def forward(self, z):
        return -self.scale * (z - self.centre).pow(2).sum(dim=1)
"""


def test_a_local_energy_network_trains_and_loads_only_where_trusted(tmp_path: Path) -> None:
    """``model.prior.energy`` as a component from the working directory: the recipe the user
    runs may use it; a command that reads the checkpoint's recipe imports it only when trusted."""
    (tmp_path / "my_energy.py").write_text(ENERGY_MODULE, encoding="utf-8")
    recipe = text_recipe(
        tmp_path,
        model={
            **tiny_recipe_dict("x")["model"],
            "prior": {"energy": {"_component_": "my_energy.QuadraticEnergy", "scale": 0.25}},
        },
    )
    run = tmp_path / "run"
    done = python_cli(
        tmp_path, "train", recipe, "trainer.max_steps=2", "trainer.samples_at_end=0",
        f"trainer.run_dir={run}", "model.prior.hidden_dims=[7]",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "model.prior.hidden_dims is ignored: model.prior.energy builds" in done.stderr
    saved = torch.load(next((run / "checkpoints").iterdir()), weights_only=True)
    assert [k for k in saved["model"] if k.startswith("prior.")] == ["prior.f.centre"]
    line = one_error_line(python_cli(tmp_path, "generate", run, "-n", "2"))
    assert "model.prior.energy._component_" in line and "my_energy" in line
    trusted = python_cli(
        tmp_path, "generate", run, "-n", "2", LATENTEBM_TRUSTED_MODULES="my_energy"
    )
    assert trusted.returncode == 0, trusted.stderr
    assert len(trusted.stdout.strip().splitlines()) == 2
