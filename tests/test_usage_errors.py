"""Using a trained model with bad arguments (issue 13): every mistake is one clear error, never a
hang, a torch traceback or a silently wrong result.

* ``latentebm.load(run)`` methods refuse a count or batch size below 1 and a negative chain
  length with a ``ValueError`` naming the argument (``generate(2, batch_size=0)`` looped
  forever);
* a method that does not apply to the model's task (``anomaly_score`` of a text model,
  ``generate`` of an image model ...) raises one ``TaskMismatchError`` naming the method, the
  checkpoint and the task;
* the ``generate``, ``interpolate``, ``evaluate``, ``diagnose`` and ``mnist-features`` options
  refuse out-of-range numbers while the command line is parsed (exit 2, the option named).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import torch

import latentebm
from latentebm.cli import build_parser, main
from tests.conftest import train_tiny_run
from tests.test_image_cli import tiny_image_recipe, write_square_mnist


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text run, 3 training steps."""
    root = tmp_path_factory.mktemp("usage_text")
    trainer = {"max_steps": 3, "checkpoint_every": 3, "valid_every": 3, "samples_at_end": 0}
    return train_tiny_run(root, trainer={**trainer, "runs_root": str(root / "runs")})


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MNIST-format image run, 2 training steps."""
    from latentebm.config import load_recipe
    from latentebm.train import Trainer

    root = tmp_path_factory.mktemp("usage_images")
    write_square_mnist(root / "mnist", n_train=20, n_test=10)
    recipe = tiny_image_recipe(
        root, root / "run", max_steps=2, checkpoint_every=2, samples_at_end=0
    )
    return Trainer(load_recipe(recipe)).fit()


class LoopGuard(AssertionError):
    """The method called the model's sampler far more often than its arguments allow."""


def guard_sampler(pretrained: Any, monkeypatch: pytest.MonkeyPatch, limit: int = 20) -> None:
    """Make ``pretrained.model.generate`` raise :class:`LoopGuard` after ``limit`` calls, so a
    method that loops on its arguments fails the test instead of hanging it."""
    original = pretrained.model.generate
    calls = iter(range(limit))

    def generate(*args: Any, **kwargs: Any) -> Any:
        if next(calls, None) is None:
            raise LoopGuard(f"model.generate called more than {limit} times")
        return original(*args, **kwargs)

    monkeypatch.setattr(pretrained.model, "generate", generate)


