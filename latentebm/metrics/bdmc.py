r"""Bidirectional Monte Carlo (BDMC): how tight the AIS marginal likelihood is.

Grosse, Ghahramani and Adams (2015), "Sandwiching the marginal likelihood using bidirectional
Monte Carlo": on data simulated from the model, ``z* ~ p_alpha(z)`` exactly and
``x ~ p_beta(x | z*)``, so ``z*`` is an exact draw of ``p(z | x)``. Forward AIS on ``x`` gives a
stochastic lower bound of ``log (Z(alpha) p(x))``, reverse AIS from ``z*`` an upper bound
(:func:`latentebm.metrics.marginal.ais_log_joint_normaliser`); their gap bounds the error of
either on such data. With ``init: both`` each end is the better of two paths (the larger lower
bound, the smaller upper bound), which is not a strict stochastic bound: where the two paths
agree within their spread, each end can move toward the other by about that spread
(:func:`~latentebm.metrics.marginal._better_of_both`), so a gap below the per-example standard
errors is not evidence of exactness. ``log Z(alpha)`` is bracketed the same way with exact
prior draws (:func:`latentebm.metrics.marginal.sample_prior_exact`, rejection sampling).

Exact draws of ``p_beta(x | z)`` (:func:`simulate`): an image generator's
``g_beta(z) + tau * eps`` without clamping; a sequence decoder's full softmax at temperature 1
(``<pad>`` and ``<bos>`` not masked), rejecting rows that emit either before ``<eos>`` or do not
end within ``max_length`` tokens. Rejecting on ``x`` alone keeps ``z*`` an exact posterior draw
given the kept ``x``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from latentebm.generators.decoding import StepwiseDecoder
from latentebm.langevin import eval_mode
from latentebm.metrics.ais import AISEstimate
from latentebm.metrics.marginal import (
    AISSettings,
    ExactPriorSamples,
    LogPartitionSettings,
    PriorRejectionSampler,
    ais_log_joint_normaliser,
    ais_log_partition,
    choose_reference_path,
    fit_laplace,
)
from latentebm.model import LatentEBM
from latentebm.prior import GaussianPrior


@runtime_checkable
class ExactlySampled(Protocol):
    """A prior with its own exact sampler (e.g. :class:`~latentebm.mixture_prior.
    GaussianMixturePrior`); others are sampled by :class:`PriorRejectionSampler`."""

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


class _OwnSampler:
    def __init__(self, prior: ExactlySampled) -> None:
        self.prior = prior

    def draw(self, n: int, *, generator: torch.Generator | None = None) -> ExactPriorSamples:
        z = self.prior.sample(n, generator=generator)
        return ExactPriorSamples(z=z, bound=float("nan"), acceptance=1.0, exceeded=0)


def exact_prior_sampler(
    prior: GaussianPrior, generator: torch.Generator | None = None
) -> PriorRejectionSampler | _OwnSampler:
    """The prior's own exact sampler if it has one, else rejection sampling."""
    if isinstance(prior, ExactlySampled):
        return _OwnSampler(prior)
    return PriorRejectionSampler(prior, generator=generator)


@dataclass
class SimulatedData:
    """Examples drawn from the model, with the latent vector behind each.

    Attributes:
        x: ``(n, ...)`` examples in the task's batch format (sequences start with ``<bos>``).
        z: ``(n, d)`` their latent vectors: exact posterior draws given ``x``.
        prior_draws: how the ``z`` were drawn (rejection bound, acceptance, exceedances).
        rejected: sequences rejected (``<pad>``/``<bos>`` emitted, or too long).
    """

    x: Tensor
    z: Tensor
    prior_draws: ExactPriorSamples
    rejected: int


