"""Property-based tests of the CLI against hostile input (issue 13): random recipes, random bytes
as text corpora and SMILES files, and damaged checkpoints. Whatever the input, ``latentebm``
either succeeds or exits non-zero with one ``latentebm: error: ...`` line naming the file; it
never raises a traceback, never hangs, and never changes a file of an existing run.

The CLI runs in this process (``latentebm.cli.main``) so each example costs milliseconds to a
second, not an interpreter start; a SIGALRM turns a hang into a failure. Examples are drawn from
a fixed seed (``derandomize``) so CI is repeatable; ``LATENTEBM_FUZZ_EXAMPLES=N`` draws more.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from latentebm.checkpoint import list_checkpoints
from latentebm.cli import main as cli_main
from tests.conftest import tiny_recipe_dict, tiny_sentences, train_tiny_run

EXAMPLES = int(os.environ.get("LATENTEBM_FUZZ_EXAMPLES", "25"))
SECONDS_PER_EXAMPLE = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ERROR_LINE = re.compile(r"^latentebm( [\w-]+)?: error: .+")


class Hang(Exception):
    """The command ran past its time limit."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``latentebm ARGS`` in this process: (exit code, stderr). Any exception that escapes
    ``main`` (a traceback for the user) fails the test."""
    capsys.readouterr()
    with time_limit(SECONDS_PER_EXAMPLE):
        try:
            code = cli_main(args)
        except SystemExit as stop:  # argparse
            code = stop.code if isinstance(stop.code, int) else 2
    return code, capsys.readouterr().err


def assert_clean_outcome(code: int, err: str, must_name: str | None = None) -> None:
    """Success, or a non-zero exit whose last stderr line is the one error line (naming
    ``must_name`` when given)."""
    event("exit 0" if code == 0 else f"exit {code}")  # --hypothesis-show-statistics
    assert "Traceback" not in err, err
    if code == 0:
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, f"exit {code} with nothing on stderr"
    errors = [line for line in lines if ERROR_LINE.match(line)]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    if must_name is not None:
        assert must_name in errors[0], errors[0]


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_history_kept(before: dict[Path, bytes]) -> None:
    """Every file an existing run had is still there with the same bytes (``metrics.jsonl`` and
    ``segments.jsonl`` may only grow at their end)."""
    for path, data in before.items():
        assert path.is_file(), f"{path} was removed"
        now = path.read_bytes()
        if path.name in ("metrics.jsonl", "segments.jsonl"):
            assert now.startswith(data), f"{path} was rewritten"
        else:
            assert now == data, f"{path} was changed"


# ----------------------------------------------------------------------------- random recipes

ODD_VALUES = st.sampled_from(
    [
        -1,
        0,
        1,
        2,
        3,
        -0.5,
        0.5,
        1e30,
        float("nan"),
        "abc",
        "",
        None,
        True,
        [],
        [1, 2],
        {},
        {"x": 1},
        "~/elsewhere",
        "../../..",
        "latentebm.tasks.text.TextTask",
        "os.system",
    ]
)


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict):
            keys += _flatten(value, f"{path}.")
    return keys


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[last] = value


_BASE_KEYS = [
    k
    for k in _flatten(tiny_recipe_dict("CORPUS"))
    if k not in {"trainer.keep_checkpoints", "trainer.run_dir", "trainer.runs_root"}
]
MUTATIONS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(_BASE_KEYS), st.sampled_from(["model.extra", "trainer.bogus"])),
        ODD_VALUES,
    ),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run whose files no fuzzed command may change."""
    root = tmp_path_factory.mktemp("existing")
    return train_tiny_run(
        root,
        f"trainer.run_dir={root / 'run'}",
        "trainer.max_steps=2",
        "trainer.checkpoint_every=1",
        "trainer.keep_checkpoints=0",
    )


@FUZZ
@given(mutations=MUTATIONS, target=st.sampled_from(["fresh", "existing", "existing-auto"]))
def test_random_recipes_train_or_fail_in_one_line(
    mutations: list[tuple[str, Any]],
    target: str,
    existing_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = snapshot(existing_run)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = root / "tiny.txt"
        corpus.write_text("\n".join(tiny_sentences(60)) + "\n", encoding="utf-8")
        recipe = tiny_recipe_dict(corpus)
        recipe["trainer"]["keep_checkpoints"] = 0
        for key, value in mutations:
            _set(recipe, key, value)
        path = root / "fuzzed.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        run_dir = root / "run" if target == "fresh" else existing_run
        args = ["train", str(path), "trainer.max_steps=2", f"trainer.run_dir={run_dir}"]
        args += [f"trainer.runs_root={root / 'runs'}"]
        if target == "existing-auto":
            args.append("trainer.resume=auto")
        code, err = run(args, capsys)
        assert_clean_outcome(code, err)
    assert_history_kept(before)


_RECIPE_TEXT = yaml.safe_dump(tiny_recipe_dict("/data/tiny.txt"))
EDITED_RECIPES = st.tuples(st.floats(0.0, 1.0), st.integers(0, 20), st.text(max_size=30)).map(
    lambda edit: (
        _RECIPE_TEXT[: int(edit[0] * len(_RECIPE_TEXT))]
        + edit[2]
        + _RECIPE_TEXT[int(edit[0] * len(_RECIPE_TEXT)) + edit[1] :]
    )
)


@FUZZ
@given(text=st.one_of(st.text(max_size=400), EDITED_RECIPES))
def test_random_recipe_text_is_read_or_refused_in_one_line(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        code, err = run(["cat", str(path)], capsys)
        assert_clean_outcome(code, err)


# ----------------------------------------------------------------------------- random corpora


SENTENCES = tiny_sentences(80)
LINES = st.lists(
    st.one_of(st.sampled_from(SENTENCES), st.text(max_size=40)), min_size=0, max_size=120
).map(lambda lines: ("\n".join(lines) + "\n").encode("utf-8"))


@FUZZ
@given(
    data=st.one_of(
        LINES,
        st.binary(max_size=2000),
        st.text(max_size=300).map(lambda t: t.encode("utf-16")),
    ),
    packing=st.sampled_from(["txt", "gz", "gz-truncated", "gz-name-only"]),
    cut=st.floats(0.0, 1.0),
)
def test_random_text_corpora_train_or_fail_naming_the_file(
    data: bytes, packing: str, cut: float, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        corpus = root / ("corpus.txt" if packing == "txt" else "corpus.txt.gz")
        if packing == "gz":
            data = gzip.compress(data)
        elif packing == "gz-truncated":  # a real gzip stream cut short
            packed = gzip.compress(data)
            data = packed[: int(len(packed) * cut)]
        corpus.write_bytes(data)  # gz-name-only: plain bytes under a .gz name
        recipe = root / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus)), encoding="utf-8")
        args = ["train", str(recipe), "trainer.max_steps=2", f"trainer.run_dir={root / 'run'}"]
        code, err = run(args, capsys)
        assert_clean_outcome(code, err, must_name=corpus.name)


