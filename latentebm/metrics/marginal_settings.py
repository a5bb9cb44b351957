"""Settings of the AIS estimates of :mod:`latentebm.metrics.marginal`, checked when made: the
per-example estimate of ``log (Z(alpha) p(x))`` (:class:`AISSettings`: where its chains start,
the path, the HMC transitions, the Laplace fit's mode search) and the estimate of
``log Z(alpha)`` (:class:`LogPartitionSettings`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from latentebm.metrics.ais import HMCSettings, ScheduleShape

AISInit = Literal["pilot", "laplace", "reference", "both"]


@dataclass(frozen=True)
class AISSettings:
    """Settings of the per-example AIS estimate of ``log (Z p(x))``.

    Attributes:
        init: where the chains start (:mod:`~latentebm.metrics.marginal`): ``pilot``
            (default): per example the Laplace start or the reference path, chosen by two short
            pilots (``pilot_chains`` x :meth:`pilot_transitions`), then a fresh run on it: on 6
            sentences simulated from a PTB model trained for 2,500 updates the Laplace start
            left a BDMC gap of 5.9 nats per sentence and the reference path 0.14, while on the
            linear-Gaussian closed form the reference path is 4.2 nats low with 500 temperatures
            (tens with few) and the Laplace start nearly exact (docs/RESULTS.md section 12b);
            ``laplace``, ``reference``, or ``both``: each example is estimated both ways (the
            reference path with ``reference_temperatures``) and the larger estimate is kept (for a
            reverse run the smaller), each example's own choice; not a lower bound, biased
            upwards where the two paths agree: by about its standard error with 200
            temperatures, by about 3 on a closed-form mixture problem with 500
            (docs/metrics.md).
        n_chains: independent chains per example (their spread gives the standard error); with
            ``both``, per path.
        n_temperatures: transitions of the likelihood path (``both``: of its Laplace path).
            500: on 32 sentences of 16-28 words simulated from a PTB model that uses z, 200
            left a BDMC gap of 1.75 nats per sentence, and on 16 of them 500 left 0.22
            (docs/RESULTS.md section 12b), for 2.3x the CPU time; longer sentences were not
            measured.
            200: on 64 sentences simulated from a PTB model whose 32 latent units are all
            active, the bidirectional Monte Carlo gap of the Laplace start was 1.7 nats per
            sentence with 25 transitions and 0.47 with 200, for roughly 6x the CPU time
            (docs/RESULTS.md section 12b); on Gaussian-like posteriors, where the Laplace start
            is already exact, the extra transitions mostly cost time.
        reference_temperatures: ``pilot`` and ``both``: transitions of the likelihood along
            the reference path.
        schedule: spacing of its temperatures (:func:`~latentebm.metrics.ais.temperatures`).
        prior_temperatures: ``reference`` (and ``both``'s reference path): transitions that
            switch on the tilt ``f``.
        leapfrog_steps: HMC leapfrog steps per transition (1: MALA).
        initial_step_size: first leapfrog step size (in whitened units; None: ``d^(-1/4)``).
        target_acceptance: HMC acceptance rate the step sizes adapt toward.
        adapt_factor: per-transition step-size change (:class:`~latentebm.metrics.ais.HMCSettings`).
        laplace_steps: Adam steps of the mode search (``laplace``).
        laplace_starts: starts of the mode search per example: the prior's mean, then draws of
            ``N(0, sigma^2 I)``; the best end is the Laplace fit's centre, distinct other ends
            enter the start density as further mixture components. 8: on the ground truth's
            multimodal posteriors (docs/RESULTS.md section 12) 2 starts left the NLL 4.2 nats
            per example too high and 8 left 0.6, for 1.4x the CPU time.
        laplace_lr: Adam learning rate of the mode search, in units of ``sigma``.
        widen: factor on the Laplace standard deviations.
        defensive: weight of ``N(0, sigma^2 I)`` in the start density of ``laplace``:
            ``q = (1 - defensive) N(m, L L^T) + defensive N(0, sigma^2 I)`` (defensive
            importance sampling, Hesterberg 1995), so chains also start where the mode search
            did not look (other modes of the posterior); 0: the Laplace fit alone. 0.3 with
            12 chains (the defaults): on a PTB model whose posteriors are rugged the BDMC gap
            fell from 39 to 10 nats per sentence (docs/RESULTS.md section 12b) and on the
            ground truth's multimodal posteriors the error from 0.64 to 0.34, while the
            linear-Gaussian closed form stays within 0.15 nats with its error bars covering the
            truth in 93 % of estimates (8 chains cover it in only 88 %: the chains that start at
            the reference mostly carry no weight).
        batch_size: most (example, chain) pairs given to the generator at once; for token
            sequences longer than :data:`~latentebm.metrics.joint.SEQUENCE_TOKENS_PER_ROW`
            fewer, in proportion, so that a chunk of long documents holds no more tokens than
            ``batch_size`` sequences of that length (the decoder keeps activations per token
            for the gradient to z), and fewer again for decoders wider than
            :data:`~latentebm.metrics.joint.REFERENCE_FLOATS_PER_TOKEN`.
        pilot_chains: ``pilot``: chains of each pilot run.
        pilot_temperatures: ``pilot``: transitions of each pilot run; None: a tenth of
            ``n_temperatures`` (:meth:`pilot_transitions`), so the two pilots cost about
            ``2 x pilot_chains / (10 n_chains)`` of the run (7 % with the defaults).
    """

    init: AISInit = "pilot"
    n_chains: int = 12
    n_temperatures: int = 500
    reference_temperatures: int = 500
    schedule: ScheduleShape = "sigmoid"
    prior_temperatures: int = 100
    leapfrog_steps: int = 2
    initial_step_size: float | None = None
    target_acceptance: float = 0.65
    adapt_factor: float = 1.1
    laplace_steps: int = 50
    laplace_starts: int = 8
    laplace_lr: float = 0.1
    widen: float = 1.0
    defensive: float = 0.3
    batch_size: int = 256
    pilot_chains: int = 4
    pilot_temperatures: int | None = None

    def __post_init__(self) -> None:
        if self.init not in ("pilot", "laplace", "reference", "both"):
            raise ValueError(
                f"AIS init must be 'pilot', 'laplace', 'reference' or 'both', got {self.init!r}"
            )
        for name in (
            "n_temperatures",
            "reference_temperatures",
            "prior_temperatures",
            "batch_size",
            "laplace_starts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_chains < 2:
            raise ValueError(f"n_chains must be >= 2 (for a standard error), got {self.n_chains}")
        if self.pilot_chains < 2:
            raise ValueError(f"pilot_chains must be >= 2, got {self.pilot_chains}")
        if self.pilot_temperatures is not None and self.pilot_temperatures < 1:
            raise ValueError(f"pilot_temperatures must be >= 1, got {self.pilot_temperatures}")
        if self.laplace_steps < 0:
            raise ValueError(f"laplace_steps must be >= 0, got {self.laplace_steps}")
        if not 0.0 <= self.defensive < 1.0:
            raise ValueError(f"defensive must be in [0, 1), got {self.defensive}")
        if not self.widen > 0 or not self.laplace_lr > 0:
            raise ValueError("widen and laplace_lr must be > 0")
        self.hmc()  # validates the HMC fields

    def hmc(self) -> HMCSettings:
        return HMCSettings(
            self.leapfrog_steps,
            self.initial_step_size,
            self.target_acceptance,
            self.adapt_factor,
        )

    def pilot_transitions(self) -> int:
        """``pilot_temperatures``, or a tenth of ``n_temperatures`` (at least 1) when None."""
        if self.pilot_temperatures is not None:
            return self.pilot_temperatures
        return max(1, self.n_temperatures // 10)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogPartitionSettings:
    """Settings of the AIS estimate of ``log Z(alpha)`` (the prior alone: no decoder call).

    Attributes:
        n_chains: independent chains (all in one step-size group).
        n_temperatures: transitions from ``N(0, sigma^2 I)`` to ``exp(f) N(0, sigma^2 I)``.
        schedule: spacing of the temperatures.
        leapfrog_steps, initial_step_size, target_acceptance, adapt_factor: HMC settings.
    """

    n_chains: int = 1024
    n_temperatures: int = 1000
    schedule: ScheduleShape = "sigmoid"
    leapfrog_steps: int = 2
    initial_step_size: float | None = None
    target_acceptance: float = 0.65
    adapt_factor: float = 1.02

    def __post_init__(self) -> None:
        if self.n_chains < 2:
            raise ValueError(f"log Z: n_chains must be >= 2, got {self.n_chains}")
        if self.n_temperatures < 1:
            raise ValueError(f"log Z: n_temperatures must be >= 1, got {self.n_temperatures}")
        self.hmc()

    def hmc(self) -> HMCSettings:
        return HMCSettings(
            self.leapfrog_steps,
            self.initial_step_size,
            self.target_acceptance,
            self.adapt_factor,
        )
