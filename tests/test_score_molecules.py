"""``latentebm score-molecules FILE``: the molecule metrics of any SMILES file, and the reader
behind it (hand-computed cases; the MOSES suite on real reference data where it is present)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from latentebm.cli import main
from latentebm.metrics.molecules import read_generated_smiles

# six samples: CCO twice, benzene (with a name after it), a blank line (an empty sample), an
# unparsable string, acetic acid
SAMPLES = "CCO\nc1ccccc1 benzene\n\nnot_a_smiles\nCCO\nCC(=O)O\n"


def test_reader_keeps_every_row_as_one_sample(tmp_path: Path) -> None:
    smi = tmp_path / "gen.smi"
    smi.write_text("SMILES\n" + SAMPLES, encoding="utf-8")
    expected = ["CCO", "c1ccccc1", "", "not_a_smiles", "CCO", "CC(=O)O"]
    assert read_generated_smiles(smi) == expected
    packed = tmp_path / "gen.smi.gz"
    packed.write_bytes(gzip.compress(SAMPLES.encode()))
    assert read_generated_smiles(packed) == expected
    csv = tmp_path / "gen.csv"
    csv.write_text("id,Smiles\n1,CCO\n2,\n3,c1ccccc1\n", encoding="utf-8")
    assert read_generated_smiles(csv) == ["CCO", "", "c1ccccc1"]  # 'smiles' in any case
    assert read_generated_smiles(csv, "id") == ["1", "2", "3"]
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("id,smiles\n1,CCO\n\n2,C\n\n", encoding="utf-8")
    assert read_generated_smiles(spaced) == ["CCO", "C"]  # blank lines are no rows here
    # one column: an empty SMILES is an empty line; a byte-order mark is not part of the header
    single = tmp_path / "single.csv"
    single.write_text("\ufeffsmiles\nCCO\n\nC1CC1\n", encoding="utf-8")
    assert read_generated_smiles(single) == ["CCO", "", "C1CC1"]
    assert read_generated_smiles(single, "smiles") == ["CCO", "", "C1CC1"]
    named = tmp_path / "named.smi"
    named.write_text("\ufeffSMILES\tName\nCCO\tethanol\n", encoding="utf-8")
    assert read_generated_smiles(named) == ["CCO"]  # a two-field header line


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    csv = tmp_path / "gen.csv"
    csv.write_text("id,smiles\n1,CCO\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"gen.csv has no column 'SMILES' \(columns: id, smiles\)"):
        read_generated_smiles(csv, "SMILES")
    other = tmp_path / "gen.sdf"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="gen.sdf: unknown molecule file type"):
        read_generated_smiles(other)
    smi = tmp_path / "gen.smi"
    smi.write_text("CCO\n", encoding="utf-8")
    with pytest.raises(ValueError, match="gen.smi: a column is named"):
        read_generated_smiles(smi, "smiles")


def test_score_molecules_qm9_table_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = tmp_path / "gen.smi"
    gen.write_text(SAMPLES, encoding="utf-8")
    train = tmp_path / "train.smi"
    train.write_text("OCC\n", encoding="utf-8")  # ethanol, spelled otherwise
    out = tmp_path / "scores.json"
    args = ["score-molecules", str(gen), "--metrics", "molecules", "--n-jobs", "1"]
    assert main([*args, "--train", str(train), "-o", str(out)]) == 0
    scores = json.loads(out.read_text())["molecules"]
    assert scores["n_samples"] == 6 and scores["n_valid"] == 4  # blank and garbage invalid
    assert scores["validity"] == pytest.approx(4 / 6)
    assert scores["uniqueness"] == pytest.approx(3 / 4)  # CCO, benzene, acetic acid
    assert scores["novelty"] == pytest.approx(2 / 3)  # ethanol is in train
    assert scores["novelty_valid"] == pytest.approx(2 / 4)
    assert "validity" in capsys.readouterr().out
    # the scores are never overwritten silently; without --train no novelty is reported
    assert main([*args, "-o", str(out)]) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
    assert main([*args, "-o", str(out), "--force"]) == 0
    assert "novelty" not in json.loads(out.read_text())["molecules"]
    assert main(["score-molecules", str(gen), "--metrics", "qed"]) == 2
    assert "--metrics: unknown qed" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.real_data
def test_score_molecules_moses_suite_on_real_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(os.environ.get("LATENTEBM_DATA", "")) / "moses"
    needed = ["test.csv.gz", "test_scaffolds.csv.gz", "fcd_ref_stats.npz", "mcf.csv"]
    missing = [name for name in needed if not (root / name).is_file()]
    if not os.environ.get("LATENTEBM_DATA") or missing:
        pytest.skip(f"MOSES files not under $LATENTEBM_DATA/moses: {missing or needed}")
    gen = tmp_path / "gen.smi"
    gen.write_text(SAMPLES, encoding="utf-8")
    out = tmp_path / "scores.json"
    code = main(
        [
            "score-molecules",
            str(gen),
            "--reference-molecules",
            "300",
            "--n-jobs",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
            "-o",
            str(out),
        ]
    )
    assert code == 0
    moses = json.loads(out.read_text())["moses"]
    assert moses["valid"] == pytest.approx(4 / 6) and moses["unique@1000"] == pytest.approx(3 / 4)
    assert "Novelty" not in moses  # no --train
    assert moses["Filters"] == pytest.approx(1.0) and moses["FCD/Test"] > 0
    assert moses["reference"]["sets_n"]["Test"]["used"] == 300
    assert "[moses-ref]" in capsys.readouterr().err  # the reference build says what it does


def test_a_missing_chemistry_package_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    gen = tmp_path / "gen.smi"
    gen.write_text(SAMPLES, encoding="utf-8")
    monkeypatch.setitem(sys.modules, "rdkit", None)  # import rdkit now raises ImportError
    assert main(["score-molecules", str(gen), "--metrics", "molecules"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs rdkit" in err[0] and "latentebm[mol]" in err[0]
