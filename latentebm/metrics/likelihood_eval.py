"""The likelihood metrics of ``latentebm evaluate``: ``marginal_nll``, ``recon_nll``,
``latent_usage`` (``nll`` is an alias of ``marginal_nll``).

* ``marginal_nll``: ``-log p(x)`` per example, per token and as a perplexity, by AIS
  (:mod:`latentebm.metrics.marginal`, the default) or, as an explicit fast option, importance
  sampling with a proposal fitted to posterior chains (:mod:`latentebm.metrics.nll`); both with
  ``log Z(alpha)`` by AIS. Comparable with other papers' marginal NLLs and PPLs.
* ``recon_nll``: Table 2's NLL of Pang et al. (2020), a reconstruction
  (:func:`latentebm.metrics.latent_usage.reconstruction_nll`).
* ``latent_usage``: active units, ``I(x; z)`` and the reconstruction gain
  (:mod:`latentebm.metrics.latent_usage`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from latentebm.metrics.marginal import (
    AISSettings,
    LogPartitionSettings,
    ais_log_partition,
    evaluate_marginal_nll,
)
from latentebm.model import LatentEBM
from latentebm.progress import logged_within

logger = logging.getLogger(__name__)

LIKELIHOOD_METRICS: tuple[str, ...] = ("marginal_nll", "recon_nll", "latent_usage")
ALIASES: dict[str, str] = {"nll": "marginal_nll"}

Estimator = Literal["ais", "is"]


@dataclass(frozen=True)
class LikelihoodEvalSettings:
    """Settings of the likelihood metrics.

    Attributes:
        estimator: ``ais`` (default, tight: module docstring) or ``is`` (fast).
        ais: the AIS settings of ``marginal_nll`` (and the Laplace fits of ``latent_usage``).
        log_z: the AIS settings of ``log Z(alpha)``.
        n_importance: ``is``: importance samples per example.
        is_chains: ``is``: posterior chains per example that the Gaussian proposal is fitted to.
        is_chain_steps: ``is``: their Langevin steps (None: the model's K1; at least 1: a
            proposal fitted to the reference alone would ignore x).
        recon_steps: ``recon_nll`` / ``latent_usage``: posterior chain steps (None: K1).
        usage_examples: ``latent_usage``: most examples, spread evenly over the batches
            (the MI estimate is quadratic in them).
        per_example: ``marginal_nll`` by AIS: also record each example's ``log p_hat(x)``
            (``log_likelihoods``, in the order scored) and its standard error
            (``std_errors``): two models scored on the same examples can then be compared
            pair by pair, which removes the examples' own spread from the difference.
    """

    estimator: Estimator = "ais"
    ais: AISSettings = field(default_factory=AISSettings)
    log_z: LogPartitionSettings = field(default_factory=LogPartitionSettings)
    n_importance: int = 100
    is_chains: int = 16
    is_chain_steps: int | None = None
    recon_steps: int | None = None
    usage_examples: int = 1000
    per_example: bool = False

    def __post_init__(self) -> None:
        if self.estimator not in ("ais", "is"):
            raise ValueError(f"estimator must be 'ais' or 'is', got {self.estimator!r}")
        if self.n_importance < 1:
            raise ValueError(f"n_importance must be >= 1, got {self.n_importance}")
        if self.is_chains < 2:
            raise ValueError(f"is_chains must be >= 2, got {self.is_chains}")
        if self.is_chain_steps is not None and self.is_chain_steps < 1:
            raise ValueError(
                f"is_chain_steps must be >= 1 (a proposal fitted to the reference alone ignores "
                f"x), got {self.is_chain_steps}"
            )
        if self.recon_steps is not None and self.recon_steps < 0:
            raise ValueError(f"recon_steps must be >= 0, got {self.recon_steps}")
        if self.per_example and self.estimator != "ais":
            raise ValueError("per_example needs the AIS estimator (estimator='ais')")
        if self.usage_examples < 2:
            raise ValueError(f"usage_examples must be >= 2, got {self.usage_examples}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def canonical(names: Sequence[str]) -> list[str]:
    """Metric names with aliases replaced (``nll`` -> ``marginal_nll``), duplicates dropped."""
    return list(dict.fromkeys(ALIASES.get(name, name) for name in names))


def evaluate_likelihood_metrics(
    model: LatentEBM,
    batches: Sequence[Tensor],
    num_targets_fn: Callable[[Tensor], Tensor | int],
    names: Sequence[str],
    settings: LikelihoodEvalSettings,
    *,
    generator: torch.Generator,
    progress: Callable[[Sequence[Tensor], str], Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The entries of the likelihood metrics in ``names`` (others are ignored)."""
    wanted = [name for name in canonical(names) if name in LIKELIHOOD_METRICS]
    out: dict[str, dict[str, Any]] = {}

    def bar(items: Sequence[Tensor], label: str) -> Any:
        return progress(items, label) if progress is not None else items

    if "marginal_nll" in wanted:
        out["marginal_nll"] = _marginal_entry(
            model, batches, num_targets_fn, settings, generator, bar
        )
    if "recon_nll" in wanted or "latent_usage" in wanted:
        from latentebm.metrics.latent_usage import reconstruction_nll

        started = time.perf_counter()
        recon = reconstruction_nll(
            model,
            bar(batches, "recon_nll"),
            num_targets_fn,
            chain_steps=settings.recon_steps,
            generator=generator,
        ).as_dict()
        recon["seconds"] = time.perf_counter() - started
        if "recon_nll" in wanted:
            out["recon_nll"] = recon
    if "latent_usage" in wanted:
        from latentebm.metrics.latent_usage import latent_usage

        started = time.perf_counter()
        subset = spread_examples(batches, settings.usage_examples)
        usage = latent_usage(model, bar(subset, "latent_usage"), settings.ais, generator=generator)
        out["latent_usage"] = {
            **usage.as_dict(),
            "recon_nll": recon["recon_nll"],
            "prior_z_nll": recon["prior_z_nll"],
            "recon_gain": recon["recon_gain"],
            "recon_examples": recon["n_examples"],
            "seconds": time.perf_counter() - started,
        }
    return out


