"""Tests for latentebm.config: recipe loading, overrides, validation errors and round trips."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import yaml

from latentebm.config import (
    AdamConfig,
    ChainConfig,
    ComponentConfig,
    Recipe,
    RecipeError,
    TrainerConfig,
    apply_overrides,
    instantiate,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
    validate,
)

# --------------------------------------------------------------------------------------------
# Components referenced from recipes as tests.test_config.<Class>
# --------------------------------------------------------------------------------------------


class DummyTask:
    """A task component with a tiny config."""

    @dataclass
    class Config:
        foo: int = 1
        path: str | None = None

    def __init__(self, config: DummyTask.Config, **extra: Any) -> None:
        self.config = config
        self.extra = extra


class DummyGenerator:
    """A generator component exercising several field types."""

    @dataclass
    class Config:
        hidden: int = 64
        dropout: float = 0.0
        sizes: list[int] = field(default_factory=lambda: [1, 2])
        extra: dict[str, Any] = field(default_factory=dict)
        mode: Literal["a", "b"] = "a"
        pair: tuple[int, int] = (3, 4)

    def __init__(self, config: DummyGenerator.Config, **extra: Any) -> None:
        self.config = config
        self.extra = extra


class OtherGenerator:
    """A second generator component whose Config shares no key with DummyGenerator's and has a
    required key."""

    @dataclass
    class Config:
        width: int
        depth: int = 2

    def __init__(self, config: OtherGenerator.Config, **extra: Any) -> None:
        self.config = config


class NoConfig:
    """A component class without a Config dataclass."""


FULL = """\
name: ptb-small
seed: 3
device: cpu
data:
  root: /tmp/data
task:
  _component_: tests.test_config.DummyTask
  foo: 7
model:
  z_dim: 16
  prior:
    kind: ebm
    hidden_dims: [100, 100]
    negative_slope: 0.1
    prior_sigma: 1
  generator:
    _component_: tests.test_config.DummyGenerator
    hidden: 128
    dropout: 0.3
    extra: {a: 1, b: [x, y]}
    mode: b
  prior_chain:
    n_steps: 40
    step_size: 0.4
  posterior_chain:
    n_steps: 20
    step_size: 0.1
    clamp: 3
optim:
  prior:
    lr: 1e-4
    betas: [0.5, 0.999]
  generator:
    lr: 0.001
    grad_clip: 5
trainer:
  max_steps: 100
  batch_size: 16
  valid_batches: null
  nonfinite: skip
"""

MINIMAL = """\
task:
  _component_: tests.test_config.DummyTask
model:
  generator:
    _component_: tests.test_config.DummyGenerator