@torch.no_grad()
def simulate(
    model: LatentEBM,
    n: int,
    *,
    generator: torch.Generator | None = None,
    max_length: int | None = None,
    min_length: int = 0,
) -> SimulatedData:
    """Draw ``n`` pairs ``(z*, x)`` from the model (module docstring); sequences with fewer than
    ``min_length`` tokens before ``<eos>`` are rejected too."""
    decoder = model.generator
    with eval_mode(model):
        if isinstance(decoder, StepwiseDecoder):
            xs: list[Tensor] = []
            zs: list[Tensor] = []
            have, rejected = 0, 0
            draws: ExactPriorSamples | None = None
            sampler = exact_prior_sampler(model.prior, generator)
            while have < n:
                draws = sampler.draw(max(n - have, 16), generator=generator)
                if rejected > 1000 * n:
                    raise RuntimeError(
                        f"simulate: {rejected} sequences rejected for {have} kept: the decoder "
                        "rarely ends within max_length or emits <pad>/<bos>"
                    )
                tokens = decoder.sample(
                    draws.z,
                    decode="sample",
                    temperature=1.0,
                    max_length=max_length,
                    generator=generator,
                    mask_specials=False,
                )
                valid = _valid_rows(tokens, decoder.pad_id, decoder.bos_id, decoder.eos_id)
                valid &= (tokens == decoder.eos_id).int().argmax(dim=1) >= min_length
                rejected += int((~valid).sum())
                bos = torch.full_like(tokens[:, :1], decoder.bos_id)
                xs.extend(torch.cat([bos, tokens], dim=1)[valid].unbind(0))
                zs.append(draws.z[valid])
                have += int(valid.sum())
            assert draws is not None
            x = _pad(xs[:n], decoder.pad_id)
            z = torch.cat(zs)[:n]
            return SimulatedData(x=x, z=z, prior_draws=draws, rejected=rejected)
        draws = exact_prior_sampler(model.prior, generator).draw(n, generator=generator)
        try:
            x = decoder.sample(draws.z, generator=generator, noise=True, clamp=False)
        except TypeError as exc:
            raise TypeError(
                f"{type(decoder).__name__}.sample cannot draw exact examples "
                "(expected noise=True, clamp=False)"
            ) from exc
        return SimulatedData(x=x, z=draws.z, prior_draws=draws, rejected=0)


def _valid_rows(tokens: Tensor, pad_id: int, bos_id: int, eos_id: int) -> Tensor:
    """Rows that end with ``<eos>`` and hold no ``<pad>``/``<bos>`` before it."""
    length = tokens.shape[1]
    positions = torch.arange(length, device=tokens.device).expand_as(tokens)
    big = torch.full_like(positions, length)
    first_eos = torch.where(tokens == eos_id, positions, big).min(dim=1).values
    bad = (tokens == pad_id) | (tokens == bos_id)
    first_bad = torch.where(bad, positions, big).min(dim=1).values
    return (first_eos < length) & (first_bad > first_eos)


def _pad(rows: list[Tensor], pad_id: int) -> Tensor:
    """Trim each row after its ``<eos>`` region is all padding and stack to the longest."""
    lengths = [int((row != pad_id).sum()) for row in rows]
    width = max(lengths)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long, device=rows[0].device)
    for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        out[i, :length] = row[:length]
    return out


