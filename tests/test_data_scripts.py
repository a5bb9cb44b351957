"""Tests for data_scripts/ptb.py (never downloads)."""

import gzip
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "data_scripts" / "ptb.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ptb_data_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ptb() -> ModuleType:
    return _load_script()


def _synthetic(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    src.mkdir()
    data = {
        "train": b" the cat sat on the mat \n a <unk> dog \n",
        "valid": b" the dog sat \n",
        "test": b" a cat \n",
    }
    for split, text in data.items():
        (src / f"ptb.{split}.txt").write_bytes(text)
    return src, data


def test_tampered_source_fails(tmp_path: Path, ptb: ModuleType, capsys) -> None:
    src, _ = _synthetic(tmp_path)
    out = tmp_path / "out"
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "ptb.train.txt" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_tampered_source_exit_code_cli(tmp_path: Path) -> None:
    src, _ = _synthetic(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--source", str(src), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "error: checksum mismatch" in proc.stderr


def test_write_gz_and_refuse_overwrite(
    tmp_path: Path, ptb: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, data = _synthetic(tmp_path)
    monkeypatch.setattr(
        ptb, "EXPECTED_MD5", {s: hashlib.md5(b).hexdigest() for s, b in data.items()}
    )
    # gz sources are accepted too
    gz_src = tmp_path / "gzsrc"
    gz_src.mkdir()
    for split, text in data.items():
        (gz_src / f"ptb.{split}.txt.gz").write_bytes(gzip.compress(text))
    out = tmp_path / "out"
    assert ptb.main(["--source", str(gz_src), "--out", str(out)]) == 0
    for split, text in data.items():
        raw = (out / f"ptb.{split}.txt.gz").read_bytes()
        assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        assert gzip.decompress(raw) == text
    before = (out / "ptb.train.txt.gz").read_bytes()
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0  # same content: ok
    assert (out / "ptb.train.txt.gz").read_bytes() == before

    (out / "ptb.valid.txt.gz").write_bytes(gzip.compress(b"something else\n"))
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 1
    assert gzip.decompress((out / "ptb.valid.txt.gz").read_bytes()) == b"something else\n"


def test_missing_source_file(tmp_path: Path, ptb: ModuleType, capsys) -> None:
    src, _ = _synthetic(tmp_path)
    (src / "ptb.test.txt").unlink()
    assert ptb.main(["--source", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "ptb.test.txt" in capsys.readouterr().err


@pytest.mark.real_data
def test_real_ptb_source(tmp_path: Path, ptb: ModuleType) -> None:
    root = os.environ.get("LATENTEBM_DATA")
    if not root:
        pytest.skip("LATENTEBM_DATA is not set; real PTB files unavailable")
    src = Path(root) / "ptb"
    if not all((src / f"ptb.{s}.txt.gz").is_file() for s in ("train", "valid", "test")):
        pytest.skip(f"PTB files ptb.{{train,valid,test}}.txt.gz not found in {src}")
    out = tmp_path / "ptb"
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0
    for split in ("train", "valid", "test"):
        text = gzip.decompress((out / f"ptb.{split}.txt.gz").read_bytes())
        assert hashlib.md5(text).hexdigest() == ptb.EXPECTED_MD5[split]
    # Re-running over identical output is a no-op.
    assert ptb.main(["--source", str(src), "--out", str(out)]) == 0


# ----------------------------------------------------------------------------- snli.py / yahoo.py


def _load(name: str) -> ModuleType:
    path = REPO / "data_scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_data_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def snli() -> ModuleType:
    return _load("snli")


@pytest.fixture
def yahoo() -> ModuleType:
    return _load("yahoo")


def _bparse(sentence: str) -> str:
    """A (flat) SNLI-style binary parse of a whitespace-tokenized sentence."""
    return "( " + " ".join(f"( {w} )" for w in sentence.split()) + " )"


def _pair(label: str, s1: str, s2: str) -> dict[str, object]:
    """One SNLI 1.0 jsonl record with the release's field names (parses from the token lists)."""
    return {
        "annotator_labels": [label],
        "captionID": "1.jpg#0",
        "gold_label": label,
        "pairID": "1.jpg#0r1n",
        "sentence1": s1.replace(" .", ".").replace(" ,", ","),
        "sentence1_binary_parse": _bparse(s1),
        "sentence1_parse": "(ROOT (S))",
        "sentence2": s2.replace(" .", "."),
        "sentence2_binary_parse": _bparse(s2),
        "sentence2_parse": "(ROOT (S))",
    }


SNLI_PAIRS = {
    "train": [
        _pair("neutral", "A Man , riding a horse .", "The man is outside ."),
        _pair("contradiction", "A Man , riding a horse .", "Nobody rides ."),
        _pair("-", "A Man , riding a horse .", "A horse jumps ."),
        _pair("entailment", "Two dogs play .", "Animals play ."),
    ],
    "dev": [
        _pair("-", "Kids eat .", "Children eat ."),
        _pair("neutral", "Kids eat .", "Kids ate ."),
    ],
    "test": [_pair("entailment", "A cat sleeps .", "A cat is n't awake .")],
}


def _snli_zip(tmp_path: Path) -> Path:
    import json
    import zipfile

    path = tmp_path / "snli_1.0.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("snli_1.0/", "")
        for split, pairs in SNLI_PAIRS.items():
            text = "".join(json.dumps(p) + "\n" for p in pairs)
            zf.writestr(f"snli_1.0/snli_1.0_{split}.jsonl", text)
            zf.writestr(f"__MACOSX/snli_1.0/._snli_1.0_{split}.jsonl", b"\0junk")
    return path


def _snli_counts(snli: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snli, "EXPECTED_PAIRS", {"train": 4, "valid": 2, "test": 1})


def _gz_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    return gzip.decompress(raw).decode("utf-8").splitlines()


def test_snli_from_zip(tmp_path: Path, snli: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    _snli_counts(snli, monkeypatch)
    out = tmp_path / "snli"
    assert snli.main(["--source", str(_snli_zip(tmp_path)), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "snli.test.txt.gz",
        "snli.train.txt.gz",
        "snli.valid.txt.gz",
    ]
    # premises (repeats removed) then hypotheses; '-' rows kept; parse tokens; lower-cased
    assert _gz_lines(out / "snli.train.txt.gz") == [
        "a man , riding a horse .",
        "two dogs play .",
        "the man is outside .",
        "nobody rides .",
        "a horse jumps .",
        "animals play .",
    ]
    assert _gz_lines(out / "snli.valid.txt.gz") == ["kids eat .", "children eat .", "kids ate ."]
    assert _gz_lines(out / "snli.test.txt.gz") == ["a cat sleeps .", "a cat is n't awake ."]


def test_snli_drop_unlabeled_and_folder_source(
    tmp_path: Path, snli: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    _snli_counts(snli, monkeypatch)
    src = tmp_path / "extracted" / "snli_1.0"
    src.mkdir(parents=True)
    for split, pairs in SNLI_PAIRS.items():
        text = "".join(json.dumps(p) + "\n" for p in pairs)
        (src / f"snli_1.0_{split}.jsonl").write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert snli.main(["--source", str(src.parent), "--out", str(out), "--drop-unlabeled"]) == 0
    train = _gz_lines(out / "snli.train.txt.gz")
    assert "a horse jumps ." not in train and len(train) == 5
    assert _gz_lines(out / "snli.valid.txt.gz") == ["kids eat .", "kids ate ."]


def test_snli_tsv_and_fallback_tokenizer(
    tmp_path: Path, snli: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snli, "EXPECTED_PAIRS", {"train": 1, "valid": 1, "test": 1})
    header = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1\tsentence2"
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "dev", "test"):
        row = "neutral\t( ( A dog ) runs )\t\tA dog runs.\tIt's a dog, isn't it?"
        (src / f"snli_1.0_{split}.txt").write_text(f"{header}\n{row}\n", encoding="utf-8")
    out = tmp_path / "out"
    assert snli.main(["--source", str(src), "--out", str(out)]) == 0
    # sentence2 has no parse here: the regular-expression tokenizer is used
    assert _gz_lines(out / "snli.test.txt.gz") == ["a dog runs", "it's a dog , isn't it ?"]
    assert snli.simple_tokenize("Mr. Smith's well-known 3.5 hats.") == [
        "Mr",
        ".",
        "Smith's",
        "well-known",
        "3.5",
        "hats",
        ".",
    ]


def test_snli_count_check_and_refuse_overwrite(
    tmp_path: Path, snli: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    zip_path = _snli_zip(tmp_path)
    out = tmp_path / "out"
    assert snli.main(["--source", str(zip_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "count mismatch" in err and "550152" in err and "--skip-count-check" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert snli.main(["--source", str(zip_path), "--out", str(out), "--skip-count-check"]) == 0

    _snli_counts(snli, monkeypatch)
    before = (out / "snli.train.txt.gz").read_bytes()
    assert snli.main(["--source", str(zip_path), "--out", str(out)]) == 0  # same content: ok
    assert (out / "snli.train.txt.gz").read_bytes() == before
    (out / "snli.test.txt.gz").write_bytes(gzip.compress(b"mine\n"))
    capsys.readouterr()
    assert snli.main(["--source", str(zip_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "snli.test.txt.gz" in err
    assert gzip.decompress((out / "snli.test.txt.gz").read_bytes()) == b"mine\n"


def test_snli_bad_sources(tmp_path: Path, snli: ModuleType, capsys) -> None:
    import zipfile

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    assert snli.main(["--source", str(empty), "--out", str(tmp_path / "o")]) == 1
    assert "lacks snli_1.0_train.jsonl" in capsys.readouterr().err
    assert snli.main(["--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    d = tmp_path / "d"
    d.mkdir()
    (d / "snli_1.0_train.jsonl").write_text("", encoding="utf-8")
    assert snli.main(["--source", str(d), "--out", str(tmp_path / "o")]) == 1
    assert "snli_1.0_dev.jsonl" in capsys.readouterr().err
    for split in ("dev", "test"):
        (d / f"snli_1.0_{split}.jsonl").write_text("", encoding="utf-8")
    (d / "snli_1.0_train.jsonl").write_text("{not json\n", encoding="utf-8")
    assert snli.main(["--source", str(d), "--out", str(tmp_path / "o")]) == 1
    assert "line 1: not JSON" in capsys.readouterr().err


YAHOO_DOCS = {
    "train": [
        "what is  the best way to learn ?  practice every _UNK day .",
        "",
        "how do i cook rice",
    ],
    "valid": ["why is the sky blue ?"],
    "test": ["\twhere can i buy a _UNK ?  "],
}


def _yahoo_dir(tmp_path: Path) -> Path:
    src = tmp_path / "yahoo_src" / "yahoo_data"
    src.mkdir(parents=True)
    for split, docs in YAHOO_DOCS.items():
        text = "".join(d + "\n" for d in docs).encode("utf-8")
        if split == "valid":  # a gz source file too
            (src / f"yahoo.{split}.txt.gz").write_bytes(gzip.compress(text))
        else:
            (src / f"yahoo.{split}.txt").write_bytes(text)
    return src.parent


def test_yahoo_folder_and_archive(
    tmp_path: Path, yahoo: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarfile

    monkeypatch.setattr(yahoo, "EXPECTED_DOCS", {"train": 2, "valid": 1, "test": 1})
    src = _yahoo_dir(tmp_path)
    out = tmp_path / "yahoo"
    assert yahoo.main(["--source", str(src), "--out", str(out)]) == 0
    assert _gz_lines(out / "yahoo.train.txt.gz") == [
        "what is the best way to learn ? practice every <unk> day .",
        "how do i cook rice",
    ]
    assert _gz_lines(out / "yahoo.valid.txt.gz") == ["why is the sky blue ?"]
    assert _gz_lines(out / "yahoo.test.txt.gz") == ["where can i buy a <unk> ?"]

    tgz = tmp_path / "yahoo.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src / "yahoo_data", arcname="data/yahoo")
    out2 = tmp_path / "yahoo2"
    assert yahoo.main(["--source", str(tgz), "--out", str(out2), "--unk-token", ""]) == 0
    assert _gz_lines(out2 / "yahoo.test.txt.gz") == ["where can i buy a _UNK ?"]
    assert (out2 / "yahoo.train.txt.gz").read_bytes() != (out / "yahoo.train.txt.gz").read_bytes()


def test_yahoo_checks_and_refuse_overwrite(
    tmp_path: Path, yahoo: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    src = _yahoo_dir(tmp_path)
    out = tmp_path / "out"
    assert yahoo.main(["--source", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "count mismatch" in err and "100000" in err and not out.exists()
    monkeypatch.setattr(yahoo, "EXPECTED_DOCS", {"train": 2, "valid": 1, "test": 1})
    assert yahoo.main(["--source", str(src), "--out", str(out)]) == 0
    assert yahoo.main(["--source", str(src), "--out", str(out)]) == 0  # same content: ok
    (out / "yahoo.valid.txt.gz").write_bytes(gzip.compress(b"other\n"))
    capsys.readouterr()
    assert yahoo.main(["--source", str(src), "--out", str(out)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert gzip.decompress((out / "yahoo.valid.txt.gz").read_bytes()) == b"other\n"

    # the splits a user has: without test and valid, train alone is written, with a note each
    (src / "yahoo_data" / "yahoo.test.txt").unlink()
    (src / "yahoo_data" / "yahoo.valid.txt.gz").unlink()
    assert yahoo.main(["--source", str(src), "--out", str(tmp_path / "o2")]) == 0
    err = capsys.readouterr().err
    assert "has no yahoo.valid.txt; run recipes/yahoo.yaml with task.valid=null" in err
    assert "has no yahoo.test.txt; run recipes/yahoo.yaml with task.test=null" in err
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["yahoo.train.txt.gz"]
    (src / "yahoo_data" / "yahoo.train.txt").unlink()
    assert yahoo.main(["--source", str(src), "--out", str(tmp_path / "o3")]) == 1
    assert "yahoo.train.txt or yahoo.train.txt.gz not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --source is required (no authoritative download URL)
        yahoo.main(["--out", str(tmp_path / "o4")])


def test_new_scripts_cli_exit_code(tmp_path: Path) -> None:
    for name in ("snli", "yahoo"):
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "data_scripts" / f"{name}.py"),
                "--source",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "out"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert proc.stderr.strip() == f"error: source {tmp_path / 'missing'} does not exist"


# ----------------------------------------------------------------------------- zinc250k.py


@pytest.fixture
def zinc() -> ModuleType:
    return _load("zinc250k")


_ZINC_SMILES = [
    "CC(C)(C)c1ccc2occ(CC(=O)Nc3ccccc3F)c2c1",
    "C[C@@H]1CC(Nc2cncc(-c3nncn3C)c2)C[C@@H](C)C1",
    "N#Cc1ccc(-c2ccc(O[C@@H](C(=O)N3CCCC3)c3ccccc3)cc2)cc1",
    "CCOC(=O)[C@@H]1CCCN(C(=O)c2nc(-c3ccc(C)cc3)n3c2CCCCC3)C1",
    "Clc1ccc(Br)cc1C(=O)Nc1ccc([N+](=O)[O-])cc1",
]


def _zinc_csv(tmp_path: Path, n: int = 30) -> tuple[Path, list[str]]:
    """A file in the chemical_vae format: quoted SMILES ending with a newline inside the quotes."""
    smiles = [
        _ZINC_SMILES[i % len(_ZINC_SMILES)] + "C" * (i // len(_ZINC_SMILES)) for i in range(n)
    ]
    lines = ["smiles,logP,qed,SAS"]
    lines += [f'"{s}\n",{i * 0.5:.3f},0.{i:03d},{2 + i / 100:.3f}' for i, s in enumerate(smiles)]
    path = tmp_path / "250k_rndm_zinc_drugs_clean_3.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, smiles


def _zinc_rows(path: Path) -> list[list[str]]:
    import csv

    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_zinc250k_from_source_with_quoted_newlines(
    tmp_path: Path, zinc: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, smiles = _zinc_csv(tmp_path)
    monkeypatch.setattr(zinc, "N_VALID", 5)
    monkeypatch.setattr(zinc, "N_TEST", 4)
    out = tmp_path / "out"
    assert zinc.main(["--source", str(src), "--out", str(out), "--skip-count-check"]) == 0
    full = _zinc_rows(out / "zinc250k.csv.gz")
    assert full[0] == ["smiles", "logP", "qed", "SAS"]
    assert [r[0] for r in full[1:]] == smiles  # stripped of the quoted trailing newline
    assert full[2][1:] == ["0.500", "0.001", "2.010"]
    parts = {s: _zinc_rows(out / f"{s}.csv.gz")[1:] for s in ("train", "valid", "test")}
    assert [len(parts[s]) for s in ("train", "valid", "test")] == [21, 5, 4]
    together = [r[0] for s in ("train", "valid", "test") for r in parts[s]]
    assert sorted(together) == sorted(smiles)  # a partition
    for rows in parts.values():  # source order kept within each split
        positions = [smiles.index(r[0]) for r in rows]
        assert positions == sorted(positions)
    # deterministic: a second run finds identical files; a .gz source gives the same output
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    gz_src = tmp_path / "src.csv.gz"
    gz_src.write_bytes(gzip.compress(src.read_bytes()))
    assert zinc.main(["--source", str(gz_src), "--out", str(out), "--skip-count-check"]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    # the molecule task reads the result
    pytest.importorskip("rdkit")
    from latentebm.tasks.molecules import MoleculeTask

    task = MoleculeTask(
        MoleculeTask.Config(
            train="train.csv.gz", valid="valid.csv.gz", test="test.csv.gz", cache=False, n_jobs=1
        ),
        str(out),
    )
    assert [task.num_sentences(s) for s in ("train", "valid", "test")] == [21, 5, 4]


def test_zinc250k_refuses_overwrite_and_checks(
    tmp_path: Path,
    zinc: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(zinc, "N_VALID", 5)
    monkeypatch.setattr(zinc, "N_TEST", 5)
    src, _ = _zinc_csv(tmp_path, n=40)
    out = tmp_path / "out"
    # the row count is checked
    assert zinc.main(["--source", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "40 molecules, expected 249455" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    out.mkdir()
    (out / "test.csv.gz").write_bytes(gzip.compress(b"something else\n"))
    assert zinc.main(["--source", str(src), "--out", str(out), "--skip-count-check"]) == 1
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "test.csv.gz" in err
    assert sorted(p.name for p in out.iterdir()) == ["test.csv.gz"]  # nothing written
    # bad sources: missing file, missing column
    assert zinc.main(["--source", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("SMILE,logP\nCCO,1.0\n", encoding="utf-8")
    assert zinc.main(["--source", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "smiles" in err


def test_zinc250k_split_sizes(zinc: ModuleType) -> None:
    splits = zinc.split_indices(zinc.EXPECTED_ROWS)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [229_455, 10_000, 10_000]
    assert splits == zinc.split_indices(zinc.EXPECTED_ROWS)
    proc = subprocess.run(
        [sys.executable, str(REPO / "data_scripts" / "zinc250k.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "--source" in proc.stdout
