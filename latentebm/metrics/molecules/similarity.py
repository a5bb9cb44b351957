"""Tanimoto similarities of packed Morgan fingerprints, computed with torch matrix products in
blocks: :func:`tanimoto_matrix`, SNN (:func:`snn`, :func:`snn_from_fingerprints`) and internal
diversity (:func:`internal_diversity`, :func:`internal_diversity_from_fingerprints`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from latentebm.metrics.molecules.features import morgan_fingerprints
from latentebm.metrics.molecules.parallel import Runner, valid_canonical
from latentebm.progress import ProgressLines

logger = logging.getLogger("latentebm.metrics.molecules")  # the package's name, kept

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int32)


def _unpack(packed: np.ndarray, dtype: Any, device: Any) -> Any:
    import torch

    bits = np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8), axis=1)
    return torch.from_numpy(bits).to(device=device, dtype=dtype)


def _popcounts(packed: np.ndarray) -> np.ndarray:
    return _POPCOUNT[packed].sum(axis=1) if len(packed) else np.zeros(0, np.int32)


def _tanimoto_blocks(
    ref: np.ndarray,
    gen: np.ndarray,
    *,
    device: str = "cpu",
    block: int = 4096,
    exact_bf16: bool = True,
) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(gen_start, ref_start, T)``: float32 torch Tanimoto blocks ``T[ref, gen]``.

    ``T = |a&b| / (|a| + |b| - |a&b|)``, 1 when both are empty (as MOSES). The intersection
    counts come from a matrix product of 0/1 matrices; with ``exact_bf16`` it is done in
    bfloat16 (several times faster on CPUs with bf16 units) whenever the generated block's
    popcounts are <= 256, where every count is an integer <= 256 and so exact in bfloat16;
    otherwise in float32 (exact up to 2^24).
    """
    import torch

    gen_pop_all = _popcounts(gen)
    ref_pop_all = _popcounts(ref)
    gen_blocks = []
    for g0 in range(0, len(gen), block):
        pop = gen_pop_all[g0 : g0 + block]
        dtype = torch.bfloat16 if exact_bf16 and pop.max(initial=0) <= 256 else torch.float32
        gen_blocks.append(
            (
                g0,
                _unpack(gen[g0 : g0 + block], dtype, device),
                torch.from_numpy(pop.astype(np.float32)).to(device),
            )
        )
    for r0 in range(0, len(ref), block):
        r_cache: dict[Any, Any] = {}
        r_pop = torch.from_numpy(ref_pop_all[r0 : r0 + block].astype(np.float32)).to(device)
        for g0, g_bits, g_pop in gen_blocks:
            if g_bits.dtype not in r_cache:
                r_cache[g_bits.dtype] = _unpack(ref[r0 : r0 + block], g_bits.dtype, device)
            inter = (r_cache[g_bits.dtype] @ g_bits.T).float()
            denom = torch.add(r_pop[:, None], g_pop[None, :]).sub_(inter)
            sim = inter.div_(denom)
            if bool((r_pop == 0).any()) and bool((g_pop == 0).any()):
                sim.nan_to_num_(nan=1.0)  # 0 / 0: two empty fingerprints
            yield g0, r0, sim


