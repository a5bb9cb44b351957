"""``data_scripts/moses.py``: the MOSES files checked against MOSES 0.3.1's checksums, and the
FCD reference statistics accumulated over chunks equal to those of all activations at once."""

from __future__ import annotations

import gzip
import importlib.util
import os
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "moses.py"
MOLECULES = [
    "CCO", "c1ccccc1", "CC(=O)O", "CCN(CC)CC", "c1ccncc1", "CC(C)O", "OC1CCCCC1", "CCOC(=O)C",
    "Cc1ccccc1", "Nc1ccccc1", "CC#N", "C1CCNCC1", "O=C(O)c1ccccc1", "CCCCO", "COc1ccccc1",
    "CC(N)C(=O)O", "c1ccc2ccccc2c1", "CCS", "ClCCl", "CC(C)(C)O", "C=CC=C", "OCCO",
]  # fmt: skip


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("moses_data_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def moses() -> ModuleType:
    return _load()


def _fake_source(folder: Path, molecules: list[str]) -> Path:
    folder.mkdir(parents=True)
    for stem in ("train", "test", "test_scaffolds"):
        text = "SMILES\n" + "".join(f"{m}\n" for m in molecules)
        (folder / f"{stem}.csv.gz").write_bytes(gzip.compress(text.encode()))
    (folder / "mcf.csv").write_text("names,smarts\nthiol,[SH]\n", encoding="utf-8")
    (folder / "wehi_pains.csv").write_text('"[N+]=[N-]",azide\n', encoding="utf-8")
    return folder


def test_files_that_are_not_moses_are_refused_unless_accepted(
    tmp_path: Path, moses: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _fake_source(tmp_path / "src", MOLECULES)
    out = tmp_path / "data" / "moses"
    assert moses.main(["--out", str(out), "--source", str(source), "--no-fcd"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ")
    assert "test.csv.gz differs from MOSES 0.3.1's (22 rows, expected 176,074)" in error
    assert not out.exists()  # nothing written before the check
    args = ["--out", str(out), "--source", str(source), "--no-fcd", "--skip-count-check"]
    assert moses.main(args) == 0
    assert gzip.decompress((out / "test.csv.gz").read_bytes()).decode().split()[1:] == MOLECULES
    assert (out / "mcf.csv").read_text().startswith("names,smarts")
    assert gzip.decompress((out / "wehi_pains.csv.gz").read_bytes()).startswith(b'"[N+]')
    # an existing file with other content is never replaced
    (out / "mcf.csv").write_text("mine\n", encoding="utf-8")
    assert moses.main(args) == 1
    assert "mcf.csv exists with different content" in capsys.readouterr().err
    assert (out / "mcf.csv").read_text() == "mine\n"


def test_a_wheel_that_is_not_molsets_is_refused(
    tmp_path: Path, moses: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = tmp_path / "molsets-0.3.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("moses/metrics/mcf.csv", "names,smarts\n")
    assert moses.main(["--out", str(tmp_path / "moses"), "--source", str(wheel)]) == 1
    assert "SHA-256 is not that of molsets-0.3.1" in capsys.readouterr().err


def test_chunked_fcd_statistics_equal_all_at_once(moses: ModuleType) -> None:
    pytest.importorskip("fcd_torch")
    from latentebm.metrics.molecules import fcd_statistics

    mean, cov = moses.fcd_reference(MOLECULES, chunk=5, label="test")
    mean_all, cov_all = fcd_statistics(MOLECULES)
    np.testing.assert_allclose(mean, mean_all, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, cov_all, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_end_to_end_with_fcd_and_the_metric_cache(tmp_path: Path, moses: ModuleType) -> None:
    pytest.importorskip("fcd_torch")
    from latentebm.metrics.molecules import MosesReference, fcd_statistics

    source = _fake_source(tmp_path / "src", MOLECULES)
    out = tmp_path / "data" / "moses"
    args = ["--out", str(out), "--source", str(source), "--skip-count-check", "--chunk", "8"]
    cache = tmp_path / "cache"
    args += ["--reference-molecules", "all", "--n-jobs", "1", "--cache-dir", str(cache)]
    assert moses.main(args) == 0
    with np.load(out / "fcd_ref_stats.npz") as stats:
        assert sorted(stats.files) == sorted(
            ["test_mu", "test_sigma", "test_scaffolds_mu", "test_scaffolds_sigma"]
        )
        mean, cov = fcd_statistics(MOLECULES)
        np.testing.assert_allclose(stats["test_mu"], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats["test_scaffolds_sigma"], cov, rtol=1e-4, atol=1e-6)
    reference = MosesReference.load_or_build(tmp_path / "data", cache, n_jobs=1)
    assert reference.meta["sets_n"]["Test"]["valid"] == len(MOLECULES)
    assert len(list(cache.glob("moses_ref_*.npz"))) == 1  # built by the script, reused here


@pytest.mark.slow
@pytest.mark.real_data
def test_the_shared_moses_copy_matches_moses_checksums(tmp_path: Path, moses: ModuleType) -> None:
    root = Path(os.environ.get("LATENTEBM_DATA", "")) / "moses"
    if not os.environ.get("LATENTEBM_DATA") or not (root / "train.csv.gz").is_file():
        pytest.skip("MOSES files not under $LATENTEBM_DATA/moses")
    out = tmp_path / "moses"
    assert moses.main(["--out", str(out), "--source", str(root), "--no-fcd"]) == 0
    for name in ("test.csv.gz", "mcf.csv"):
        assert (out / name).is_file()
