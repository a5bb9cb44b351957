"""The random streams of a training process: a seed per process (rank) and stream, and the
state of every generator a training step draws from (torch, CUDA, Python, NumPy and the Langevin
chains'), which a checkpoint saves and a resumed run restores, so that it draws what an
uninterrupted run would."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rank_seed(seed: int, rank: int, salt: int) -> int:
    """The seed of stream ``salt`` of process ``rank`` in a run seeded with ``seed``."""
    return (seed * 1_000_003 + rank * 7919 + salt) % (2**63)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state(langevin_rng: torch.Generator) -> dict[str, Any]:
    """The state of every generator of this process, as a checkpoint stores it."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "langevin": langevin_rng.get_state(),
    }


def set_rng_state(state: dict[str, Any], langevin_rng: torch.Generator) -> None:
    """Restore what :func:`rng_state` stored."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    langevin_rng.set_state(state["langevin"])


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value
