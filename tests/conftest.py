"""Shared fixtures: a tiny synthetic corpus, a tiny text recipe and a ``latentebm`` runner."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

_SUBJECTS = ["the cat", "a dog", "the bird", "my friend", "a child", "the old man"]
_VERBS = ["sees", "likes", "finds", "eats", "follows", "hears"]
_OBJECTS = ["the ball", "a fish", "the tree", "a red apple", "the small house", "some milk"]
_ENDINGS = ["", "today", "again", "in the park", "every day"]


def tiny_sentences(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` short sentences (3 to 9 words) over a vocabulary of about 30 words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        words.append(rng.choice(_ENDINGS))
        out.append(" ".join(w for w in words if w))
    return out


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_recipe_dict(train: Path | str, **sections: Any) -> dict[str, Any]:
    """A recipe small enough to train a few steps in about a second on one CPU core.

    ``sections`` are merged into the recipe, e.g. ``trainer={"max_steps": 6}``.
    """
    recipe = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "task": {
            "_component_": "latentebm.tasks.text.TextTask",
            "train": str(train),
            "valid_fraction": 0.1,
        },
        "model": {
            "z_dim": 4,
            "prior": {"hidden_dims": [8, 8]},
            "generator": {
                "_component_": "latentebm.generators.lstm.LSTMDecoder",
                "embedding_dim": 8,
                "hidden_dim": 16,
                "max_decode_length": 12,
            },
            "prior_chain": {"n_steps": 5, "step_size": 0.4},
            "posterior_chain": {"n_steps": 3, "step_size": 0.1},
        },
        "trainer": {
            "max_steps": 6,
            "batch_size": 16,
            "log_every": 1,
            "valid_every": 3,
            "valid_batches": 2,
            "checkpoint_every": 3,
            "progress": False,
            "tensorboard": False,
            "samples_at_end": 2,
        },
    }
    return _merge(recipe, sections)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A ``.txt`` file of 200 synthetic sentences."""
    path = tmp_path / "data" / "tiny.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path, tiny_corpus: Path) -> Callable[..., Path]:
    """``tiny_recipe(**sections)`` writes a tiny recipe YAML under ``tmp_path`` and returns it."""
    counter = iter(range(1_000_000))

    def make(**sections: Any) -> Path:
        path = tmp_path / f"tiny_{next(counter)}" / "tiny.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_corpus, **sections)))
        return path

    return make


def train_tiny_run(root: Path, *overrides: str, **sections: Any) -> Path:
    """Write the tiny corpus and recipe under ``root`` and train it in this process (one
    thread); returns the run directory. For module-scoped fixtures that share one run."""
    from latentebm.config import load_recipe
    from latentebm.train import Trainer

    corpus = root / "tiny.txt"
    corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus, **sections)), encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return Trainer(load_recipe(recipe, list(overrides))).fit()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Caches (tokenizers, molecule splits) go to a folder of this test session, never to the
    user's ``~/.cache``: tests neither depend on nor leave behind a warm cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread while each test runs: the tests' tiny models run several times
    faster without thread hand-offs (and alongside other jobs); no result depends on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sigint_as_usual() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT back to its default, whatever
    the test runner inherited (a shell's background job ignores SIGINT, and an ignored signal
    stays ignored across exec, so the child would never see the test's Ctrl-C)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for ``latentebm`` subprocesses: offline, unbuffered, one thread per process,
    no debug tracebacks."""
    env = dict(os.environ)
    env.pop("LATENTEBM_DEBUG", None)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def latentebm_command() -> list[str]:
    """This interpreter's ``latentebm`` console script (else ``python -m latentebm.cli``)."""
    script = Path(sys.executable).with_name("latentebm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "latentebm.cli"]


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_cli(*args, env=None, timeout=120)``: run ``latentebm ARGS`` in ``tmp_path``."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        command = [*latentebm_command(), *map(str, args)]
        return subprocess.run(
            command,
            cwd=tmp_path,
            env=cli_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
