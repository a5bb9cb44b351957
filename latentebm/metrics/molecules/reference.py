"""Reference statistics of the MOSES test sets (:class:`ReferenceSet`, :class:`MosesReference`)
and the canonical training SMILES (:func:`load_canonical_smiles`), cached as ``.npz`` files
(no pickles) keyed by the input files' contents and the RDKit version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentebm.atomic import atomic_write
from latentebm.metrics.molecules.basic import canonical_set
from latentebm.metrics.molecules.features import PROPERTY_NAMES, compute_features
from latentebm.metrics.molecules.files import load_filter_smarts, read_smiles_file
from latentebm.metrics.molecules.frechet import fcd_statistics
from latentebm.metrics.molecules.parallel import Runner, valid_canonical

logger = logging.getLogger("latentebm.metrics.molecules")  # the package's name, kept

REFERENCE_SETS = {"Test": "test", "TestSF": "test_scaffolds"}
"""Metric suffix -> MOSES file stem (``moses/<stem>.csv.gz``, ``<stem>_mu`` in the FCD npz)."""
CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path("~/.cache/latentebm")


def _unreadable_cache(path: Path, error: BaseException) -> None:
    """Log one warning line: the cache ``path`` cannot be read and is built again."""
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    logger.warning("%s: unreadable cache (%s); rebuilding it", path, reason)


def _blob(strings: Sequence[str]) -> np.ndarray:
    if any("\n" in s for s in strings):
        raise ValueError("strings with newlines cannot be stored")
    return np.frombuffer("\n".join(strings).encode("utf-8"), dtype=np.uint8)


def _unblob(arr: np.ndarray, n: int) -> list[str]:
    if n == 0:
        return []
    out = arr.tobytes().decode("utf-8").split("\n")
    if len(out) != n:
        raise ValueError("corrupt string blob in cache")
    return out


@dataclass
class ReferenceSet:
    """Statistics of one reference set (e.g. MOSES test), everything the metrics need."""

    name: str
    n: int
    fps: np.ndarray
    fragments: Counter[str]
    scaffolds: Counter[str]
    properties: dict[str, np.ndarray]
    fcd_mu: np.ndarray | None = None
    fcd_sigma: np.ndarray | None = None

    @classmethod
    def from_smiles(
        cls,
        name: str,
        smiles: Sequence[str],
        *,
        n_jobs: int | Runner = 1,
        fcd: bool = True,
        device: str = "cpu",
    ) -> ReferenceSet:
        """Compute the statistics of the valid molecules of ``smiles`` (FCD stats with
        fcd_torch when ``fcd``)."""
        valid = valid_canonical(smiles, n_jobs)
        feats = compute_features(valid, ("fps", "frag", "scaf", "props"), n_jobs=n_jobs)
        assert feats.fps is not None
        mu = sigma = None
        if fcd:
            workers = n_jobs.n_jobs if isinstance(n_jobs, Runner) else n_jobs
            mu, sigma = fcd_statistics(valid, device=device, n_jobs=workers)
        return cls(
            name,
            len(valid),
            feats.fps,
            feats.fragments,
            feats.scaffolds,
            feats.properties,
            mu,
            sigma,
        )

    def _arrays(self, prefix: str) -> dict[str, np.ndarray]:
        frag_keys, scaf_keys = list(self.fragments), list(self.scaffolds)
        out = {
            f"{prefix}n": np.array(self.n),
            f"{prefix}fps": self.fps,
            f"{prefix}frag_keys": _blob(frag_keys),
            f"{prefix}frag_counts": np.array([self.fragments[k] for k in frag_keys], np.int64),
            f"{prefix}scaf_keys": _blob(scaf_keys),
            f"{prefix}scaf_counts": np.array([self.scaffolds[k] for k in scaf_keys], np.int64),
            f"{prefix}props": np.stack([self.properties[k] for k in PROPERTY_NAMES], 1),
        }
        if self.fcd_mu is not None and self.fcd_sigma is not None:
            out[f"{prefix}fcd_mu"] = self.fcd_mu
            out[f"{prefix}fcd_sigma"] = self.fcd_sigma
        return out

    @classmethod
    def _from_arrays(cls, name: str, data: Mapping[str, np.ndarray], prefix: str) -> ReferenceSet:
        def counter(key: str) -> Counter[str]:
            counts = data[f"{prefix}{key}_counts"]
            keys = _unblob(data[f"{prefix}{key}_keys"], len(counts))
            return Counter(dict(zip(keys, (int(c) for c in counts), strict=True)))

        props = data[f"{prefix}props"]
        return cls(
            name=name,
            n=int(data[f"{prefix}n"]),
            fps=data[f"{prefix}fps"],
            fragments=counter("frag"),
            scaffolds=counter("scaf"),
            properties={k: props[:, i] for i, k in enumerate(PROPERTY_NAMES)},
            fcd_mu=data.get(f"{prefix}fcd_mu"),
            fcd_sigma=data.get(f"{prefix}fcd_sigma"),
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version_tag() -> str:
    from rdkit import __version__ as rdkit_version

    return f"v{CACHE_VERSION}-rdkit{rdkit_version}"


@dataclass
class MosesReference:
    """MOSES reference statistics: ``sets`` maps ``Test``/``TestSF`` to :class:`ReferenceSet`,
    ``filters`` the MCF + PAINS SMARTS, ``meta`` what was built from what (JSON-able)."""

    sets: dict[str, ReferenceSet]
    filters: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` (atomically: temporary file then rename)."""
        arrays: dict[str, np.ndarray] = {}
        for key, ref in self.sets.items():
            arrays.update(ref._arrays(f"{key}__"))
        arrays["filters"] = _blob(list(self.filters))
        arrays["n_filters"] = np.array(len(self.filters))
        meta = dict(self.meta, sets=list(self.sets))
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        with atomic_write(path) as f:  # fsync-ed, then renamed: never a truncated cache
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MosesReference:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        sets = {k: ReferenceSet._from_arrays(k, data, f"{k}__") for k in meta["sets"]}
        filters = tuple(_unblob(data["filters"], int(data["n_filters"])))
        return cls(sets, filters, meta)

    @classmethod
    def load_or_build(
        cls,
        data_root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        n_jobs: int = 2,
        max_molecules: int | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> MosesReference:
        """Reference statistics of MOSES ``test`` and ``test_scaffolds``, from the cache if
        there, else built (minutes) and cached.

        Args:
            data_root: holds ``moses/`` (default ``$LATENTEBM_DATA``).
            cache_dir: cache folder (default ``~/.cache/latentebm``); the file name carries a
                hash of the input files' contents, RDKit version, cache format and subsample.
            n_jobs: worker processes for the build.
            max_molecules: use a random subset of this many molecules of each test file
                (``numpy.random.default_rng(seed)``, without replacement; the files are not
                in random order, so never take the first lines). ``None``: all. The FCD
                statistics are always MOSES's own, for the whole files.
            verbose: print progress to stderr.
        """
        from latentebm.data import resolve_data_path

        files = {
            k: resolve_data_path(f"moses/{stem}.csv.gz", data_root)
            for k, stem in REFERENCE_SETS.items()
        }
        fcd_path = resolve_data_path("moses/fcd_ref_stats.npz", data_root)
        filters = load_filter_smarts(data_root)
        digest = hashlib.sha256()
        for path in [*files.values(), fcd_path]:
            digest.update(_sha256(path).encode())
        digest.update(f"{_version_tag()}|{max_molecules}|{seed}".encode())
        key = digest.hexdigest()[:16]
        cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
        cache_file = cache / f"moses_ref_{key}.npz"
        if cache_file.is_file():
            try:
                ref = cls.load(cache_file)
            except Exception as error:  # noqa: BLE001 - an unreadable cache is rebuilt
                _unreadable_cache(cache_file, error)
            else:
                ref.filters = filters
                ref.meta["cache_file"] = str(cache_file)
                return ref
        meta: dict[str, Any] = {
            "version": _version_tag(),
            "max_molecules": max_molecules,
            "seed": seed,
            "sets_n": {},
            "build_seconds": {},
        }
        sets = {}
        with np.load(fcd_path, allow_pickle=False) as npz:
            fcd_stats = {k: npz[k] for k in npz.files}
        with Runner(n_jobs) as runner:
            for k, path in files.items():
                t0 = time.perf_counter()
                smiles = read_smiles_file(path)
                n_file = len(smiles)
                if max_molecules is not None and max_molecules < n_file:
                    rng = np.random.default_rng(seed)
                    pick = np.sort(rng.choice(n_file, size=max_molecules, replace=False))
                    smiles = [smiles[i] for i in pick]
                ref = ReferenceSet.from_smiles(k, smiles, n_jobs=runner, fcd=False)
                stem = REFERENCE_SETS[k]
                ref.fcd_mu = fcd_stats[f"{stem}_mu"]
                ref.fcd_sigma = fcd_stats[f"{stem}_sigma"]
                sets[k] = ref
                meta["sets_n"][k] = {"file_lines": n_file, "used": len(smiles), "valid": ref.n}
                meta["build_seconds"][k] = time.perf_counter() - t0
                if verbose:
                    print(
                        f"[moses-ref] {k}: {ref.n} molecules in {meta['build_seconds'][k]:.0f} s",
                        file=sys.stderr,
                    )
        ref_all = cls(sets, filters, meta)
        ref_all.save(cache_file)
        ref_all.meta["cache_file"] = str(cache_file)
        return ref_all


def load_canonical_smiles(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    n_jobs: int | Runner = 2,
) -> frozenset[str]:
    """Canonical SMILES set of a SMILES file (e.g. MOSES train for novelty), cached as an
    ``.npz`` string blob keyed by the file's content hash and the RDKit version."""
    path = Path(path)
    key = hashlib.sha256(f"{_sha256(path)}|{_version_tag()}".encode()).hexdigest()[:16]
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    cache_file = cache / f"canonical_{path.name.split('.')[0]}_{key}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as npz:
                return frozenset(_unblob(npz["smiles"], int(npz["n"])))
        except Exception as error:  # noqa: BLE001 - an unreadable cache is rebuilt
            _unreadable_cache(cache_file, error)
    smiles = sorted(canonical_set(read_smiles_file(path), n_jobs))
    with atomic_write(cache_file) as f:  # fsync-ed, then renamed: never a truncated cache
        np.savez_compressed(f, smiles=_blob(smiles), n=np.array(len(smiles)))
    return frozenset(smiles)
