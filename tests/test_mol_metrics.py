"""Tests of the MOSES metric reimplementation ``latentebm.metrics.molecules`` on hand-checked
small cases (plus one regression check on the real MOSES files, skipped without them)."""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit", reason="rdkit is needed for molecule metrics (extra 'mol')")

from rdkit import Chem, DataStructs  # noqa: E402
from rdkit.Chem import rdFingerprintGenerator  # noqa: E402

from latentebm.metrics import molecules as mm  # noqa: E402

DRUGS = [
    "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",  # caffeine
    "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # ibuprofen
    "c1ccc2c(c1)cccc2",
    "O=C(Nc1ccccc1)c1ccc2ccccc2c1",
    "Cc1ccc(cc1)S(=O)(=O)N",
    "COc1ccc2[nH]cc(CCN)c2c1",
    "CCN(CC)CCOC(=O)c1ccc(N)cc1",
    "C1CCC(CC1)N1CCCCC1",
    "Clc1ccc(cc1)C1(O)CCN(CC1)C",
    "OC(=O)c1ccncc1",
]
# A rhodanine ene (PAINS ene_rhod): neutral, only allowed atoms, no large ring.
PAINS_MOL = "O=C1NC(=S)SC1=Cc1ccccc1"


def _bits(*on: int) -> np.ndarray:
    row = np.zeros(mm.MORGAN_BITS, np.uint8)
    row[list(on)] = 1
    return np.packbits(row)


def _rdkit_fps(smiles: list[str]) -> list:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]


def _tiny_reference(smiles: list[str], filters: tuple[str, ...]) -> mm.MosesReference:
    ref = mm.ReferenceSet.from_smiles("Test", smiles, fcd=True)
    return mm.MosesReference({"Test": ref}, filters)


# ------------------------------------------------------------------------------ valid / unique


def test_validity_counts_empty_and_unparsable_as_invalid() -> None:
    gen = ["CCO", "", "not a smiles", "C1CC", "c1cccc1", "C(C)(C)(C)(C)C", "c1ccccc1"]
    # unclosed ring, non-kekulisable aromatic ring and pentavalent carbon are invalid too
    assert mm.fraction_valid(gen) == pytest.approx(2 / 7)
    assert mm.canonicalize(gen) == ["CCO", None, None, None, None, None, "c1ccccc1"]


def test_unique_counts_spellings_once_and_ignores_invalid() -> None:
    gen = ["CCO", "C(C)O", "OCC", "bad", "", "c1ccccc1", "C1=CC=CC=C1"]
    # valid canonical: CCO x3, benzene x2 -> 2 distinct of 5 valid
    assert mm.fraction_unique(gen) == pytest.approx(2 / 5)
    assert mm.fraction_unique(gen, k=3) == pytest.approx(1 / 3)  # first 3 valid: all ethanol
    with pytest.warns(UserWarning, match="unique@10"):
        assert mm.fraction_unique(gen, k=10) == pytest.approx(2 / 5)
    assert math.isnan(mm.fraction_unique(["bad", ""]))


def test_novelty_against_small_train_set() -> None:
    gen = ["CCO", "C(C)O", "c1ccccc1", "CCN", "bad", ""]
    train = ["OCC", "C1=CC=CC=C1"]  # other spellings of ethanol and benzene
    assert mm.novelty(gen, train) == pytest.approx(1 / 3)  # only CCN is new
    assert mm.novelty(gen, {"CCO"}, train_is_canonical=True) == pytest.approx(2 / 3)
    assert math.isnan(mm.novelty(["bad", ""], train))  # invalid strings are never novel


def test_qm9_metrics() -> None:
    gen = ["C", "C", "CO", "OC", "N#N", "bad", "", "CC"]
    out = mm.qm9_metrics(gen, ["C", "CC"])
    assert out["validity"] == pytest.approx(6 / 8)
    assert out["uniqueness"] == pytest.approx(4 / 6)  # C, CO, N#N, CC
    assert out["novelty"] == pytest.approx(2 / 4)  # CO, N#N
    assert out["novelty_valid"] == pytest.approx(3 / 6)  # CO, OC, N#N
    assert (out["n_samples"], out["n_valid"], out["n_unique"]) == (8, 6, 4)


