"""Sample-based molecule metrics of a trained model: the MOSES table and the QM9 table.

- ``moses``: the full MOSES suite (:func:`latentebm.metrics.molecules.compute_moses_metrics`) of
  ``n_samples`` generated molecules (default 30,000, MOSES's protocol) against the MOSES test and
  scaffold-test statistics under the data root (``moses/``), novelty against the run's training
  split. Meaningful for models of MOSES-like data; for other data the reference is still MOSES.
- ``molecules``: validity, uniqueness and novelty (:func:`latentebm.metrics.molecules.qm9_metrics`)
  of ``n_samples`` generated molecules (default 10,000), the QM9/ZINC convention.

Molecules are generated as the text samples are (prior chain, then decoding), by default with
``decode="sample"`` at temperature 1: a draw from ``p_beta(x | z)``, as MOSES samples its models.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from latentebm.metrics.text_eval import N_EXAMPLES
from latentebm.task_contract import MoleculeReference

DEFAULT_SAMPLES = {"moses": 30_000, "molecules": 10_000}


@dataclass
class MoleculeEvalSettings:
    """How molecules are generated and scored for ``moses`` and ``molecules``."""

    n_samples: int | None = None
    """Generated molecules (None: 30,000 for moses, 10,000 for molecules)."""
    decode: str = "sample"
    temperature: float = 1.0
    top_k: int | None = None
    langevin_steps: int | None = None
    """Prior chain length (None: the model's K0)."""
    n_jobs: int = 2
    """Worker processes for the RDKit work."""
    cache_dir: str | None = None
    """Where the MOSES reference statistics are cached (None: ~/.cache/latentebm)."""
    reference_molecules: int | None = None
    """Build the MOSES reference from a random subset of this many molecules of each test file
    (None: all, MOSES's protocol; FCD always uses MOSES's own statistics)."""

    def __post_init__(self) -> None:
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.decode not in ("greedy", "sample", "beam"):
            raise ValueError(f"decode must be greedy, sample or beam, got {self.decode!r}")
        if self.n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {self.n_jobs}")


def check_molecule_task(task: Any) -> None:
    """``moses`` and ``molecules`` need a molecule task (one with ``train_smiles``)."""
    if not isinstance(task, MoleculeReference):
        raise ValueError(
            f"moses and molecules need a molecule task; {type(task).__name__} has no train_smiles"
        )


def evaluate_molecule_metrics(
    pretrained: Any,
    names: list[str],
    settings: MoleculeEvalSettings,
    *,
    data_root: str | None,
    seed: int,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """The ``moses`` and ``molecules`` entries of ``latentebm evaluate``."""
    wanted = [n for n in names if n in DEFAULT_SAMPLES]
    if not wanted:
        return {}
    task = pretrained.task
    check_molecule_task(task)
    counts = {n: settings.n_samples or DEFAULT_SAMPLES[n] for n in wanted}
    decode: dict[str, Any] = {"decode": settings.decode}
    if settings.decode == "sample":
        decode.update(temperature=settings.temperature, top_k=settings.top_k)
    started = time.perf_counter()
    samples = pretrained.generate(
        max(counts.values()),
        seed=seed,
        langevin_steps=settings.langevin_steps,
        progress=progress,
        **decode,
    )
    generation_seconds = time.perf_counter() - started
    train = task.train_smiles()
    train_is_canonical = bool(getattr(task.config, "canonicalize", False))
    record = {
        "generation": {**decode, "langevin_steps": settings.langevin_steps},
        "settings": asdict(settings),
        "seed": seed,
        "generation_seconds": generation_seconds,
        "examples": samples[:N_EXAMPLES],
    }
    scores = score_molecules(
        samples,
        wanted,
        settings,
        counts=counts,
        train=train,
        train_is_canonical=train_is_canonical,
        data_root=data_root,
        progress=progress,
    )
    return {name: {**values, **record} for name, values in scores.items()}


def score_molecules(
    samples: list[str],
    names: list[str],
    settings: MoleculeEvalSettings,
    *,
    counts: dict[str, int] | None = None,
    train: list[str] | None = None,
    train_is_canonical: bool = False,
    data_root: str | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """``moses`` and/or ``molecules`` (``names``) of the SMILES ``samples`` (invalid and empty
    strings count as invalid samples, as in MOSES's ``get_all_metrics``), the first
    ``counts[name]`` of them (default all). ``train``: training molecules for novelty (None:
    novelty is not reported)."""
    from latentebm.metrics.molecules import (
        MosesReference,
        compute_moses_metrics,
        qm9_metrics,
    )

    counts = counts or {}
    out: dict[str, dict[str, Any]] = {}
    if "molecules" in names:
        t0 = time.perf_counter()
        n = counts.get("molecules", len(samples))
        values = qm9_metrics(
            samples[:n], train or [], n_jobs=settings.n_jobs, train_is_canonical=train_is_canonical
        )
        if train is None:
            values = {k: v for k, v in values.items() if not k.startswith("novelty")}
        out["molecules"] = {**values, "n_samples": n, "seconds": time.perf_counter() - t0}
    if "moses" in names:
        t0 = time.perf_counter()
        n = counts.get("moses", len(samples))
        reference = MosesReference.load_or_build(
            data_root,
            settings.cache_dir,
            n_jobs=settings.n_jobs,
            max_molecules=settings.reference_molecules,
            verbose=progress,
        )
        timings: dict[str, float] = {}
        values = compute_moses_metrics(
            samples[:n],
            reference=reference,
            train=train,
            train_is_canonical=train_is_canonical,
            n_jobs=settings.n_jobs,
            timings=timings,
        )
        out["moses"] = {
            **values,
            "n_samples": n,
            "reference": reference.meta,
            "timings": timings,
            "seconds": time.perf_counter() - t0,
        }
    return out