def tanimoto_matrix(a: np.ndarray, b: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Tanimoto similarities ``(len(a), len(b))`` float32 of packed fingerprints."""
    out = np.zeros((len(a), len(b)), np.float32)
    for g0, r0, sim in _tanimoto_blocks(a, b, device=device):
        if sim.shape == out.shape:
            return sim.cpu().numpy()
        out[r0 : r0 + sim.shape[0], g0 : g0 + sim.shape[1]] = sim.cpu().numpy()
    return out


def snn_from_fingerprints(
    generated_fps: np.ndarray,
    reference_fps: np.ndarray,
    *,
    device: str = "cpu",
    block: int = 4096,
    exact_bf16: bool = True,
) -> float:
    """SNN: mean over generated of the max Tanimoto similarity to the reference set.

    The reference rows are grouped by popcount ``a``: within a group ``T = i / (a + b - i)``
    increases with the intersection ``i``, so the group's best match for a generated molecule
    is its largest ``i`` (one max over the raw product, no element-wise Tanimoto over the
    whole matrix); exact, as the brute force. Products in bfloat16 when exact (see
    :func:`tanimoto_matrix`).
    """
    import torch

    if len(generated_fps) == 0 or len(reference_fps) == 0:
        return float("nan")
    gen_pop = _popcounts(generated_fps)
    ref_pop = _popcounts(reference_fps)
    order = np.argsort(ref_pop, kind="stable")
    values, starts = np.unique(ref_pop[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    best = torch.zeros(len(generated_fps), dtype=torch.float32, device=device)
    gen_blocks = []
    for g0 in range(0, len(generated_fps), block):
        pop = gen_pop[g0 : g0 + block]
        gen_blocks.append((g0, torch.from_numpy(pop.astype(np.float32)).to(device), int(pop.max())))
    unpacked: dict[tuple[int, Any], Any] = {}

    def gen_bits(g0: int, dtype: Any) -> Any:
        if (g0, dtype) not in unpacked:
            unpacked[g0, dtype] = _unpack(generated_fps[g0 : g0 + block], dtype, device)
        return unpacked[g0, dtype]

    progress = ProgressLines(logger, "SNN", len(reference_fps), "reference molecules")
    with progress:
        for a, start, end in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
            for r0 in range(start, end, block):
                rows = order[r0 : min(end, r0 + block)]
                r_bits: dict[Any, Any] = {}
                for g0, g_pop, g_max in gen_blocks:
                    exact = exact_bf16 and min(a, g_max) <= 256
                    dtype = torch.bfloat16 if exact else torch.float32
                    if dtype not in r_bits:
                        r_bits[dtype] = _unpack(reference_fps[rows], dtype, device)
                    inter = (r_bits[dtype] @ gen_bits(g0, dtype).T).max(dim=0).values.float()
                    sim = inter.div_((g_pop + a).sub_(inter))
                    if a == 0:
                        sim.nan_to_num_(nan=1.0)  # 0 / 0: two empty fingerprints
                    seg = best[g0 : g0 + len(g_pop)]
                    torch.maximum(seg, sim, out=seg)
                progress.update(len(rows))
    return float(best.double().mean())


def intdiv_row_means(
    fps: np.ndarray, *, device: str = "cpu", block: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Per molecule ``i``: ``mean_j T_ij`` and ``mean_j T_ij^2`` over all ``j`` (self too).

    ``T`` is symmetric, so only blocks on and above the diagonal are computed."""
    import torch

    n = len(fps)
    s1 = torch.zeros(n, dtype=torch.float64, device=device)
    s2 = torch.zeros(n, dtype=torch.float64, device=device)
    starts = list(range(0, n, block))
    pairs = [(i0, j0) for bi, i0 in enumerate(starts) for j0 in starts[bi:]]
    with ProgressLines(logger, "IntDiv", len(pairs), "blocks of similarities") as progress:
        for i0, j0 in pairs:
            sim = torch.from_numpy(
                tanimoto_matrix(fps[i0 : i0 + block], fps[j0 : j0 + block], device=device)
            ).to(device)
            sq = sim.square()
            s1[j0 : j0 + sim.shape[1]] += sim.sum(dim=0, dtype=torch.float64)
            s2[j0 : j0 + sim.shape[1]] += sq.sum(dim=0, dtype=torch.float64)
            if j0 != i0:
                s1[i0 : i0 + sim.shape[0]] += sim.sum(dim=1, dtype=torch.float64)
                s2[i0 : i0 + sim.shape[0]] += sq.sum(dim=1, dtype=torch.float64)
            progress.update(1)
    return (s1 / n).cpu().numpy(), (s2 / n).cpu().numpy()


def internal_diversity_from_fingerprints(
    fps: np.ndarray, *, device: str = "cpu"
) -> dict[str, float]:
    """``IntDiv`` (p=1), ``IntDiv2`` (MOSES code: ``1 - mean_i sqrt(mean_j T_ij^2)``) and
    ``IntDiv2/paper`` (``1 - sqrt(mean_ij T_ij^2)``), all pairs with self-pairs."""
    if len(fps) == 0:
        return {"IntDiv": float("nan"), "IntDiv2": float("nan"), "IntDiv2/paper": float("nan")}
    m1, m2 = intdiv_row_means(fps, device=device)
    return {
        "IntDiv": float(1 - m1.mean()),
        "IntDiv2": float(1 - np.sqrt(m2).mean()),
        "IntDiv2/paper": float(1 - math.sqrt(m2.mean())),
    }


def internal_diversity(
    generated: Sequence[str],
    p: int = 1,
    *,
    formula: str = "code",
    n_jobs: int | Runner = 1,
    device: str = "cpu",
) -> float:
    """IntDiv_p of the valid molecules of ``generated`` (invalid dropped).

    ``formula="code"`` (MOSES code and tables): ``1 - mean_i (mean_j T_ij^p)^(1/p)``;
    ``"paper"``: ``1 - (mean_ij T_ij^p)^(1/p)``. Only p = 1 and 2 are supported.
    """
    if p not in (1, 2) or formula not in ("code", "paper"):
        raise ValueError("internal_diversity supports p in (1, 2), formula 'code' or 'paper'")
    fps = morgan_fingerprints(valid_canonical(generated, n_jobs), n_jobs)
    out = internal_diversity_from_fingerprints(fps, device=device)
    if p == 1:
        return out["IntDiv"]
    return out["IntDiv2"] if formula == "code" else out["IntDiv2/paper"]


def snn(
    generated: Sequence[str],
    reference: Sequence[str] | np.ndarray,
    *,
    n_jobs: int | Runner = 1,
    device: str = "cpu",
) -> float:
    """SNN of the valid molecules of ``generated`` against ``reference`` (valid SMILES or
    packed fingerprints from :func:`morgan_fingerprints`)."""
    gen_fps = morgan_fingerprints(valid_canonical(generated, n_jobs), n_jobs)
    if isinstance(reference, np.ndarray):
        ref_fps = reference
    else:
        ref_fps = morgan_fingerprints(valid_canonical(reference, n_jobs), n_jobs)
    return snn_from_fingerprints(gen_fps, ref_fps, device=device)