# ------------------------------------------------------------------------------ Tanimoto


def test_tanimoto_matches_rdkit_bulk_similarity() -> None:
    fps = mm.morgan_fingerprints(DRUGS)
    assert fps.shape == (len(DRUGS), 128) and fps.dtype == np.uint8
    ours = mm.tanimoto_matrix(fps, fps)
    rd = _rdkit_fps(DRUGS)
    expected = np.array([DataStructs.BulkTanimotoSimilarity(f, rd) for f in rd])
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    # the packed bits are RDKit's bits
    for row, bv in zip(fps, rd, strict=True):
        assert set(np.flatnonzero(np.unpackbits(row))) == set(bv.GetOnBits())


def test_tanimoto_dense_fingerprints_use_exact_float32_path() -> None:
    rng = np.random.default_rng(0)
    bits = (rng.random((7, mm.MORGAN_BITS)) < 0.6).astype(np.uint8)  # popcounts ~600 > 256
    bits[0] = 0
    bits[1] = 0  # two empty fingerprints: similarity 1 by convention (MOSES)
    packed = np.packbits(bits, axis=1)
    inter = bits.astype(np.int64) @ bits.T.astype(np.int64)
    pop = bits.sum(1)
    with np.errstate(invalid="ignore"):
        expected = inter / (pop[:, None] + pop[None, :] - inter)
    expected[np.isnan(expected)] = 1.0
    np.testing.assert_allclose(mm.tanimoto_matrix(packed, packed), expected, atol=1e-6)


def test_internal_diversity_of_identical_molecules_is_zero() -> None:
    assert mm.internal_diversity(["CCO", "OCC"]) == pytest.approx(0.0, abs=1e-7)
    assert mm.internal_diversity(["CCO", "OCC"], p=2) == pytest.approx(0.0, abs=1e-7)


def test_internal_diversity_on_known_fingerprints() -> None:
    # T(a, b) = 1/3, T(a, c) = T(b, c) = 0, self-pairs 1 (all 9 pairs count).
    fps = np.stack([_bits(0, 1), _bits(1, 2), _bits(3)])
    out = mm.internal_diversity_from_fingerprints(fps)
    assert out["IntDiv"] == pytest.approx(1 - (3 + 2 / 3) / 9, abs=1e-6)
    row_m2 = np.array([10 / 27, 10 / 27, 1 / 3])  # mean_j T_ij^2
    assert out["IntDiv2"] == pytest.approx(1 - np.sqrt(row_m2).mean(), abs=1e-6)
    assert out["IntDiv2/paper"] == pytest.approx(1 - math.sqrt(row_m2.mean()), abs=1e-6)
    assert abs(out["IntDiv2"] - out["IntDiv2/paper"]) > 1e-4


def test_internal_diversity_matches_rdkit_pairs() -> None:
    rd = _rdkit_fps(DRUGS)
    sims = np.array([DataStructs.BulkTanimotoSimilarity(f, rd) for f in rd])
    assert mm.internal_diversity(DRUGS) == pytest.approx(1 - sims.mean(), abs=1e-6)
    assert mm.internal_diversity(DRUGS, p=2) == pytest.approx(
        1 - np.sqrt((sims**2).mean(1)).mean(), abs=1e-6
    )
    assert mm.internal_diversity(DRUGS, p=2, formula="paper") == pytest.approx(
        1 - np.sqrt((sims**2).mean()), abs=1e-6
    )


def test_snn() -> None:
    assert mm.snn(DRUGS, DRUGS) == pytest.approx(1.0, abs=1e-6)
    gen, ref = DRUGS[:5], DRUGS[5:]
    rd_gen, rd_ref = _rdkit_fps(gen), _rdkit_fps(ref)
    expected = np.mean([max(DataStructs.BulkTanimotoSimilarity(f, rd_ref)) for f in rd_gen])
    assert mm.snn(gen + ["bad"], ref) == pytest.approx(expected, abs=1e-6)
    assert mm.snn(gen, mm.morgan_fingerprints(ref)) == pytest.approx(expected, abs=1e-6)