@dataclass
class BDMCResult:
    """Both AIS directions on simulated data.

    Attributes:
        forward: ``(n,)`` lower bounds of ``log (Z p(x))``.
        reverse: ``(n,)`` upper bounds of ``log (Z p(x))``.
        forward_std_error, reverse_std_error: their chain-to-chain standard errors.
        log_z_forward, log_z_reverse: ``log Z(alpha)`` bracketed the same way.
        total_targets: scored tokens of all examples (for per-token gaps; 0: not counted).
        reference_chosen: ``init: pilot`` or ``both``: ``(n,)`` whether an example's forward
            estimate came from the reference path (else the Laplace start); None otherwise.
    """

    forward: Tensor
    reverse: Tensor
    forward_std_error: Tensor
    reverse_std_error: Tensor
    log_z_forward: AISEstimate
    log_z_reverse: AISEstimate
    total_targets: int
    reference_chosen: Tensor | None = None

    @property
    def gap(self) -> Tensor:
        """``reverse - forward`` per example: the sandwich's width."""
        return self.reverse - self.forward

    def summary(self) -> dict[str, Any]:
        gap = self.gap
        n = gap.shape[0]
        return {
            "examples": n,
            "mean_gap": float(gap.mean()),
            "gap_std_error": float(gap.std() / n**0.5) if n > 1 else float("nan"),
            "median_gap": float(gap.median()),
            "max_gap": float(gap.max()),
            "mean_forward": float(self.forward.mean()),
            "mean_reverse": float(self.reverse.mean()),
            "mean_gap_per_token": (
                float(gap.sum()) / self.total_targets if self.total_targets else float("nan")
            ),
            "log_z_forward": self.log_z_forward.as_dict(),
            "log_z_reverse": self.log_z_reverse.as_dict(),
            "log_z_gap": self.log_z_reverse.value - self.log_z_forward.value,
            "reference_share": (
                None
                if self.reference_chosen is None
                else float(self.reference_chosen.double().mean())
            ),
        }


def bdmc(
    model: LatentEBM,
    data: SimulatedData,
    settings: AISSettings | None = None,
    *,
    log_z_settings: LogPartitionSettings | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    num_targets_fn: Callable[[Tensor], Tensor | int] | None = None,
) -> BDMCResult:
    """Forward and reverse AIS on ``data`` (module docstring), ``batch_size`` examples at a
    time. The Laplace start density (``init: laplace``, ``both`` or ``pilot``) is fitted once
    per batch from ``x`` and shared by both directions (it never sees ``z*``), and so is
    ``pilot``'s choice of path (made from ``x`` and forward pilots only). ``num_targets_fn(x)``:
    scored tokens of a batch (e.g. the task's ``num_target_tokens``), for the per-token gap."""
    settings = settings or AISSettings()
    log_z_settings = log_z_settings or LogPartitionSettings()
    forward, reverse, forward_se, reverse_se, chosen = [], [], [], [], []
    total_targets = 0
    for start in range(0, data.x.shape[0], batch_size):
        x = data.x[start : start + batch_size].to(model.device)
        z = data.z[start : start + batch_size].to(model.device)
        fit = (
            fit_laplace(model, x, settings, generator=generator)
            if settings.init in ("laplace", "both", "pilot")
            else None
        )
        paths = (
            choose_reference_path(model, x, settings, generator=generator, proposal=fit)
            if settings.init == "pilot"
            else None
        )
        ahead = ais_log_joint_normaliser(
            model, x, settings, generator=generator, proposal=fit, reference_rows=paths
        )
        back = ais_log_joint_normaliser(
            model, x, settings, generator=generator, z_exact=z, proposal=fit, reference_rows=paths
        )
        forward.append(ahead.summary.value.cpu())
        forward_se.append(ahead.summary.std_error.cpu())
        reverse.append(back.summary.value.cpu())
        reverse_se.append(back.summary.std_error.cpu())
        if ahead.reference_chosen is not None:
            chosen.append(ahead.reference_chosen.cpu())
        if num_targets_fn is not None:
            total_targets += int(torch.as_tensor(num_targets_fn(x)).sum())
    exact_prior = exact_prior_sampler(model.prior, generator).draw(
        log_z_settings.n_chains, generator=generator
    )
    return BDMCResult(
        forward=torch.cat(forward),
        reverse=torch.cat(reverse),
        forward_std_error=torch.cat(forward_se),
        reverse_std_error=torch.cat(reverse_se),
        log_z_forward=ais_log_partition(model.prior, log_z_settings, generator=generator),
        log_z_reverse=ais_log_partition(
            model.prior, log_z_settings, generator=generator, z_exact=exact_prior.z
        ),
        total_targets=total_targets,
        reference_chosen=torch.cat(chosen) if chosen else None,
    )