"""


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(fn: Callable[[], object]) -> str:
    """Run ``fn``, assert it raises a RecipeError with a one-line message, return the message."""
    with pytest.raises(RecipeError) as info:
        fn()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and "\r" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_full_recipe_loads(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL))
    assert recipe.name == "ptb-small"
    assert recipe.seed == 3 and recipe.device == "cpu"
    assert recipe.data.root == "/tmp/data"
    assert recipe.task == ComponentConfig("tests.test_config.DummyTask", DummyTask.Config(foo=7))
    model = recipe.model
    assert model.z_dim == 16
    assert model.prior.hidden_dims == [100, 100]
    assert model.prior.prior_sigma == 1.0 and isinstance(model.prior.prior_sigma, float)
    gen = model.generator.args
    assert isinstance(gen, DummyGenerator.Config)
    assert (gen.hidden, gen.dropout, gen.mode) == (128, 0.3, "b")
    assert gen.extra == {"a": 1, "b": ["x", "y"]}
    assert model.prior_chain == ChainConfig(n_steps=40, step_size=0.4)
    assert model.posterior_chain.clamp == 3.0 and isinstance(model.posterior_chain.clamp, float)
    assert recipe.optim.prior == AdamConfig(lr=1e-4, betas=(0.5, 0.999))
    assert recipe.optim.generator == AdamConfig(lr=1e-3, grad_clip=5.0)
    assert recipe.trainer.max_steps == 100 and recipe.trainer.batch_size == 16
    assert recipe.trainer.valid_batches is None
    assert recipe.trainer.nonfinite == "skip"
    assert recipe.trainer.log_every == TrainerConfig().log_every


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, MINIMAL, "my_recipe.yaml"))
    assert recipe.name == "my_recipe"
    assert recipe.device == "auto" and recipe.seed == 0 and recipe.data.root is None
    assert recipe.model.z_dim == 32
    assert recipe.model.prior.kind == "ebm" and recipe.model.prior.hidden_dims == [200, 200]
    assert recipe.model.prior_chain == ChainConfig(n_steps=60, step_size=0.4)
    assert recipe.model.posterior_chain == ChainConfig(n_steps=20, step_size=0.1)
    assert recipe.optim.prior == AdamConfig(lr=1e-4, betas=(0.5, 0.999))
    assert recipe.optim.generator == AdamConfig(lr=1e-3, betas=(0.9, 0.999), grad_clip=5.0)
    assert recipe.trainer == TrainerConfig()
    assert recipe.model.generator.args == DummyGenerator.Config()


def test_instantiate_component(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL))
    task = instantiate(recipe.task, vocab=5)
    assert isinstance(task, DummyTask)
    assert task.config.foo == 7 and task.extra == {"vocab": 5}


def test_mutable_defaults_are_not_shared(tmp_path: Path) -> None:
    a = load_recipe(write(tmp_path, MINIMAL))
    b = load_recipe(write(tmp_path, MINIMAL))
    a.model.prior.hidden_dims.append(1)
    assert b.model.prior.hidden_dims == [200, 200]


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


def test_overrides_nested_and_lists(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, FULL),
        [
            "trainer.max_steps=5",
            "model.prior_chain.n_steps=0",
            "model.prior.hidden_dims=[300,300,300]",
            "model.generator.sizes=[4]",
            "model.generator.pair=[5, 6]",
            "optim.prior.betas=[0.0, 0.9]",
            "trainer.valid_batches=7",
            "trainer.tensorboard=false",
            "seed=11",
            "name=2020",
            "device=cuda:1",
        ],
    )
    assert recipe.trainer.max_steps == 5
    assert recipe.model.prior_chain.n_steps == 0
    assert recipe.model.prior_chain.step_size == 0.4  # untouched sibling
    assert recipe.model.prior.hidden_dims == [300, 300, 300]
    assert recipe.model.generator.args.sizes == [4]
    assert recipe.model.generator.args.pair == (5, 6)
    assert recipe.model.generator.args.hidden == 128
    assert recipe.optim.prior.betas == (0.0, 0.9)
    assert recipe.trainer.valid_batches == 7 and recipe.trainer.tensorboard is False
    assert recipe.seed == 11
    assert recipe.name == "2020"  # str field: the override text is kept as a string
    assert recipe.device == "cuda:1"


def test_override_creates_missing_sections_keeping_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, MINIMAL),
        ["optim.generator.lr=3e-4", "model.prior_chain.noise=false", "data.root=/d", "seed=null"][
            :3
        ],
    )
    assert recipe.optim.generator == AdamConfig(lr=3e-4, grad_clip=5.0)
    assert recipe.optim.prior == AdamConfig(lr=1e-4, betas=(0.5, 0.999))
    assert recipe.model.prior_chain == ChainConfig(n_steps=60, step_size=0.4, noise=False)
    assert recipe.data.root == "/d"


def test_partial_section_in_file_keeps_defaults(tmp_path: Path) -> None:
    text = MINIMAL + "  posterior_chain:\n    n_steps: 5\noptim:\n  generator:\n    lr: 2e-3\n"
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.model.posterior_chain == ChainConfig(n_steps=5, step_size=0.1)
    assert recipe.optim.generator == AdamConfig(lr=2e-3, grad_clip=5.0)


def test_apply_overrides_parses_yaml_values_and_copies() -> None:
    data: dict[str, Any] = {"a": {"b": 1}, "c": None}
    out = apply_overrides(
        data, ["a.b=5", "a.x.y=1e-3", "t=true", "n=null", "l=[200,200]", "c.d=cuda:0", "e="]
    )
    assert out == {
        "a": {"b": 5, "x": {"y": "1e-3"}},
        "c": {"d": "cuda:0"},
        "t": True,
        "n": None,
        "l": [200, 200],
        "e": None,
    }
    assert data == {"a": {"b": 1}, "c": None}  # input untouched


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("trainer.max_steps", "command line: trainer.max_steps: expected key.path=value"),
        ("trainer..x=1", "invalid key path"),
        ("=1", "invalid key path"),
        ("a=[1,2", "command line: a=[1,2: cannot parse value"),
        ("seed.x=1", "cannot set a key inside 'seed', which is int 0, not a section"),
    ],
)
def test_bad_override_items(item: str, expected: str) -> None:
    message = error_of(lambda: apply_overrides({"seed": 0}, [item]))
    assert expected in message


# --------------------------------------------------------------------------------------------
# Deleting keys: ~key.path
# --------------------------------------------------------------------------------------------

OTHER = "model.generator._component_=tests.test_config.OtherGenerator"


def test_deletion_swaps_a_component(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    # without the deletion the file's DummyGenerator keys are unknown to the new class
    message = error_of(lambda: load_recipe(path, [OTHER, "model.generator.width=3"]))
    assert "model.generator.hidden: unknown key (known: _component_, depth, width)" in message
    for items in (
        ["~model.generator", OTHER, "model.generator.width=3"],
        [OTHER, "model.generator.width=3", "~model.generator"],  # deletions go first
    ):
        recipe = load_recipe(path, items)
        assert recipe.model.generator == ComponentConfig(
            "tests.test_config.OtherGenerator", OtherGenerator.Config(width=3, depth=2)
        )
        assert recipe.model.z_dim == 16 and recipe.task.args.foo == 7  # the rest is the file's


def test_deletion_restores_defaults(tmp_path: Path) -> None:
    deletions = [
        "~seed",
        "~model.posterior_chain.clamp",
        "~model.prior.hidden_dims",
        "~model.generator.mode",
        "~trainer.max_steps",
        "~optim.prior",
    ]
    recipe = load_recipe(write(tmp_path, FULL), deletions)
    assert recipe.seed == 0  # file: 3
    assert recipe.model.posterior_chain == ChainConfig(n_steps=20, step_size=0.1)  # clamp 3
    assert recipe.model.prior.hidden_dims == [200, 200]  # file: [100, 100]
    assert recipe.model.prior.negative_slope == 0.1  # sibling kept
    assert recipe.model.generator.args.mode == "a"  # file: b
    assert recipe.model.generator.args.hidden == 128  # sibling kept
    assert recipe.trainer.max_steps == 40000 and recipe.trainer.batch_size == 16
    assert recipe.optim.prior == AdamConfig(lr=1e-4, betas=(0.5, 0.999))
    assert recipe.optim.generator == AdamConfig(lr=1e-3, grad_clip=5.0)


def test_apply_overrides_deletes_before_setting() -> None:
    data: dict[str, Any] = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": 4}
    assert apply_overrides(data, ["a.b=5", "~a"]) == {"a": {"b": 5}, "f": 4}
    assert apply_overrides(data, ["~a.c.d", " ~f", "~a.b"]) == {"a": {"c": {"e": 3}}}
    assert apply_overrides(data, ["~a.c", "a.c.x=1"]) == {"a": {"b": 1, "c": {"x": 1}}, "f": 4}
    assert data == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": 4}  # input untouched


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            ["~a.x"],
            "command line: ~a.x: cannot delete 'a.x': the recipe has no key 'x' in 'a' "
            "(keys there: b, c)",
        ),
        (
            ["~a.cc.d"],
            "command line: ~a.cc.d: cannot delete 'a.cc.d': the recipe has no key 'cc' in 'a' "
            "(keys there: b, c); did you mean 'c'?",
        ),
        (
            ["~seed"],
            "command line: ~seed: cannot delete 'seed': the recipe has no key 'seed' at the top "
            "level (keys there: a, f)",
        ),
        (["x=1", "~x"], "command line: ~x: cannot delete 'x': the recipe has no key 'x'"),
        (
            ["~f.g"],
            "command line: ~f.g: cannot delete a key inside 'f', which is int 4, not a section",
        ),
        (["~a", "~a.b"], "command line: ~a.b: nothing to delete, '~a' already deleted it"),
        (["~a.b", "~a.b"], "command line: ~a.b: nothing to delete, '~a.b' already deleted it"),
        (["~a.b=1"], "command line: ~a.b=1: a deletion takes no value (write ~a.b to delete"),
        (["~"], "command line: ~: invalid key path ''"),
        (["~a..b"], "command line: ~a..b: invalid key path 'a..b'"),
    ],
)
def test_bad_deletions(items: list[str], expected: str) -> None:
    data = {"a": {"b": 1, "c": {"d": 2}}, "f": 4}
    assert error_of(lambda: apply_overrides(data, items)).startswith(expected)


def test_bad_deletion_in_a_recipe_suggests_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    message = error_of(lambda: load_recipe(path, ["~model.generatr"]))
    assert message == (
        "command line: ~model.generatr: cannot delete 'model.generatr': the recipe has no key "
        "'generatr' in 'model' (keys there: generator, posterior_chain, prior, prior_chain, "
        "z_dim); did you mean 'generator'?"
    )
    message = error_of(lambda: load_recipe(path, ["~trainer.max_minutes"]))  # not in the file
    assert message.startswith(
        "command line: ~trainer.max_minutes: cannot delete 'trainer.max_minutes': the recipe "
        "has no key 'max_minutes' in 'trainer' (keys there: batch_size, max_steps, nonfinite, "
        "valid_batches)"
    )


def test_errors_after_a_deletion_name_it(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    message = error_of(lambda: load_recipe(path, ["~model.generator"]))
    assert message == "command line: ~model.generator: missing required key"
    message = error_of(lambda: load_recipe(path, ["~task._component_"]))
    assert message == (
        f"{path}: task: missing '_component_' key (dotted path of the class to build) "
        "(with the command-line override '~task._component_')"
    )
    message = error_of(lambda: load_recipe(path, ["~model.generator", OTHER]))
    assert message == (
        f"command line: {OTHER}: model.generator.width: missing required key "
        "('~model.generator' deleted the section 'model.generator'; this override creates it)"
    )
    amortized = MINIMAL + (
        "  inference:\n"
        "    _component_: latentebm.inference.SequenceEncoder\n"
        "  posterior_chain:\n"
        "    init: amortized\n"
    )
    path = write(tmp_path, amortized, "amortized.yaml")
    assert load_recipe(path).model.posterior_chain.init == "amortized"
    message = error_of(lambda: load_recipe(path, ["~model.inference"]))
    assert message.startswith(
        f"{path}: model.posterior_chain.init: amortized needs model.inference"
    )
    assert message.endswith("(with the command-line override '~model.inference')")


# --------------------------------------------------------------------------------------------
# Floats written as 1e-4
# --------------------------------------------------------------------------------------------


def test_float_from_yaml_exponent_string(tmp_path: Path) -> None:
    assert yaml.safe_load("1e-4") == "1e-4"  # the YAML 1.1 quirk this handles
    recipe = load_recipe(write(tmp_path, FULL), ["optim.generator.lr=3e-4"])
    assert recipe.optim.prior.lr == 1e-4 and isinstance(recipe.optim.prior.lr, float)
    assert recipe.optim.generator.lr == 3e-4
    message = error_of(lambda: load_recipe(write(tmp_path, FULL), ["optim.generator.lr=fast"]))
    assert message == "command line: optim.generator.lr=fast: expected float, got str 'fast'"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("  max_steps: 100", "  max_stpes: 100"))
    message = error_of(lambda: load_recipe(path))
    assert message.startswith(f"{path}: trainer.max_stpes: unknown key (known: batch_size, ")
    assert "max_steps" in message and "valid_every" in message
    assert "did you mean 'max_steps'?" in message


def test_unknown_key_on_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    message = error_of(lambda: load_recipe(path, ["trainer.max_stpes=5"]))
    assert message.startswith("command line: trainer.max_stpes=5: unknown key (known: batch_size")
    message = error_of(lambda: load_recipe(path, ["task.bar=1"]))
    assert message.startswith("command line: task.bar=1: unknown key (known: _component_, foo")
    message = error_of(lambda: load_recipe(path, ["modle.z_dim=3"]))
    assert message.startswith(
        "command line: modle.z_dim=3: unknown key (known: anomaly, data, device, family"
    )
    # a bad key below a section set by an override names the override
    message = error_of(lambda: load_recipe(path, ["model.prior={kind: ebm, depth: 3}"]))
    assert message.startswith(
        "command line: model.prior.depth (from 'model.prior={kind: ebm, depth: 3}'): unknown key"
    )


def test_unknown_key_in_component_from_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL.replace("    hidden: 128", "    hiden: 128"))
    message = error_of(lambda: load_recipe(path))
    assert message.startswith(f"{path}: model.generator.hiden: unknown key (known: _component_, ")
    assert "did you mean 'hidden'?" in message


def test_wrong_types(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    cases = {
        "trainer.max_steps=abc": "command line: trainer.max_steps=abc: expected int, got str 'abc'",
        "trainer.max_steps=1.5": "expected int, got float 1.5",
        "trainer.max_steps=true": "expected int, got bool True",
        "model.prior.prior_sigma=true": "expected float, got bool True",
        "trainer.progress=1": "expected bool, got int 1",
        "trainer.valid_batches=all": "expected int or null, got str 'all'",
        "model.prior.hidden_dims=[1, x]": "model.prior.hidden_dims[1] (from 'model.prior."
        "hidden_dims=[1, x]'): expected int, got str 'x'",
        "model.prior.hidden_dims=5": "expected list[int], got int 5",
        "optim.prior.betas=[0.5]": "expected a list of 2 entries, got 1",
        "optim.prior.betas=[0.5, 0.9, 0.99]": "expected a list of 2 entries, got 3",
        "trainer=5": "command line: trainer=5: expected a mapping (section), got int 5",
        "model.generator.extra=[1]": "expected a mapping, got list [1]",
    }
    for item, expected in cases.items():
        message = error_of(lambda item=item: load_recipe(path, [item]))
        assert expected in message, (item, message)
    bad_file = write(tmp_path, FULL.replace("  batch_size: 16", "  batch_size: sixteen"), "b.yaml")
    assert error_of(lambda: load_recipe(bad_file)) == (
        f"{bad_file}: trainer.batch_size: expected int, got str 'sixteen'"
    )


def test_literal_choice_error(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    message = error_of(lambda: load_recipe(path, ["trainer.nonfinite=halt"]))
    assert message == (
        "command line: trainer.nonfinite=halt: expected one of ['stop', 'skip'], got str 'halt'"
    )
    message = error_of(lambda: load_recipe(path, ["model.prior.kind=flow"]))
    assert "expected one of ['ebm', 'gaussian', 'none']" in message


def test_missing_required(tmp_path: Path) -> None:
    no_task = write(
        tmp_path,
        MINIMAL.replace("task:\n  _component_: tests.test_config.DummyTask\n", ""),
        "no_task.yaml",
    )
    assert error_of(lambda: load_recipe(no_task)) == f"{no_task}: task: missing required key"
    no_gen = write(
        tmp_path,
        "task:\n  _component_: tests.test_config.DummyTask\nmodel:\n  z_dim: 4\n",
        "no_gen.yaml",
    )
    assert error_of(lambda: load_recipe(no_gen)) == (
        f"{no_gen}: model.generator: missing required key"
    )
    message = error_of(lambda: validate(ChainConfig, {"n_steps": 3}, "model.prior_chain", "x.yaml"))
    assert message == "x.yaml: model.prior_chain.step_size: missing required key"
    no_lr = error_of(lambda: validate(AdamConfig, {}, "optim.extra", "x.yaml"))
    assert no_lr == "x.yaml: optim.extra.lr: missing required key"
    no_component = write(
        tmp_path,
        MINIMAL.replace("  _component_: tests.test_config.DummyTask", "  foo: 3"),
        "no_comp.yaml",
    )
    assert "task: missing '_component_' key" in error_of(lambda: load_recipe(no_component))


def test_bad_component_path(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    message = error_of(
        lambda: load_recipe(path, ["model.generator._component_=no_such_pkg_xyz.mod.Gen"])
    )
    assert message == (
        "command line: model.generator._component_=no_such_pkg_xyz.mod.Gen: cannot import "
        "'no_such_pkg_xyz.mod.Gen' (ModuleNotFoundError: No module named 'no_such_pkg_xyz')"
    )
    bad_attr = write(tmp_path, MINIMAL.replace("DummyGenerator", "NoSuchClass"), "attr.yaml")
    message = error_of(lambda: load_recipe(bad_attr))
    assert message.startswith(
        f"{bad_attr}: model.generator._component_: cannot import "
        "'tests.test_config.NoSuchClass' (AttributeError: "
    )
    message = error_of(lambda: load_recipe(path, ["task._component_=DummyTask"]))
    assert "cannot import 'DummyTask' (expected a dotted path" in message
    message = error_of(lambda: load_recipe(path, ["task._component_=3"]))
    assert "task._component_=3: expected str" in message


def test_component_without_config(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("DummyTask", "NoConfig"))
    assert error_of(lambda: load_recipe(path)) == (
        f"{path}: task._component_: tests.test_config.NoConfig has no dataclass attribute "
        "'Config' describing its keys"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.batch_size=0", "trainer.batch_size=0: must be > 0, got 0"),
        ("trainer.max_steps=-3", "must be > 0, got -3"),
        ("model.prior_chain.n_steps=-1", "must be >= 0, got -1"),
        ("model.posterior_chain.step_size=0", "must be > 0, got 0.0"),
        ("model.prior.prior_sigma=-1", "must be > 0, got -1.0"),
        ("optim.prior.lr=0", "optim.prior.lr=0: must be > 0, got 0.0"),
        ("optim.prior.betas=[1.0, 0.9]", "entries must be in [0, 1)"),
        ("model.prior.hidden_dims=[10, 0]", "entries must be > 0"),
        ("device=gpu", "expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ],
)
def test_value_constraints(tmp_path: Path, override: str, expected: str) -> None:
    message = error_of(lambda: load_recipe(write(tmp_path, MINIMAL), [override]))
    assert message.startswith("command line: ") and expected in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\ndevice: cpu\ntrainer: max_steps: 3\n")
    message = error_of(lambda: load_recipe(path))
    assert message.startswith(f"{path}: line 3, column ")
    assert "invalid YAML: mapping values are not allowed here" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "trainer:\n  max_steps: 3\n  max_steps: 4\n")
    message = error_of(lambda: load_recipe(path))
    assert message.startswith(f"{path}: line 8, column 3: invalid YAML: found duplicate key")


def test_file_level_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert error_of(lambda: load_recipe(missing)) == f"{missing}: recipe file not found"
    assert "is a directory" in error_of(lambda: load_recipe(tmp_path))
    as_list = write(tmp_path, "- 1\n- 2\n", "list.yaml")
    assert error_of(lambda: load_recipe(as_list)) == (
        f"{as_list}: top level must be a mapping of recipe keys, got list [1, 2]"
    )
    empty = write(tmp_path, "# nothing\n", "empty.yaml")
    assert "recipe is empty" in error_of(lambda: load_recipe(empty))


def test_recipe_error_is_single_line() -> None:
    assert str(RecipeError("a\n  b\r\nc")) == "a b c"
    assert issubclass(RecipeError, ValueError)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def _assert_plain(obj: object) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert isinstance(key, str)
            _assert_plain(value)
    elif isinstance(obj, list):
        for value in obj:
            _assert_plain(value)
    else:
        assert obj is None or isinstance(obj, bool | int | float | str), repr(obj)


def test_round_trip_dict_and_torch(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL), ["model.generator.pair=[7, 8]"])
    data = recipe_to_dict(recipe)
    _assert_plain(data)
    assert data["task"] == {"_component_": "tests.test_config.DummyTask", "foo": 7, "path": None}
    assert data["optim"]["prior"]["betas"] == [0.5, 0.999]
    trusted = ("tests.test_config",)  # a checkpoint's recipe imports only trusted modules
    assert recipe_from_dict(data, trusted_modules=trusted) == recipe

    buffer = io.BytesIO()
    torch.save({"recipe": data}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["recipe"]
    assert loaded == data
    again = recipe_from_dict(loaded, trusted_modules=trusted)
    assert again == recipe
    assert isinstance(again.optim.prior.betas, tuple)
    assert isinstance(again, Recipe)


def test_recipe_from_dict_errors_name_source(tmp_path: Path) -> None:
    data = recipe_to_dict(load_recipe(write(tmp_path, FULL)))
    data["trainer"]["batch_size"] = "x"
    trusted = ("tests.test_config",)
    assert error_of(lambda: recipe_from_dict(data, trusted_modules=trusted)) == (
        "checkpoint: trainer.batch_size: expected int, got str 'x'"
    )


def test_save_recipe_round_trip(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, FULL))
    out = tmp_path / "run" / "recipe.yaml"
    save_recipe(recipe, out)
    text = out.read_text()
    assert "hidden_dims: [100, 100]" in text
    assert text.index("name:") < text.index("trainer:")  # schema order, not sorted
    assert load_recipe(out) == recipe
