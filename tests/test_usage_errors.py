"""Using a trained model with bad arguments (issue 13): every mistake is one clear error, never a
hang, a torch traceback or a silently wrong result.

* ``latentebm.load(run)`` methods refuse a count or batch size below 1 and a negative chain
  length with a ``ValueError`` naming the argument (``generate(2, batch_size=0)`` looped
  forever);
* a method that does not apply to the model's task (``anomaly_score`` of a text model,
  ``generate`` of an image model ...) raises one ``TaskMismatchError`` naming the method, the
  checkpoint and the task;
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import latentebm
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
    assert str(text_run) in message and "tasks.text.TextTask" in message
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
    assert str(image_run) in message and "tasks.images.ImageTask" in message
    assert "\n" not in message


def test_is_image_model(text_model: Any, image_model: Any) -> None:
    assert image_model.is_image_model and not text_model.is_image_model