@pytest.fixture
def text_model(text_run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pretrained = latentebm.load(text_run)
    guard_sampler(pretrained, monkeypatch)
    yield pretrained


@pytest.fixture
def image_model(image_run: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    pretrained = latentebm.load(image_run)
    guard_sampler(pretrained, monkeypatch)
    yield pretrained


# ------------------------------------------------- case 1: counts, batch sizes, chain lengths
TEXT_CALLS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("generate batch_size=0", lambda m: m.generate(2, batch_size=0), "batch_size must be >= 1"),
    ("generate batch_size<0", lambda m: m.generate(2, batch_size=-3), "batch_size must be >= 1"),
    ("generate n=0", lambda m: m.generate(0), "n must be >= 1"),
    ("generate n<0", lambda m: m.generate(-1), "n must be >= 1"),
    (
        "generate langevin_steps<0",
        lambda m: m.generate(2, langevin_steps=-5),
        "langevin_steps must be >= 0",
    ),
    (
        "generate temperature=nan",
        lambda m: m.generate(2, decode="sample", temperature=float("nan")),
        "temperature must be > 0",
    ),
    (
        "trajectory langevin_steps<0",
        lambda m: m.trajectory(2, [0], langevin_steps=-1),
        "langevin_steps must be >= 0",
    ),
    (
        "interpolate posterior_steps<0",
        lambda m: m.interpolate("the cat sees a fish", "a dog", 3, posterior_steps=-1),
        "posterior_steps must be >= 0",
    ),
]

IMAGE_CALLS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("sample_images batch_size=0", lambda m: m.sample_images(2, batch_size=0), "batch_size"),
    ("sample_images batch_size<0", lambda m: m.sample_images(2, batch_size=-1), "batch_size"),
    ("sample_images n=0", lambda m: m.sample_images(0), "n must be >= 1"),
    ("sample_images n<0", lambda m: m.sample_images(-2), "n must be >= 1"),
    (
        "sample_images langevin_steps<0",
        lambda m: m.sample_images(2, langevin_steps=-3),
        "langevin_steps must be >= 0",
    ),
    (
        "anomaly_score batch_size=0",
        lambda m: m.anomaly_score(torch.zeros(3, 1, 28, 28), batch_size=0),
        "batch_size must be >= 1",
    ),
    (
        "anomaly_score batch_size<0",
        lambda m: m.anomaly_score(torch.zeros(3, 1, 28, 28), batch_size=-1),
        "batch_size must be >= 1",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in TEXT_CALLS], ids=[c[0] for c in TEXT_CALLS]
)
def test_text_model_refuses_bad_counts(
    text_model: Any, call: Callable[[Any], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(text_model)


@pytest.mark.parametrize(
    ("call", "message"), [c[1:] for c in IMAGE_CALLS], ids=[c[0] for c in IMAGE_CALLS]
)
def test_image_model_refuses_bad_counts(
    image_model: Any, call: Callable[[Any], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(image_model)


def test_generate_and_sample_images_split_into_batches(text_model: Any, image_model: Any) -> None:
    """The checks keep the valid uses: ``n`` not a multiple of ``batch_size``."""
    assert len(text_model.generate(3, batch_size=2, seed=0)) == 3
    assert text_model.generate(3, batch_size=2, seed=0) == text_model.generate(
        3, batch_size=2, seed=0
    )
    assert image_model.sample_images(3, batch_size=2, seed=0).shape == (3, 1, 28, 28)
    assert image_model.anomaly_score(torch.zeros(3, 1, 28, 28), batch_size=2).shape == (3,)


def test_anomaly_score_of_no_image_is_empty(image_model: Any) -> None:
    scores = image_model.anomaly_score(torch.zeros(0, 1, 28, 28))
    assert scores.shape == (0,)


# ----------------------------------------------- case 3: methods that do not apply to the task
@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("anomaly_score", lambda m: m.anomaly_score(torch.zeros(2, 1, 28, 28))),
        ("sample_images", lambda m: m.sample_images(2)),
    ],
)
def test_image_methods_of_a_text_model(
    text_model: Any, text_run: Path, method: str, call: Callable[[Any], Any]
) -> None:
    with pytest.raises(TypeError, match=f"^{method} needs an image model;") as info:
        call(text_model)
    assert isinstance(info.value, ValueError)  # the CLI's one-line error path catches it
    message = str(info.value)
    assert str(text_run) in message and "latentebm.tasks.text.TextTask" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("generate", lambda m: m.generate(2)),
        ("trajectory", lambda m: m.trajectory(2, [0, 1])),
        ("interpolate", lambda m: m.interpolate("a", "b", 3)),
    ],
)
def test_sequence_methods_of_an_image_model(
    image_model: Any, image_run: Path, method: str, call: Callable[[Any], Any]
) -> None:
    with pytest.raises(TypeError, match=f"^{method} decodes token sequences") as info:
        call(image_model)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert str(image_run) in message and "latentebm.tasks.images.ImageTask" in message
    assert "\n" not in message


def test_is_image_model(text_model: Any, image_model: Any) -> None:
    assert image_model.is_image_model and not text_model.is_image_model