def test_blocked_snn_and_intdiv_equal_brute_force() -> None:
    rng = np.random.default_rng(1)
    density = rng.uniform(0.01, 0.4, (300, 1))  # popcounts ~10 to ~400 (bf16 and float32)
    packed = np.packbits((rng.random((300, mm.MORGAN_BITS)) < density).astype(np.uint8), axis=1)
    packed[[3, 250]] = 0  # empty fingerprints: T = 1 between them
    gen, ref = packed[:120], packed[100:]
    sims = mm.tanimoto_matrix(ref, gen).astype(np.float64)
    snn = mm.snn_from_fingerprints(gen, ref, block=32)
    assert snn == pytest.approx(sims.max(0).mean(), abs=1e-6)
    full = mm.tanimoto_matrix(packed, packed).astype(np.float64)
    m1, m2 = mm.intdiv_row_means(packed, block=64)
    np.testing.assert_allclose(m1, full.mean(1), atol=1e-6)
    np.testing.assert_allclose(m2, (full**2).mean(1), atol=1e-6)


# ------------------------------------------------------------------------------ Frag / Scaf


def test_cosine_similarity() -> None:
    assert mm.cosine_similarity({"a": 1, "b": 2}, {"b": 4, "a": 2}) == pytest.approx(1.0)
    assert mm.cosine_similarity({"a": 1}, {"b": 1}) == 0.0
    assert mm.cosine_similarity({"a": 3, "b": 4}, {"a": 1}) == pytest.approx(3 / 5)
    assert math.isnan(mm.cosine_similarity({}, {"a": 1}))


def test_fragments_and_scaffolds() -> None:
    frags = mm.fragment_counts(["CCOC(=O)c1ccccc1"])
    assert frags == Counter({"[1*]C([6*])=O": 1, "[16*]c1ccccc1": 1, "[3*]O[3*]": 1, "[4*]CC": 1})
    scafs = mm.scaffold_counts(["c1ccccc1", "Cc1ccc2ccccc2c1", "CCc1ccc2ccccc2c1", "CCO"])
    assert scafs == Counter({"c1ccc2ccccc2c1": 2})  # benzene: 1 ring, ethanol: no scaffold
    assert mm.fragment_similarity(DRUGS, list(reversed(DRUGS))) == pytest.approx(1.0)
    assert mm.scaffold_similarity(DRUGS, DRUGS + ["bad"]) == pytest.approx(1.0)


# ------------------------------------------------------------------------------ Filters


@pytest.fixture(scope="module")
def filters() -> tuple[str, ...]:
    try:
        return mm.load_filter_smarts(None)
    except FileNotFoundError as err:
        pytest.skip(f"MOSES filter SMARTS not found (set LATENTEBM_DATA): {err}")


def test_filter_files(filters: tuple[str, ...]) -> None:
    assert len(filters) == 22 + 480


def test_filters(filters: tuple[str, ...]) -> None:
    assert mm.mol_passes_filters("CC(=O)Nc1ccc(O)cc1", filters)  # paracetamol
    assert mm.mol_passes_filters("CC(C)Cc1ccc(cc1)C(C)C(=O)O", filters)  # ibuprofen
    assert not mm.mol_passes_filters(PAINS_MOL, filters)
    assert mm.mol_passes_filters(PAINS_MOL, filters[:22])  # fails because of PAINS alone
    assert not mm.mol_passes_filters("C[N+](C)(C)C", filters)  # charged
    assert not mm.mol_passes_filters("CCP(C)C", filters)  # P is not allowed
    assert not mm.mol_passes_filters("C1CCCCCCC1", filters)  # 8-membered ring
    assert mm.mol_passes_filters("C1CCCCCC1", filters)  # 7-membered ring is fine
    assert not mm.mol_passes_filters("bad", filters)
    frac = mm.fraction_passes_filters(["CC(=O)Nc1ccc(O)cc1", PAINS_MOL, "bad"], filters)
    assert frac == pytest.approx(0.5)  # of the valid molecules


def test_filters_without_data() -> None:
    # One custom SMARTS (a thiocarbonyl) stands in for the MCF/PAINS lists.
    assert not mm.mol_passes_filters(PAINS_MOL, ["[#6]=[#16]"])
    assert mm.mol_passes_filters("CCO", ["[#6]=[#16]"])


