"""``LatentEBM``: prior + generator, and one learning iteration (Algorithm 1 of Pang, Han,
Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model").

One iteration on a mini-batch ``{x_i}``:

1. prior chain: ``z_i^- ~ p~_alpha(z)`` by K0 Langevin steps from ``N(0, sigma^2 I)``;
2. posterior chain: ``z_i^+ ~ p~_theta(z | x_i)`` by K1 steps on
   ``log p_beta(x_i | z) + f_alpha(z) - ||z||^2 / (2 sigma^2)``, from the same reference;
3. prior update along ``mean grad_alpha f(z^+) - mean grad_alpha f(z^-)`` (eq. 10), i.e. descend
   ``L_alpha = mean f(z^-) - mean f(z^+)``;
4. generator update along ``mean grad_beta log p_beta(x_i | z_i^+)`` (eq. 11), i.e. descend
   ``L_beta = -mean log p_beta(x_i | z_i^+)``.

Both chains run with every parameter frozen (:func:`latentebm.langevin.frozen`), so sampling
does no weight-gradient work and leaves every ``.grad`` untouched.

Chain initialisation (issue 6): the prior chain may start from a replay buffer of earlier chain
ends (:class:`latentebm.replay.ReplayBuffer`, persistent chains); the posterior chain from the
example's own previous chain end (:class:`latentebm.replay.PosteriorMemory`) or from an
inference model ``q_phi(z | x)`` (:mod:`latentebm.inference`; Cui and Han (2023), "Learning
Energy-Based Model via Dual-MCMC Teaching"), which is then taught by the chain:
``L_phi = -mean log q_phi(z^+ | x)``. Steps 3 and 4 are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from latentebm.compiling import CompileMode, compile_log_density
from latentebm.langevin import LangevinResult, LangevinSampler, LogDensity, frozen
from latentebm.prior import GaussianPrior
from latentebm.replay import PosteriorMemory, ReplayBuffer


class NonFiniteError(RuntimeError):
    """A loss, energy or gradient of a learning step is NaN or infinite.

    Attributes:
        term: the name of the first offending term (e.g. ``prior_loss``).
        value: its value.
        own_batch: whether ``term`` comes from this process's own batch; ``False`` for a
            parameter's gradient norm, which in a data-parallel run is also how another
            process's non-finite term arrives (see :meth:`LatentEBM.learning_step`).
    """

    def __init__(self, term: str, value: float, *, own_batch: bool = True) -> None:
        super().__init__(f"non-finite {term} = {value}")
        self.term = term
        self.value = value
        self.own_batch = own_batch


@dataclass
class Optimizers:
    """The two optimisers of Algorithm 1 (learning rates eta_0 for alpha, eta_1 for beta)."""

    generator: torch.optim.Optimizer
    prior: torch.optim.Optimizer | None = None
    generator_grad_clip: float | None = None
    prior_grad_clip: float | None = None
    inference: torch.optim.Optimizer | None = None
    """Optimiser of the inference model ``q_phi`` (amortised posterior initialisation)."""
    inference_grad_clip: float | None = None


@dataclass
class LossTerms:
    """The losses of one iteration (with graphs) and the chains that produced them."""

    prior_loss: Tensor | None
    generator_loss: Tensor
    log_likelihood: Tensor
    energy_pos: Tensor | None
    energy_neg: Tensor | None
    prior_chain: LangevinResult | None
    posterior_chain: LangevinResult
    inference_loss: Tensor | None = None


GradHook = Callable[[list[nn.Module]], None]


class LatentEBM(nn.Module):
    """``p(x, z) = p_alpha(z) p_beta(x | z)`` with short-run Langevin for prior and posterior.

    Args:
        prior: :class:`~latentebm.prior.EnergyPrior` (or the plain
            :class:`~latentebm.prior.GaussianPrior` for the fixed-prior baseline).
        generator: any module following :class:`~latentebm.generators.Generator`.
        prior_chain: the K0-step sampler of ``p_alpha(z)`` (Table 5: 60 steps, a0 = 0.4).
        posterior_chain: the K1-step sampler of ``p(z | x)`` (Table 5: 20 steps, a1 = 0.1).
        inference: ``q_phi(z | x)`` whose samples start the posterior chain (None: the chain
            starts from ``N(0, sigma^2 I)``); see :mod:`latentebm.inference`.
        replay: a replay buffer that starts the *training* prior chains (None: from
            ``N(0, sigma^2 I)``); generation always starts from the reference.
        posterior_memory: per-example posterior chain ends that start the *training*
            posterior chains of examples seen before (given their ``indices``).
        compile_mode: ``torch.compile`` the chains' log densities with this mode
            (:mod:`latentebm.compiling`); None: eager.
    """

    def __init__(
        self,
        prior: GaussianPrior,
        generator: nn.Module,
        prior_chain: LangevinSampler,
        posterior_chain: LangevinSampler,
        *,
        inference: nn.Module | None = None,
        replay: ReplayBuffer | None = None,
        posterior_memory: PosteriorMemory | None = None,
        compile_mode: CompileMode | None = None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.generator = generator
        self.prior_chain = prior_chain
        self.posterior_chain = posterior_chain
        self.inference = inference
        self.replay = replay
        self.posterior_memory = posterior_memory
        self.compile_mode = compile_mode
        self._compiled: dict[str, Callable[..., Tensor]] = {}

    @property
    def z_dim(self) -> int:
        return self.prior.z_dim

    @property
    def device(self) -> torch.device:
        """Where the generator's parameters (or buffers) live; the CPU if it has neither."""
        for tensor in (*self.generator.parameters(), *self.generator.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ----------------------------------------------------------------------------- sampling
    def _joint_log_density(self, x: Tensor, z: Tensor) -> Tensor:
        return self.generator.log_likelihood(x, z) + self.prior.log_density(z)

    def _chain_function(self, name: str, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """``fn``, or its compiled version (made once) when ``compile_mode`` is set."""
        if self.compile_mode is None:
            return fn
        if name not in self._compiled:
            self._compiled[name] = compile_log_density(fn, self.compile_mode)
        return self._compiled[name]

    def posterior_log_density(self, x: Tensor) -> LogDensity:
        """``z -> log p_beta(x | z) + log p_alpha(z)`` (unnormalised): the posterior target."""
        joint = self._chain_function("posterior", self._joint_log_density)

        def log_density(z: Tensor) -> Tensor:
            return joint(x, z)

        return log_density

    def sample_prior(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        record_steps: tuple[int, ...] = (),
        persistent: bool = False,
    ) -> LangevinResult:
        """``z^- ~ p~_alpha(z)``: K0 Langevin steps from ``N(0, sigma^2 I)`` (Algorithm 1, step 2).

        With ``persistent`` and a replay buffer, the chains start from the buffer (and their ends
        are stored back): the learning step's prior chain. A Gaussian prior is sampled exactly
        (no chain) unless ``n_steps`` is given.
        """

        def reference(k: int) -> Tensor:
            return self.prior.sample_reference(k, generator=generator, device=self.device)

        indices = None
        if persistent and self.replay is not None:
            indices, z_init = self.replay.draw(n, reference, generator)
        else:
            z_init = reference(n)
        if not self.prior.has_energy and n_steps is None:
            n_steps = 0
        with frozen(self):
            result = self.prior_chain.run(
                self._chain_function("prior", self.prior.log_density),
                z_init,
                generator=generator,
                n_steps=n_steps,
                record_steps=record_steps,
            )
        if indices is not None:
            assert self.replay is not None
            self.replay.update(indices, result.z)
        return result

    def sample_posterior(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        indices: Tensor | None = None,
    ) -> LangevinResult:
        """``z^+ ~ p~_theta(z | x)``: K1 Langevin steps (step 3) from ``N(0, sigma^2 I)``, or from
        ``q_phi(z | x)`` when the model has an inference model. With a posterior memory and the
        examples' training-split ``indices``, examples seen before start from their stored chain
        ends, and the new ends are stored."""

        def reference(n: int) -> Tensor:
            if self.inference is not None:
                return self.inference.sample(x, generator=generator)
            return self.prior.sample_reference(n, generator=generator, device=self.device)

        memory = self.posterior_memory if indices is not None else None
        if memory is not None:
            assert indices is not None
            z_init = memory.initial(indices, reference)
        else:
            z_init = reference(x.shape[0])
        with frozen(self):
            result = self.posterior_chain.run(
                self.posterior_log_density(x), z_init, generator=generator, n_steps=n_steps
            )
        if memory is not None:
            assert indices is not None
            memory.update(indices, result.z)
        return result

    @torch.no_grad()
    def generate(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        n_steps: int | None = None,
        **decode_opts: Any,
    ) -> Any:
        """Ancestral sampling: ``z ~ p~_alpha(z)``, then ``x = generator.sample(z)``."""
        z = self.sample_prior(n, generator=generator, n_steps=n_steps).z
        return self.generator.sample(z, generator=generator, **decode_opts)

    # ----------------------------------------------------------------------------- learning
    def compute_losses(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        indices: Tensor | None = None,
    ) -> LossTerms:
        """Run both chains on the batch and build ``L_alpha`` and ``L_beta`` (eqs. 10-11).

        ``indices``: the examples' positions in the training split (persistent posterior
        chains); ignored without a posterior memory.
        """
        prior_chain = None
        if self.prior.has_energy:
            prior_chain = self.sample_prior(x.shape[0], generator=generator, persistent=True)
        posterior_chain = self.sample_posterior(x, generator=generator, indices=indices)
        z_pos = posterior_chain.z
        log_likelihood = self.generator.log_likelihood(x, z_pos)
        generator_loss = -log_likelihood.mean()
        prior_loss = energy_pos = energy_neg = None
        if prior_chain is not None:
            energy_pos = self.prior.energy(z_pos)
            energy_neg = self.prior.energy(prior_chain.z)
            prior_loss = energy_neg.mean() - energy_pos.mean()
        inference_loss = None
        if self.inference is not None:  # teach q_phi with the revised samples (Cui and Han 2023)
            inference_loss = -self.inference.log_prob(z_pos.detach(), x).mean()
        return LossTerms(
            prior_loss=prior_loss,
            generator_loss=generator_loss,
            log_likelihood=log_likelihood.detach(),
            energy_pos=None if energy_pos is None else energy_pos.detach(),
            energy_neg=None if energy_neg is None else energy_neg.detach(),
            prior_chain=prior_chain,
            posterior_chain=posterior_chain,
            inference_loss=inference_loss,
        )

    def learning_step(
        self,
        x: Tensor,
        optimizers: Optimizers,
        *,
        generator: torch.Generator | None = None,
        grad_hook: GradHook | None = None,
        indices: Tensor | None = None,
    ) -> dict[str, float]:
        """One iteration of Algorithm 1. Returns its named terms as floats.

        Terms: ``energy_pos`` / ``energy_neg`` (mean f on posterior / prior samples),
        ``energy_diff`` (their difference: the d_t of Nijkamp, Hill, Han, Zhu and Wu (2020), "On
        the Anatomy of MCMC-Based Maximum Likelihood Learning of Energy-Based Models"),
        ``recon_nll`` (mean ``-log p_beta(x|z^+)`` per example), ``prior_loss``,
        ``posterior_grad_norm`` and ``prior_grad_norm`` (mean ``||grad log pi||`` along each
        chain: the r_t of Nijkamp et al. 2020),
        ``generator_param_grad_norm`` and ``prior_param_grad_norm`` (before clipping); with an
        inference model also ``inference_nll`` (``-mean log q_phi(z^+ | x)``) and
        ``inference_param_grad_norm``.

        ``grad_hook(modules)`` runs after the backward pass and before clipping (the trainer
        averages gradients over processes there). Where a term of this process's own batch is
        not finite, the hook gets NaN gradients, so that the average is NaN on every process
        and every process raises at the same step: this one naming its own term, the others a
        parameter gradient norm (NaN).

        Raises:
            NonFiniteError: a term is NaN or infinite (this batch's own terms are checked
                first); no parameter was changed.
        """
        self.zero_grad(set_to_none=True)
        losses = self.compute_losses(x, generator=generator, indices=indices)
        total = losses.generator_loss
        if losses.prior_loss is not None:
            total = total + losses.prior_loss
        if losses.inference_loss is not None:
            total = total + losses.inference_loss
        total.backward()
        local = _batch_terms(losses)
        if grad_hook is not None:
            modules: list[nn.Module] = [self.prior, self.generator]
            if self.inference is not None:
                modules.append(self.inference)
            if not all(math.isfinite(value) for value in local.values()):
                # a term of this process's batch alone is not finite: NaN gradients make the
                # hook's average NaN on every process, so every process raises at this step (an
                # update on some processes only would leave their models different)
                _poison_gradients(modules)
            grad_hook(modules)

        terms: dict[str, float] = {
            "recon_nll": local["recon_nll"],
            "posterior_grad_norm": local["posterior_grad_norm"],
            "generator_param_grad_norm": _clip(self.generator, optimizers.generator_grad_clip),
        }
        if losses.prior_loss is not None:
            terms.update(
                prior_loss=local["prior_loss"],
                energy_pos=local["energy_pos"],
                energy_neg=local["energy_neg"],
                energy_diff=local["energy_pos"] - local["energy_neg"],
                prior_grad_norm=local["prior_grad_norm"],
                prior_param_grad_norm=_clip(self.prior, optimizers.prior_grad_clip),
            )
        if losses.inference_loss is not None:
            assert self.inference is not None
            terms.update(
                inference_nll=local["inference_nll"],
                inference_param_grad_norm=_clip(self.inference, optimizers.inference_grad_clip),
            )
        for name, value in [*local.items(), *terms.items()]:  # this batch's own terms first
            if not math.isfinite(value):
                self.zero_grad(set_to_none=True)
                raise NonFiniteError(name, value, own_batch=name in local)
        optimizers.generator.step()
        if optimizers.prior is not None and losses.prior_loss is not None:
            optimizers.prior.step()
        if optimizers.inference is not None and losses.inference_loss is not None:
            optimizers.inference.step()
        return terms


def _batch_terms(losses: LossTerms) -> dict[str, float]:
    """The terms of :meth:`LatentEBM.learning_step` that come from this process's batch alone
    (in a data-parallel run each process has its own; the parameters' gradient norms come
    after averaging)."""
    local = {
        "recon_nll": float(losses.generator_loss.detach()),
        "posterior_grad_norm": losses.posterior_chain.mean_grad_norm,
    }
    if losses.prior_loss is not None:
        assert losses.energy_pos is not None and losses.energy_neg is not None
        assert losses.prior_chain is not None
        local.update(
            prior_loss=float(losses.prior_loss.detach()),
            energy_pos=float(losses.energy_pos.mean()),
            energy_neg=float(losses.energy_neg.mean()),
            prior_grad_norm=losses.prior_chain.mean_grad_norm,
        )
    if losses.inference_loss is not None:
        local["inference_nll"] = float(losses.inference_loss.detach())
    return local


def _poison_gradients(modules: list[nn.Module]) -> None:
    """Fill every existing ``.grad`` of ``modules`` with NaN (:meth:`LatentEBM.learning_step`)."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))


def _clip(module: nn.Module, max_norm: float | None) -> float:
    """Clip the gradient norm of ``module`` to ``max_norm`` (if set); return the norm before."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return 0.0
    limit = float("inf") if max_norm is None else max_norm
    return float(torch.nn.utils.clip_grad_norm_(params, limit))