# ------------------------------------------------------------ case 2: numeric CLI options
BAD_OPTIONS: list[tuple[str, ...]] = [
    ("generate", "RUN", "-n", "-1"),
    ("generate", "RUN", "-n", "0"),
    ("generate", "RUN", "--langevin-steps", "-5"),
    ("generate", "RUN", "--temperature", "0"),
    ("generate", "RUN", "--temperature", "-0.5"),
    ("generate", "RUN", "--temperature", "nan"),
    ("generate", "RUN", "--top-k", "0"),
    ("generate", "RUN", "--beam-size", "0"),
    ("generate", "RUN", "--length-penalty", "-1"),
    ("generate", "RUN", "--seed", str(2**64)),
    ("generate", "RUN", "--trajectory", "0,-5"),
    ("generate", "RUN", "--trajectory", "0,x"),
    ("interpolate", "RUN", "a", "b", "--points", "1"),
    ("interpolate", "RUN", "a", "b", "--chains", "0"),
    ("interpolate", "RUN", "a", "b", "--posterior-steps", "-1"),
    ("interpolate", "RUN", "a", "b", "--beam-size", "-2"),
    ("diagnose", "RUN", "--long-chain-steps", "-1"),
    ("diagnose", "RUN", "--chains", "0"),
    ("diagnose", "RUN", "--usage-examples", "-1"),
    ("evaluate", "RUN", "--chains", "1"),
    ("evaluate", "RUN", "--temperatures", "0"),
    ("evaluate", "RUN", "--leapfrog", "0"),
    ("evaluate", "RUN", "--laplace-starts", "0"),
    ("evaluate", "RUN", "--log-z-chains", "1"),
    ("evaluate", "RUN", "--log-z-temperatures", "0"),
    ("evaluate", "RUN", "--importance-samples", "0"),
    ("evaluate", "RUN", "--chain-steps", "0"),
    ("evaluate", "RUN", "--usage-examples", "1"),
    ("evaluate", "RUN", "--batch-size", "0"),
    ("evaluate", "RUN", "--max-batches", "0"),
    ("evaluate", "RUN", "--samples", "0"),
    ("evaluate", "RUN", "--jobs", "0"),
    ("evaluate", "RUN", "--rppl-samples", "0"),
    ("evaluate", "RUN", "--self-bleu-samples", "1"),
    ("evaluate", "RUN", "--langevin-steps", "-1"),
    ("evaluate", "RUN", "--temperature", "0"),
    ("evaluate", "RUN", "--top-k", "-1"),
    ("evaluate", "RUN", "--recon-sentences", "0"),
    ("evaluate", "RUN", "--recon-steps", "-1"),
    ("evaluate", "RUN", "--recon-chains", "0"),
    ("evaluate", "RUN", "--anomaly-steps", "-1"),
    ("evaluate", "RUN", "--anomaly-chains", "0"),
    ("evaluate", "RUN", "--recon-images", "0"),
    ("mnist-features", "OUT.pt", "--epochs", "0"),
]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a in BAD_OPTIONS])
def test_cli_refuses_out_of_range_options(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused while parsing (exit 2, before any file is read): the error names the option."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"latentebm {argv[0]}: error: argument {argv[-2]}: "), last


def test_cli_keeps_the_boundary_values() -> None:
    """0 stays valid where it means none (chain steps, skip), 1 where a count starts at 1."""
    parse = build_parser().parse_args
    gen = parse(["generate", "RUN", "-n", "1", "--langevin-steps", "0", "--top-k", "1"])
    assert (gen.n, gen.langevin_steps, gen.top_k) == (1, 0, 1)
    assert parse(["generate", "RUN", "--trajectory", "40,0,40"]).trajectory == [0, 40]
    assert parse(["generate", "RUN", "--seed", "-1", "--length-penalty", "0"]).seed == -1
    diag = parse(["diagnose", "RUN", "--long-chain-steps", "0", "--usage-examples", "0"])
    assert (diag.long_chain_steps, diag.usage_examples) == (0, 0)
    ev = parse(["evaluate", "RUN", "--chains", "2", "--recon-steps", "0", "--anomaly-steps", "0"])
    assert (ev.chains, ev.recon_steps, ev.anomaly_steps) == (2, 0, 0)
    assert parse(["interpolate", "RUN", "a", "b", "--points", "2"]).points == 2


def test_trajectory_past_the_chain_is_refused_before_loading(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The run is not even read: the steps cannot lie on the chain asked for."""
    code = main(
        ["generate", str(tmp_path / "missing"), "--trajectory", "0,50", "--langevin-steps", "10"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "latentebm: error: --trajectory: steps must lie in 0..10 (the chain's --langevin-steps), "
        "got step 50"
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("-n", "-1", "must be >= 1, got -1"), ("--langevin-steps", "-5", "must be >= 0, got -5")],
)
def test_cli_generate_refuses_negative_counts_end_to_end(
    text_run: Path,
    run_cli: Callable[..., CompletedProcess[str]],
    tmp_path: Path,
    option: str,
    value: str,
    message: str,
) -> None:
    out = tmp_path / "samples.txt"
    done = run_cli("generate", text_run, option, value, "-o", out)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"latentebm generate: error: argument {option}: {message}"
    )
    assert done.stdout == "" and not out.exists()


def test_argparse_types_are_shared() -> None:
    """One helper per kind of number: the same option behaves the same in every command."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    types = {
        (name, action.dest): action.type
        for name, command in sub.choices.items()
        for action in command._actions
    }
    for name in ("generate", "interpolate", "evaluate"):
        assert types[(name, "temperature")] is types[("generate", "temperature")]
        assert types[(name, "top_k")] is types[("generate", "top_k")]
    assert all(
        kind is not int and kind is not float
        for (name, _), kind in types.items()
        if name in ("generate", "interpolate", "evaluate", "diagnose", "mnist-features")
    )


def test_error_messages_are_one_line() -> None:
    from latentebm.cli import one_line

    assert one_line("a\n\n  b   c\n\td") == "a; b c; d"
    assert one_line("") == "unknown error"


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """``latentebm generate RUN | head -1``: when the reader of stdout goes away the command
    stops quietly with 141 (128 + SIGPIPE), no error line."""
    import subprocess

    from tests.conftest import cli_env, latentebm_command, train_tiny_run

    run = train_tiny_run(tmp_path, "trainer.max_steps=1", f"trainer.run_dir={tmp_path / 'run'}")
    process = subprocess.Popen(
        [*latentebm_command(), "generate", str(run), "-n", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    # the reader goes away before anything is written (the command takes seconds to start;
    # a pipe here may hold a megabyte, so reading one line first would not break it)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert "error" not in err and "Traceback" not in err, err


def test_a_broken_pipe_elsewhere_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken pipe while stdout is fine (a worker pool's, say) is a real failure."""
    import latentebm.cli as cli
    import latentebm.cli.parser as parser  # build_parser binds each command's function

    def broken(args: Any) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(parser, "cmd_cat", broken)
    assert cli.main(["cat", "quickstart"]) == 2
    assert capsys.readouterr().err.startswith("latentebm: error: ")


@pytest.mark.parametrize("missing", ["rdkit", "selfies"])
def test_training_molecules_without_their_extra_is_one_error_line(
    missing: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pip install -e .` has no RDKit: `latentebm train qm9` said so only inside a worker
    process's traceback (found in a fresh-clone walkthrough). Now one line, checked before
    any worker starts, naming the extra."""
    import sys

    monkeypatch.setitem(sys.modules, missing, None)  # import -> ImportError
    run = tmp_path / "run"
    args = ["train", "qm9", "trainer.max_steps=1", f"trainer.run_dir={run}"]
    if missing == "selfies":
        args.append("task.representation=selfies")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("latentebm: error: ")
    assert "pip install 'latentebm[mol]'" in err[-1]
    assert "Traceback" not in "\n".join(err)