def _molecule_recipe(root: Path, train: str) -> dict[str, Any]:
    recipe = tiny_recipe_dict("unused")
    recipe["task"] = {
        "_component_": "latentebm.tasks.molecules.MoleculeTask",
        "train": train,
        "valid_fraction": 0.2,
        "n_jobs": 1,
        "cache": True,
        "cache_dir": str(root / "cache"),
    }
    recipe["data"] = {"root": str(root)}
    return recipe


VALID_SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "N#N", "C1CC1", "OCCN", "CCCl", "O=C=O"] * 3


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=1500),
        st.lists(st.one_of(st.sampled_from(VALID_SMILES), st.text(max_size=20)), max_size=40).map(
            lambda rows: ("SMILES\n" + "\n".join(rows) + "\n").encode("utf-8")
        ),
    ),
    name=st.sampled_from(["mols.csv", "mols.smi", "mols.csv.gz"]),
)
def test_random_smiles_files_train_or_fail_naming_the_file(
    data: bytes, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rdkit")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / name).write_bytes(data)
        recipe = root / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(_molecule_recipe(root, name)), encoding="utf-8")
        args = ["train", str(recipe), "trainer.max_steps=2", f"trainer.run_dir={root / 'run'}"]
        code, err = run(args, capsys)
        assert_clean_outcome(code, err, must_name=name)


@FUZZ
@given(cut=st.floats(0.0, 1.0), garbage=st.binary(max_size=64))
def test_damaged_molecule_caches_are_rebuilt(
    cut: float, garbage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rdkit")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "mols.csv").write_text("SMILES\n" + "\n".join(VALID_SMILES) + "\n")
        recipe = root / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(_molecule_recipe(root, "mols.csv")), encoding="utf-8")
        common = ["train", str(recipe), "trainer.max_steps=1"]
        code, err = run([*common, f"trainer.run_dir={root / 'a'}"], capsys)
        assert code == 0, err
        caches = sorted((root / "cache").rglob("*.npz"))
        assert caches, "the molecule task wrote no cache"
        for cache in caches:
            data = cache.read_bytes()
            cache.write_bytes(data[: int(len(data) * cut)] + garbage)
        code, err = run([*common, f"trainer.run_dir={root / 'b'}"], capsys)
        assert_clean_outcome(code, err)
        assert code == 0, f"a damaged cache must be rebuilt, not fatal: {err}"


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    return train_tiny_run(root, "trainer.max_steps=2", f"trainer.run_dir={root / 'run'}")


@FUZZ
@given(
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=8),
    command=st.sampled_from(["generate", "evaluate", "resume"]),
)
def test_damaged_checkpoints_fail_in_one_line_naming_the_file(
    cut: float,
    flips: list[tuple[float, int]],
    command: str,
    finished_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = bytearray(list_checkpoints(finished_run)[-1].read_bytes())
    for where, xor in flips:
        data[int(where * (len(data) - 1))] ^= xor
    data = data[: max(0, int(len(data) * cut))] if cut < 1.0 else data
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        checkpoint = root / "damaged.pt"
        checkpoint.write_bytes(bytes(data))
        if command == "generate":
            args = ["generate", str(checkpoint), "-n", "2"]
        elif command == "evaluate":
            args = ["evaluate", str(checkpoint), "--metrics", "recon_nll", "--max-batches", "1"]
            args += ["-o", str(root / "out.json"), "--no-progress"]
        else:
            recipe = root / "recipe.yaml"
            corpus = root / "tiny.txt"
            corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
            recipe.write_text(yaml.safe_dump(tiny_recipe_dict(corpus)), encoding="utf-8")
            args = ["train", str(recipe), f"trainer.resume={checkpoint}"]
            args += ["trainer.max_steps=3", f"trainer.run_dir={root / 'run'}"]
        code, err = run(args, capsys)
        assert_clean_outcome(code, err)
        if code != 0 and not flips and cut < 0.99:
            assert "damaged.pt" in err.splitlines()[-1]