# ------------------------------------------------------------------------------ properties / FCD


def test_property_distances() -> None:
    props = mm.molecular_properties(DRUGS)
    assert set(props) == set(mm.PROPERTY_NAMES) and all(
        len(v) == len(DRUGS) for v in props.values()
    )
    assert props["weight"][0] == pytest.approx(180.159, abs=1e-3)  # aspirin
    assert props["SA"].min() >= 1 and props["SA"].max() <= 10
    assert all(d == 0.0 for d in mm.property_distances(props, props).values())
    shifted = {k: v + 1.0 for k, v in props.items()}
    assert all(d == pytest.approx(1.0) for d in mm.property_distances(shifted, props).values())


def test_frechet_distance_of_known_gaussians() -> None:
    # 1-D: (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert mm.frechet_distance(np.array([0.0]), np.eye(1), np.array([1.0]), 4 * np.eye(1)) == (
        pytest.approx(2.0)
    )
    s = np.diag([1.0, 2.0])
    assert mm.frechet_distance(np.zeros(2), s, np.zeros(2), s) == pytest.approx(0.0, abs=1e-9)


def test_fcd_of_a_set_against_its_own_statistics_is_zero() -> None:
    mu, sigma = mm.fcd_statistics(DRUGS)
    assert mu.shape == (512,) and sigma.shape == (512, 512)
    assert abs(mm.fcd(DRUGS + ["bad"], mu, sigma)) < 1e-3
    assert mm.fcd(DRUGS[:6], mu, sigma) > 1.0


# ------------------------------------------------------------------------------ the suite


def test_suite_on_its_own_reference_and_cache_roundtrip(tmp_path: Path) -> None:
    ref = _tiny_reference(DRUGS, ("[#6]=[#16]",))
    path = tmp_path / "ref.npz"
    ref.save(path)
    loaded = mm.MosesReference.load(path)
    test = loaded.sets["Test"]
    assert test.n == len(DRUGS) and loaded.filters == ref.filters
    np.testing.assert_array_equal(test.fps, ref.sets["Test"].fps)
    assert test.fragments == ref.sets["Test"].fragments
    assert test.scaffolds == ref.sets["Test"].scaffolds
    np.testing.assert_array_equal(test.fcd_sigma, ref.sets["Test"].fcd_sigma)

    gen = [*DRUGS, "bad", ""]
    timings: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unique@1000 on 12 molecules
        out = mm.compute_moses_metrics(
            gen, reference=loaded, train=DRUGS[:3], n_jobs=1, timings=timings
        )
    assert out["valid"] == pytest.approx(len(DRUGS) / len(gen))
    assert out["unique@1000"] == 1.0 and out["Novelty"] == pytest.approx(9 / 12)
    assert out["SNN/Test"] == pytest.approx(1.0, abs=1e-6)
    assert out["Frag/Test"] == pytest.approx(1.0) and out["Scaf/Test"] == pytest.approx(1.0)
    assert abs(out["FCD/Test"]) < 1e-3
    assert out["Filters"] == 1.0
    assert all(out[k] == 0.0 for k in mm.PROPERTY_NAMES)
    assert out["IntDiv"] == pytest.approx(mm.internal_diversity(DRUGS), abs=1e-9)
    assert {"valid", "features", "SNN/Test", "IntDiv"} <= set(timings)


def test_parallel_equals_serial() -> None:
    gen = DRUGS * 3 + ["bad"]
    serial = mm.compute_features(mm.valid_canonical(gen), filters=("[#6]=[#16]",), n_jobs=1)
    parallel = mm.compute_features(
        mm.valid_canonical(gen, n_jobs=2), filters=("[#6]=[#16]",), n_jobs=2
    )
    assert serial.fps is not None and parallel.fps is not None
    np.testing.assert_array_equal(serial.fps, parallel.fps)
    assert serial.fragments == parallel.fragments and serial.scaffolds == parallel.scaffolds
    for k in mm.PROPERTY_NAMES:
        np.testing.assert_array_equal(serial.properties[k], parallel.properties[k])
    np.testing.assert_array_equal(serial.passes_filters, parallel.passes_filters)
    undeduped = mm.compute_features(mm.valid_canonical(gen), ("frag", "fps"), dedupe=False)
    assert undeduped.fragments == serial.fragments
    np.testing.assert_array_equal(undeduped.fps, serial.fps)


