"""Tests for latentebm.tasks.molecules (SMILES/SELFIES tokenizers, MoleculeTask, QM9 builtin,
recipes)."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")
pytest.importorskip("selfies")

from rdkit import Chem  # noqa: E402

from latentebm.tasks.molecules import (  # noqa: E402
    MoleculeDataError,
    MoleculeTask,
    MoleculeTokenizer,
    canonical_smiles,
    tokenize_smiles,
)

Config = MoleculeTask.Config

TRICKY = [
    "c1cc[nH]c1",
    "C[C@@H](N)C(=O)O",
    "ClCCBr",
    "C1CC2CCC3CCC4CCC5CCC6CCC7CCC8CCC9CCC%10CCC1C2C3C4C5C6C7C8C9%10",
    "C=CC#N",
    "O=[N+]([O-])c1ccccc1",
    "F/C=C/F",
    "[13CH4]",
    "C[S@](=O)c1ccccc1",
    "[Na+].[Cl-]",
]


def _canon(smiles: str) -> str:
    mol = Chem.MolFromSmiles(smiles)
    assert mol is not None, smiles
    return Chem.MolToSmiles(mol)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _roundtrip(obj: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _task(tmp_path: Path, smiles: list[str], name: str = "mols.csv", **kw) -> MoleculeTask:
    _write(tmp_path / name, "SMILES\n" + "".join(s + "\n" for s in smiles))
    kw.setdefault("n_jobs", 1)
    kw.setdefault("cache", False)
    return MoleculeTask(Config(train=name, **kw), str(tmp_path))


# ----------------------------------------------------------------------------- tokenizers


def test_smiles_regex_tokens() -> None:
    assert tokenize_smiles("O=[N+]([O-])c1cc[nH]c1Cl") == [
        "O", "=", "[N+]", "(", "[O-]", ")", "c", "1", "c", "c", "[nH]", "c", "1", "Cl",
    ]  # fmt: skip
    assert tokenize_smiles("C[C@@H]1CC%10Br") == ["C", "[C@@H]", "1", "C", "C", "%10", "Br"]
    assert tokenize_smiles("C#N.F/C=C\\F") == [
        "C",
        "#",
        "N",
        ".",
        "F",
        "/",
        "C",
        "=",
        "C",
        "\\",
        "F",
    ]
    for s in TRICKY:
        assert "".join(tokenize_smiles(s)) == s


def test_smiles_encode_decode_exact(tmp_path: Path) -> None:
    task = _task(tmp_path, TRICKY, canonicalize=False)
    x = task.encode(TRICKY)
    assert x.dtype == torch.long and (x[:, 0] == 2).all()
    assert (x != 1).all()  # every token is known
    assert task.decode(x) == TRICKY
    assert task.sentences("train") == TRICKY
    # canonical: the stored strings are RDKit canonical; decoding gives them back exactly
    canon = _task(tmp_path, TRICKY, name="c.csv")
    assert canon.sentences("train") == [_canon(s) for s in TRICKY]
    assert canon.decode(canon.encode(TRICKY)) == [_canon(s) for s in TRICKY]
    assert "[C@@H]" in canon.tokenizer.stoi and "%10" in canon.tokenizer.stoi
    # unknown tokens -> <unk>, dropped on decode
    x = canon.encode(["C[Se]C"])
    assert x[0].tolist() == [2, canon.tokenizer.stoi["C"], 1, canon.tokenizer.stoi["C"], 3]
    assert canon.decode(x) == ["CC"]


def test_selfies_roundtrip_same_molecule(tmp_path: Path) -> None:
    task = _task(tmp_path, TRICKY[:-1], representation="selfies")
    assert all(t.startswith("[") for t in task.tokenizer.itos[4:])
    decoded = task.decode(task.encode(TRICKY[:-1]))
    assert [_canon(s) for s in decoded] == [_canon(s) for s in TRICKY[:-1]]
    batch = task.batches("train", 4, seed=0, epoch=0, shuffle=False)
    assert [_canon(s) for b in batch for s in task.decode(b)] == task.sentences("train")
    # an undecodable id sequence decodes to "" (not an exception); specials are skipped
    assert task.decode([[2, 3]]) == [""]


def test_tokenizer_state_weights_only(tmp_path: Path) -> None:
    for rep in ("smiles", "selfies"):
        task = _task(tmp_path, TRICKY[:5], name=f"{rep}.csv", representation=rep)
        state = _roundtrip(task.state_dict())
        assert state == task.state_dict()
        restored = MoleculeTask(Config(train="nowhere.csv", representation=rep), None, state)
        assert restored.tokenizer.itos == task.tokenizer.itos
        x = task.encode(TRICKY[:5])
        assert torch.equal(restored.encode(TRICKY[:5]), x)
        assert restored.decode(x) == task.decode(x)
        assert restored.generator_kwargs() == task.generator_kwargs()
        assert task.generator_kwargs()["vocab_size"] == len(task.tokenizer.itos)
    with pytest.raises(ValueError, match="unknown molecule tokenizer kind"):
        MoleculeTask(Config(train="x.csv", representation="selfies"), None, state={})
    smiles_state = MoleculeTokenizer(["<pad>", "<unk>", "<bos>", "<eos>", "C"]).state_dict()
    with pytest.raises(ValueError, match="representation"):
        MoleculeTask(Config(train="x.csv", representation="selfies"), None, smiles_state)


# ----------------------------------------------------------------------------- files


def test_invalid_smiles_skipped_and_counted(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="skipped 3 invalid SMILES of 6 rows"):
        task = _task(tmp_path, ["CCO", "C1CC", "not_a_smiles", "c1ccccc1", "C(C", "N"])
    assert task.sentences("train") == ["CCO", "c1ccccc1", "N"]
    assert "skipped 3 invalid SMILES" in task.describe()
    assert canonical_smiles("C1CC") is None and canonical_smiles("OCC") == "CCO"


@pytest.mark.parametrize(
    ("name", "text", "column"),
    [
        ("a.csv", "id,smiles,logP\n1,OCC,0.1\n2,c1ccccc1,0.2\n3,N,0.3\n", None),
        ("a.csv.gz", "SMILES\nOCC\nc1ccccc1\nN\n", None),
        ("a.csv", 'name,mol\nx,"OCC\n"\ny,c1ccccc1\nz,N\n', "mol"),
        ("a.smi", "OCC ethanol\nc1ccccc1\tbenzene\n\nN\n", None),
        ("a.smi.gz", "smiles\nOCC\nc1ccccc1 x y\nN\n", None),
    ],
)
def test_file_formats(tmp_path: Path, name: str, text: str, column: str | None) -> None:
    _write(tmp_path / name, text)
    task = MoleculeTask(Config(train=name, column=column, n_jobs=1, cache=False), str(tmp_path))
    assert task.sentences("train") == ["CCO", "c1ccccc1", "N"]


def test_missing_column_error_names_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "id,mol\n1,CCO\n")
    with pytest.raises(MoleculeDataError) as info:
        MoleculeTask(Config(train=str(path), cache=False), None)
    message = str(info.value)
    assert str(path) in message and "'SMILES' or 'smiles'" in message and "id, mol" in message
    assert "\n" not in message
    with pytest.raises(MoleculeDataError, match="'structure'"):
        MoleculeTask(Config(train=str(path), column="structure", cache=False), None)
    with pytest.raises(MoleculeDataError, match="unsupported"):
        MoleculeTask(Config(train=str(_write(tmp_path / "x.sdf", "C\n")), cache=False), None)


def test_splits_lengths_and_batches(tmp_path: Path) -> None:
    smiles = [("C" * (1 + i % 12)) + "O" for i in range(60)]
    _write(tmp_path / "v.smi", "CCN\nCCCN\n")
    task = _task(tmp_path, smiles, valid="v.smi", max_length=10, max_molecules=50, min_freq=1)
    assert task.splits == ["train", "valid"]
    # first 50 rows, then the > 10 token ones dropped
    assert task.num_sentences("train") == sum(1 + i % 12 + 1 <= 10 for i in range(50))
    assert task._split("train").dropped_long == sum(1 + i % 12 + 1 > 10 for i in range(50))
    assert task.sentences("valid") == ["CCN", "CCCN"]
    assert task.encode(["CCN"])[0].tolist()[-1] == 3
    assert task.tokenizer.stoi.get("N", 1) == 1  # not in train: <unk>
    assert "dropped 12 long (> 10 tokens)" in task.describe()
    a = task.batches("train", 8, seed=3, epoch=1)
    b = task.batches("train", 8, seed=3, epoch=1)
    c = task.batches("train", 8, seed=3, epoch=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, c, strict=False))
    assert sum(len(x) for x in a) == task.num_sentences("train")
    decoded = sorted(s for x in a for s in task.decode(x))
    assert decoded == sorted(task.sentences("train"))
    ranks = [task.batches("train", 8, seed=3, epoch=1, rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(a) // 2
    ordered = task.batches("train", 8, seed=0, epoch=0, shuffle=False)
    assert [s for x in ordered for s in task.decode(x)] == task.sentences("train")
    assert task.num_target_tokens(ordered[0]) == int((ordered[0][:, 1:] != 0).sum())
    with pytest.raises(ValueError, match="not configured"):
        task.batches("test", 8, seed=0, epoch=0)
    with pytest.raises(ValueError):
        Config(train="x", valid="y", valid_fraction=0.1)
    with pytest.raises(ValueError):
        Config(train="x", test="y", held_out_index="z")


def test_cache_reused_and_invalidated(tmp_path: Path) -> None:
    smiles = [_canon("C" * (1 + i % 7) + "c1ccccc1" + "O" * (i % 3)) for i in range(3000)]
    path = _write(tmp_path / "data" / "m.csv", "smiles\n" + "\n".join(smiles) + "\n")
    cache = tmp_path / "cache"

    def load() -> tuple[MoleculeTask, float]:
        start = time.perf_counter()
        task = MoleculeTask(
            Config(train="m.csv", valid_fraction=0.1, cache_dir=str(cache), n_jobs=1),
            str(tmp_path / "data"),
        )
        return task, time.perf_counter() - start

    first, t_first = load()
    assert len(list(cache.glob("*.npz"))) == 1
    assert not first._files["m.csv"].from_cache
    second, t_second = load()
    assert second._files["m.csv"].from_cache and t_second < t_first
    assert second.tokenizer.itos == first.tokenizer.itos
    for split in ("train", "valid"):
        assert second.sentences(split) == first.sentences(split)
        x = first.batches(split, 16, seed=0, epoch=0)
        y = second.batches(split, 16, seed=0, epoch=0)
        assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    # a changed file is processed again (new key), with the new content
    _write(path, "smiles\n" + "\n".join(smiles[:100]) + "\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    third, _ = load()
    assert not third._files["m.csv"].from_cache
    assert third.num_sentences("train") + third.num_sentences("valid") == 100
    # the default location is under the data root; cache=False writes nothing
    MoleculeTask(Config(train="m.csv", n_jobs=1), str(tmp_path / "data"))
    assert list((tmp_path / "data" / ".cache" / "molecules").glob("m-smiles-*.npz"))
    before = sorted(cache.iterdir())
    MoleculeTask(Config(train="m.csv", cache=False, n_jobs=1), str(tmp_path / "data"))
    assert sorted(cache.iterdir()) == before


def test_cache_falls_back_to_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    _write(tmp_path / "data" / "m.smi", "CCO\nCCN\n")
    (tmp_path / "data" / ".cache").write_text("not a folder")  # the data root cache is unusable
    cfg = Config(train="m.smi", n_jobs=1)
    MoleculeTask(cfg, str(tmp_path / "data"))
    assert len(list((tmp_path / "user" / "latentebm" / "molecules").glob("m-smiles-*.npz"))) == 1
    again = MoleculeTask(cfg, str(tmp_path / "data"))
    assert again._files["m.smi"].from_cache and again.sentences("train") == ["CCO", "CCN"]
    outside = MoleculeTask(Config(train=str(tmp_path / "data" / "m.smi"), n_jobs=1), None)
    assert outside._files[str(tmp_path / "data" / "m.smi")].from_cache


def test_parallel_processing_matches_serial(tmp_path: Path) -> None:
    import latentebm.tasks.molecule_files as molecule_files

    smiles = [("C" * (1 + i % 9)) + ("N" if i % 2 else "O") for i in range(250)] + ["bad("]
    old = molecule_files.CHUNK_ROWS
    molecule_files.CHUNK_ROWS = 40  # several chunks over two processes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            serial = _task(tmp_path, smiles, n_jobs=1)
            parallel = _task(tmp_path, smiles, name="p.csv", n_jobs=2)
    finally:
        molecule_files.CHUNK_ROWS = old
    assert parallel.sentences("train") == serial.sentences("train")
    assert parallel.tokenizer.itos == serial.tokenizer.itos
    assert np.array_equal(parallel._split("train").ids, serial._split("train").ids)
    assert parallel._files["p.csv"].n_invalid == 1
    assert parallel._split("train").ids.dtype == np.int16


# ----------------------------------------------------------------------------- QM9 builtin


@pytest.fixture(scope="module")
def qm9_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qm9cache")


@pytest.mark.slow
def test_qm9_builtin_splits(qm9_cache: Path) -> None:
    from latentebm.data import resolve_data_path

    cfg = {
        "train": "builtin:qm9_smiles.csv.gz",
        "held_out_index": "builtin:valid_idx_qm9.json",
        "cache_dir": str(qm9_cache),
    }
    task = MoleculeTask(Config(**cfg, valid_fraction=0.05), None)
    sizes = {s: task.num_sentences(s) for s in task.splits}
    assert sizes == {"train": 114_763, "valid": 6_040, "test": 13_082}
    assert sizes["train"] + sizes["valid"] == 120_803
    assert task.max_sequence_length("train") <= 40  # recipes/qm9.yaml max_decode_length
    # index convention: base 1 (default) -> id i is row i - 1 counting from 0
    with gzip.open(resolve_data_path(cfg["train"], None), "rt") as f:
        rows = [line.strip() for line in f][1:]
    with open(resolve_data_path(cfg["held_out_index"], None)) as f:
        ids = [int(i) for i in json.load(f)["valid_idxs"]]
    test = task.sentences("test")
    assert test[0] == _canon(rows[min(ids) - 1])
    zero = MoleculeTask(Config(**cfg, held_out_index_base=0), None)
    assert zero.num_sentences("test") == 13_082 and zero.num_sentences("train") == 120_803
    assert zero.sentences("test")[0] == _canon(rows[min(ids)])
    assert len(zero.train_smiles()) == 120_803
    assert "molecules: train 114763 / valid 6040 / test 13082" in task.describe()


# ----------------------------------------------------------------------------- recipes, training


NEW_RECIPES = ("qm9", "qm9_selfies", "moses", "moses_selfies", "zinc250k", "zinc250k_selfies")


def test_molecule_recipes_load_and_cat(capsys: pytest.CaptureFixture[str]) -> None:
    from latentebm.cli import builtin_recipes, main
    from latentebm.config import load_recipe

    recipes = builtin_recipes()
    for name in NEW_RECIPES:
        recipe = load_recipe(recipes[name])
        assert recipe.name == name
        assert recipe.task.args.representation == (
            "selfies" if name.endswith("selfies") else "smiles"
        )
        gen = recipe.model.generator.args
        if not name.startswith("qm9"):
            assert (gen.embedding_dim, gen.hidden_dim, recipe.model.z_dim) == (512, 1024, 100)
        assert tuple(recipe.model.prior.hidden_dims) == (200, 200)
        assert (recipe.model.prior_chain.n_steps, recipe.model.prior_chain.step_size) == (60, 0.4)
        assert (recipe.model.posterior_chain.n_steps, recipe.model.posterior_chain.step_size) == (
            20,
            0.1,
        )
    assert main(["cat", "qm9"]) == 0
    out = capsys.readouterr().out
    assert "name: qm9" in out and "latentebm.tasks.molecules.MoleculeTask" in out


def test_no_valid_molecules_is_an_error(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MoleculeDataError, match="no valid training molecules"):
            _task(tmp_path, ["C1CC", "xyz"])


# ----------------------------------------------------------------------------- your own file

# 40 distinct valid molecules, already RDKit canonical (so the stored strings equal these)
OWN = [_canon(("C" * k) + tail) for k in range(1, 11) for tail in ("O", "N", "Cl", "C=O")]

TINY_RUN = [
    "model.z_dim=4",
    "model.prior.hidden_dims=[8,8]",
    "model.generator.embedding_dim=8",
    "model.generator.hidden_dim=16",
    "model.prior_chain.n_steps=3",
    "model.posterior_chain.n_steps=2",
    "trainer.max_steps=2",
    "trainer.batch_size=8",
    "trainer.log_every=1",
    "trainer.valid_every=2",
    "trainer.valid_batches=1",
    "trainer.checkpoint_every=2",
    "trainer.samples_at_end=2",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "task.n_jobs=1",
    "device=cpu",
]


def test_molecule_file_recipe_loads(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from latentebm.cli import main

    assert main(["cat", "molecule_file", "task.train=x.smi"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["name"] == "molecule_file"
    task = resolved["task"]
    assert task["_component_"] == "latentebm.tasks.molecules.MoleculeTask"
    assert (task["train"], task["valid"], task["test"]) == ("x.smi", None, None)
    assert (task["held_out_index"], task["valid_fraction"], task["column"]) == (None, 0.05, None)
    assert main(["cat", "molecule_file"]) == 2  # task.train is required
    assert "molecule_file.yaml: task.train: missing required key" in capsys.readouterr().err
    # with a validation file of one's own, the recipe's valid_fraction is turned off
    assert main(["cat", "molecule_file", "task.train=x.smi", "task.valid=v.smi"]) == 2
    assert "with your own task.valid, set task.valid_fraction=0" in capsys.readouterr().err
    args = ["cat", "molecule_file", "task.train=x.smi", "task.valid=v.smi"]
    assert main([*args, "task.valid_fraction=0"]) == 0


@pytest.mark.parametrize(
    ("name", "text", "column"),
    [
        ("own.smi", "".join(f"{s} mol{i}\n" for i, s in enumerate(OWN)), None),
        (
            "own.csv",
            "id,Molecule,logP\n" + "".join(f"{i},{s},0.5\n" for i, s in enumerate(OWN)),
            "Molecule",
        ),
    ],
)
def test_molecule_file_trains_end_to_end(
    tmp_path: Path, name: str, text: str, column: str | None
) -> None:
    from latentebm.cli import main

    path = _write(tmp_path / name, text)
    run = tmp_path / "run"
    items = [f"task.train={path}", f"task.cache_dir={tmp_path / 'cache'}", f"trainer.run_dir={run}"]
    if column is not None:
        items.append(f"task.column={column}")
    assert main(["train", "molecule_file", *items, *TINY_RUN]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "recon_nll" in r] == [1, 2]
    assert any("valid_recon_nll" in r for r in rows)
    config = (run / "config.yaml").read_text()
    assert "valid_fraction: 0.05" in config and f"train: {path}" in config


def test_molecule_file_split_is_fixed(tmp_path: Path) -> None:
    from latentebm.config import instantiate, load_recipe

    _write(tmp_path / "own.smi", "".join(s + "\n" for s in OWN))
    _write(tmp_path / "own.csv", "n,SMILES\n" + "".join(f"{i},{s}\n" for i, s in enumerate(OWN)))
    splits = []
    for name, seed in (("own.smi", 1), ("own.smi", 7), ("own.csv", 1)):
        recipe = load_recipe(
            Path(__file__).resolve().parents[1] / "recipes" / "molecule_file.yaml",
            [f"task.train={name}", "task.cache=false", "task.n_jobs=1", f"seed={seed}"],
        )
        task = instantiate(recipe.task, data_root=str(tmp_path))
        assert task.splits == ["train", "valid"]
        splits.append((task.sentences("train"), task.sentences("valid")))
    # the same split whatever the run's seed and the file format
    assert splits[0] == splits[1] == splits[2]
    train, valid = splits[0]
    # round(40 * 0.05) = 2 held out: rows perm[:2] of the seed-0 permutation, in file order
    held = sorted(np.random.default_rng(0).permutation(40)[:2].tolist())
    assert valid == [OWN[i] for i in held]
    assert train == [s for i, s in enumerate(OWN) if i not in held]


@pytest.mark.parametrize(
    ("ids", "base", "bad", "first", "last"),
    [([2, 9], 1, 9, 1, 5), ([0, 5], 0, 5, 0, 4), ([0, 3], 1, 0, 1, 5)],
)
def test_held_out_index_of_another_file_is_one_clear_line(
    tmp_path: Path, ids: list[int], base: int, bad: int, first: int, last: int
) -> None:
    _write(tmp_path / "five.smi", "CCO\nCCN\nCCC\nCCCl\nCC=O\n")
    (tmp_path / "index.json").write_text(json.dumps({"valid_idxs": ids}))
    config = Config(
        train="five.smi",
        held_out_index="index.json",
        held_out_index_base=base,
        cache=False,
        n_jobs=1,
    )
    with pytest.raises(MoleculeDataError) as info:
        MoleculeTask(config, str(tmp_path))
    assert str(info.value) == (
        f"task.held_out_index: ids out of range for task.train five.smi: index.json has id "
        f"{bad} but the 5 rows of that file take ids {first}..{last} (held_out_index_base "
        f"{base}); the index belongs to another data file (recipes/qm9.yaml's is the QM9 test "
        "split), so for your own data set task.held_out_index=null (and task.test=FILE for a "
        "test split)"
    )


def test_qm9_recipe_on_your_own_file_says_to_drop_the_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentebm.cli import main

    path = _write(tmp_path / "own.smi", "".join(s + "\n" for s in OWN))
    items = [f"task.train={path}", "task.cache=false", f"trainer.run_dir={tmp_path / 'run'}"]
    assert main(["train", "qm9", *items, *TINY_RUN]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [  # not INFO lines, nor the line training starts with
        line
        for line in err.splitlines()
        if line.startswith("latentebm:") and not line.startswith("latentebm: training ")
    ]
    assert len(lines) == 1
    assert lines[0].startswith(
        f"latentebm: error: task.held_out_index: ids out of range for task.train {path}: "
        "builtin:valid_idx_qm9.json has id "
    )
    assert "the 40 rows of that file take ids 1..40" in lines[0]
    assert lines[0].endswith("set task.held_out_index=null (and task.test=FILE for a test split)")
    assert not (tmp_path / "run").exists()
    # as suggested: the QM9 recipe's model on your own file
    items[-1] = f"trainer.run_dir={tmp_path / 'run2'}"
    assert main(["train", "qm9", *items, *TINY_RUN, "task.held_out_index=null"]) == 0