def _marginal_entry(
    model: LatentEBM,
    batches: Sequence[Tensor],
    num_targets_fn: Callable[[Tensor], Tensor | int],
    settings: LikelihoodEvalSettings,
    generator: torch.Generator,
    bar: Callable[[Sequence[Tensor], str], Any],
) -> dict[str, Any]:
    started = time.perf_counter()
    cpu_started = time.process_time()
    with logged_within(logger, "log Z(alpha) by AIS"):
        log_z = ais_log_partition(model.prior, settings.log_z, generator=generator)
    log_z_seconds = time.perf_counter() - started
    if settings.estimator == "ais":
        result = evaluate_marginal_nll(
            model,
            bar(batches, "marginal_nll (AIS)"),
            num_targets_fn,
            settings.ais,
            log_z=log_z,
            generator=generator,
        )
        entry = result.as_dict(per_example=settings.per_example)
    else:
        from latentebm.metrics.nll import evaluate_nll

        nll = evaluate_nll(
            model,
            bar(batches, "marginal_nll (IS)"),
            num_targets_fn,
            n_importance=settings.n_importance,
            n_chains=settings.is_chains,
            chain_steps=settings.is_chain_steps,
            log_z=log_z.value,
            generator=generator,
            batch_size=settings.ais.batch_size,
        )
        entry = nll.as_dict()
        entry["log_z"] = log_z.as_dict()
        entry.pop("log_z_std_error", None)
        entry.pop("log_z_samples", None)
        entry["std_error"] = None  # IS reports its effective sample size instead
        entry["settings"] = {"estimator": "is", **entry["settings"]}
    entry["log_z_seconds"] = log_z_seconds
    entry["seconds"] = time.perf_counter() - started
    entry["cpu_seconds"] = time.process_time() - cpu_started
    return entry


def spread_examples(batches: Sequence[Tensor], count: int) -> list[Tensor]:
    """``count`` examples spread evenly over ``batches`` (in order: with length-sorted batches,
    short and long ones alike), as one sub-batch per batch they come from; all of them when
    there are no more than ``count``."""
    sizes = [int(b.shape[0]) for b in batches]
    total = sum(sizes)
    if total <= count:
        return list(batches)
    wanted = torch.linspace(0, total - 1, count).round().long().unique().tolist()
    out: list[Tensor] = []
    start = 0
    for batch, size in zip(batches, sizes, strict=True):
        rows = [i - start for i in wanted if start <= i < start + size]
        if rows:
            out.append(batch[rows])
        start += size
    return out