# ------------------------------------------------------------------------------ real MOSES data

FCD_RANDOM_2K_BOUND = 1.0
"""FCD/Test of a random 2,000-molecule sample of MOSES test against MOSES's statistics:
measured 0.596, 0.611, 0.619 (seeds 0, 1, 2); the first 2,000 lines give 4.78. (A random 30k
subset gives 0.034: FCD grows as n shrinks.)"""


@pytest.mark.slow
@pytest.mark.real_data
def test_fcd_of_moses_test_samples_against_reference_stats() -> None:
    root = os.environ.get("LATENTEBM_DATA")
    if not root:
        pytest.skip("LATENTEBM_DATA is not set; MOSES test.csv.gz / fcd_ref_stats.npz unavailable")
    moses = Path(root) / "moses"
    needed = [moses / "test.csv.gz", moses / "fcd_ref_stats.npz"]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"MOSES files not found: {[str(p) for p in needed if not p.is_file()]}")
    smiles = mm.read_smiles_file(moses / "test.csv.gz")
    assert len(smiles) == 176_074
    with np.load(moses / "fcd_ref_stats.npz", allow_pickle=False) as npz:
        mu, sigma = npz["test_mu"], npz["test_sigma"]
    rng = np.random.default_rng(0)
    sample = [smiles[i] for i in rng.choice(len(smiles), size=2000, replace=False)]
    random_fcd = mm.fcd(sample, mu, sigma, n_jobs=1)
    first_fcd = mm.fcd(smiles[:2000], mu, sigma, n_jobs=1)
    assert 0 < random_fcd < FCD_RANDOM_2K_BOUND
    assert first_fcd > 3 * random_fcd  # the file is not in random order


SCRIPT_WITHOUT_MAIN_GUARD = """\
from pathlib import Path

with open(Path(__file__).with_name("runs.log"), "a") as log:  # counts how often this runs
    log.write("ran\\n")
from latentebm.metrics.molecules import canonicalize

print(canonicalize(["OCC", "bad(", "C1=CC=CC=C1"] * 50, n_jobs=2)[:3])
"""


@pytest.mark.parametrize("how", ["script", "module"])
def test_parallel_metrics_from_a_script_without_a_main_guard(tmp_path: Path, how: str) -> None:
    """Worker processes do not re-run the caller's script (``python script.py`` or
    ``python -m script``), which used to fail with a bare BrokenProcessPool."""
    import subprocess
    import sys

    (tmp_path / "no_guard.py").write_text(SCRIPT_WITHOUT_MAIN_GUARD, encoding="utf-8")
    command = (
        [sys.executable, "no_guard.py"] if how == "script" else [sys.executable, "-m", "no_guard"]
    )
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['CCO', None, 'c1ccccc1']"
    assert (tmp_path / "runs.log").read_text().count("ran") == 1


def test_chemnet_activations_in_pieces_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fcd_torch", reason="FCD needs fcd_torch (extra 'mol')")
    whole = mm.chemnet_activations(DRUGS)
    monkeypatch.setattr("latentebm.metrics.molecules.frechet.FCD_PIECE", 3)
    np.testing.assert_allclose(mm.chemnet_activations(DRUGS), whole, rtol=1e-5, atol=1e-6)


def test_settings_set_on_the_package_reach_the_modules_that_read_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FCD_PIECE and MP_START_METHOD moved into submodules; set on the package (as before the
    split) they still take effect, and read there they show the submodules' values."""
    import latentebm.metrics.molecules as package
    from latentebm.metrics.molecules import frechet, parallel

    before = frechet.FCD_PIECE
    try:
        package.FCD_PIECE = 123
        assert frechet.FCD_PIECE == 123 == package.FCD_PIECE
    finally:
        frechet.FCD_PIECE = before
    monkeypatch.setattr(parallel, "MP_START_METHOD", "spawn")
    assert package.MP_START_METHOD == "spawn"
