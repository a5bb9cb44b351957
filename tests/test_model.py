"""Tests of `LatentEBM.compute_losses` / `learning_step` (Pang, Han, Nijkamp, Zhu and Wu (2020),
"Learning Latent Space Energy-Based Prior Model", Algorithm 1, eqs. 10-11).

Known-answer setup: a linear tilt ``f(z) = w . z + b0`` (one ``nn.Linear(d, 1)``), for which
``grad_w f(z) = z`` and ``grad_b0 f(z) = 1``, so

    grad_w L_alpha = mean z^- - mean z^+,   grad_b0 L_alpha = 0,

and a linear-Gaussian generator ``log p(x|z) = -||x - (W z + b)||^2 / (2 tau^2)``, for which

    grad_W L_beta = -mean_i r_i z_i^T / tau^2,   grad_b L_beta = -mean_i r_i / tau^2,
    r_i = x_i - W z_i^+ - b.

All comparisons are exact up to float32 rounding (no Monte Carlo error enters: the chains'
own samples are used).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from latentebm.langevin import LangevinSampler
from latentebm.model import LatentEBM, LossTerms, NonFiniteError, Optimizers
from latentebm.prior import EnergyPrior, GaussianPrior
from tests.test_langevin import LinearGaussianGenerator as LinearGaussian

Z_DIM, X_DIM, BATCH, TAU = 3, 4, 6, 0.5


class LinearGaussianGenerator(LinearGaussian):
    """The linear-Gaussian generator of test_langevin.py with random ``W`` and ``b``."""

    def __init__(self, z_dim: int, x_dim: int, tau: float) -> None:
        super().__init__(0.5 * torch.randn(x_dim, z_dim), 0.1 * torch.randn(x_dim), tau)


class NaNGenerator(LinearGaussianGenerator):
    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return super().log_likelihood(x, z) * float("nan")


class LinearTiltPrior(GaussianPrior):
    """``f(z) = w . z + b0``: p_alpha = N(sigma^2 w, sigma^2 I)."""

    has_energy = True

    def __init__(self, z_dim: int, prior_sigma: float = 1.0) -> None:
        super().__init__(z_dim, prior_sigma)
        self.linear = nn.Linear(z_dim, 1)

    def energy(self, z: Tensor) -> Tensor:
        return self.linear(z).squeeze(-1)


def make_model(prior: GaussianPrior | None = None, generator_cls: type = LinearGaussianGenerator):
    torch.manual_seed(0)
    prior = LinearTiltPrior(Z_DIM) if prior is None else prior
    gen = generator_cls(Z_DIM, X_DIM, TAU)
    return LatentEBM(prior, gen, LangevinSampler(8, 0.4), LangevinSampler(6, 0.1))


def make_batch() -> Tensor:
    return torch.randn(BATCH, X_DIM, generator=torch.Generator().manual_seed(11))


def clone_generator(g: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(g.get_state())
    return twin


def expected_generator_grads(model: LatentEBM, x: Tensor, z_pos: Tensor) -> tuple[Tensor, Tensor]:
    gen = model.generator
    with torch.no_grad():
        resid = x - gen.mean(z_pos)
        grad_w = -(resid.unsqueeze(2) * z_pos.unsqueeze(1)).mean(dim=0) / gen.tau**2
        grad_b = -resid.mean(dim=0) / gen.tau**2
    return grad_w, grad_b


def params_snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------- gradients
def test_compute_losses_gradients_match_closed_form() -> None:
    model = make_model()
    x = make_batch()
    losses = model.compute_losses(x, generator=torch.Generator().manual_seed(0))
    assert isinstance(losses, LossTerms)
    assert losses.prior_chain is not None and losses.prior_loss is not None
    z_neg, z_pos = losses.prior_chain.z, losses.posterior_chain.z
    assert z_neg.shape == z_pos.shape == (BATCH, Z_DIM)
    assert not z_neg.requires_grad and not z_pos.requires_grad

    # the returned terms are what they claim to be
    prior = model.prior
    with torch.no_grad():
        torch.testing.assert_close(losses.energy_pos, prior.energy(z_pos))
        torch.testing.assert_close(losses.energy_neg, prior.energy(z_neg))
        torch.testing.assert_close(losses.log_likelihood, model.generator.log_likelihood(x, z_pos))
    torch.testing.assert_close(
        losses.prior_loss.detach(), losses.energy_neg.mean() - losses.energy_pos.mean()
    )
    torch.testing.assert_close(losses.generator_loss.detach(), -losses.log_likelihood.mean())

    # eq. 10 as a loss: grad_w L_alpha = mean z- - mean z+, grad_b0 = 0; no generator grads
    losses.prior_loss.backward()
    assert model.generator.weight.grad is None and model.generator.bias.grad is None
    torch.testing.assert_close(
        prior.linear.weight.grad, (z_neg.mean(dim=0) - z_pos.mean(dim=0)).unsqueeze(0)
    )
    torch.testing.assert_close(prior.linear.bias.grad, torch.zeros(1), rtol=0, atol=1e-7)

    # eq. 11 as a loss: gradient of -mean log p(x|z+) at the posterior samples; no prior grads
    prior.zero_grad(set_to_none=True)
    losses.generator_loss.backward()
    assert prior.linear.weight.grad is None
    grad_w, grad_b = expected_generator_grads(model, x, z_pos)
    torch.testing.assert_close(model.generator.weight.grad, grad_w)
    torch.testing.assert_close(model.generator.bias.grad, grad_b)


def test_learning_step_sgd_moves_parameters_by_the_closed_form() -> None:
    model = make_model()
    x = make_batch()
    lr_prior, lr_gen = 0.05, 0.02
    opts = Optimizers(
        generator=torch.optim.SGD(model.generator.parameters(), lr=lr_gen),
        prior=torch.optim.SGD(model.prior.parameters(), lr=lr_prior),
    )
    before = params_snapshot(model)
    g = torch.Generator().manual_seed(3)
    replay = clone_generator(g)

    captured: list[LossTerms] = []
    original = model.compute_losses

    def capturing(
        x: Tensor, *, generator: torch.Generator | None = None, indices: Tensor | None = None
    ) -> LossTerms:
        out = original(x, generator=generator, indices=indices)
        captured.append(out)
        return out

    model.compute_losses = capturing  # type: ignore[method-assign]
    terms = model.learning_step(x, opts, generator=g)
    assert len(captured) == 1
    assert captured[0].prior_chain is not None
    z_neg, z_pos = captured[0].prior_chain.z, captured[0].posterior_chain.z

    # Algorithm 1 step 4: alpha <- alpha + eta_0 * mean[grad f(z+) - grad f(z-)]
    expected_w = before["prior.linear.weight"] + lr_prior * (z_pos.mean(0) - z_neg.mean(0))
    torch.testing.assert_close(model.prior.linear.weight.detach(), expected_w)
    torch.testing.assert_close(model.prior.linear.bias.detach(), before["prior.linear.bias"])
    # step 5: beta <- beta + eta_1 * mean grad log p(x|z+) (at the old beta)
    with torch.no_grad():
        resid = x - (z_pos @ before["generator.weight"].T + before["generator.bias"])
        grad_w = -(resid.unsqueeze(2) * z_pos.unsqueeze(1)).mean(dim=0) / TAU**2
        grad_b = -resid.mean(dim=0) / TAU**2
    torch.testing.assert_close(
        model.generator.weight.detach(), before["generator.weight"] - lr_gen * grad_w
    )
    torch.testing.assert_close(
        model.generator.bias.detach(), before["generator.bias"] - lr_gen * grad_b
    )

    # the norms reported are the parameter-gradient norms before the step
    prior_norm = (z_neg.mean(0) - z_pos.mean(0)).norm().item()
    gen_norm = math.sqrt(grad_w.pow(2).sum().item() + grad_b.pow(2).sum().item())
    assert terms["prior_param_grad_norm"] == pytest.approx(prior_norm, rel=1e-5)
    assert terms["generator_param_grad_norm"] == pytest.approx(gen_norm, rel=1e-5)

    # the chains are reproducible: replaying the generator state gives the same samples
    model.compute_losses = original  # type: ignore[method-assign]
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(before[name])
    again = model.compute_losses(x, generator=replay)
    assert again.prior_chain is not None
    assert torch.equal(again.prior_chain.z, z_neg)
    assert torch.equal(again.posterior_chain.z, z_pos)


def test_learning_step_clips_the_prior_gradient() -> None:
    model = make_model()
    x = make_batch()
    # clip far below the gradient norm, so clipping is active; lr large so the step (length
    # lr * clip = 0.1) is not lost in the float32 rounding of the weights (~6e-8 absolute)
    lr, clip = 100.0, 1e-3
    opts = Optimizers(
        generator=torch.optim.SGD(model.generator.parameters(), lr=0.0),
        prior=torch.optim.SGD(model.prior.parameters(), lr=lr),
        prior_grad_clip=clip,
    )
    before = model.prior.linear.weight.detach().clone()
    replay = torch.Generator().manual_seed(4)
    losses = model.compute_losses(x, generator=clone_generator(replay))
    assert losses.prior_chain is not None
    direction = losses.prior_chain.z.mean(0) - losses.posterior_chain.z.mean(0)  # = grad_w
    terms = model.learning_step(x, opts, generator=replay)
    assert terms["prior_param_grad_norm"] == pytest.approx(direction.norm().item(), rel=1e-5)
    assert direction.norm().item() > 100 * clip
    # clip_grad_norm_ scales by clip / (norm + 1e-6): step length lr * clip up to 1e-6 relative;
    # the difference of two float32 weights of size O(1) carries ~1e-7 absolute rounding
    step = before - model.prior.linear.weight.detach()
    torch.testing.assert_close(
        step.squeeze(0), lr * clip * direction / direction.norm(), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------- terms
def test_learning_step_terms_are_consistent() -> None:
    model = make_model(EnergyPrior(Z_DIM, hidden_dims=(8,)))
    x = make_batch()
    opts = Optimizers(
        generator=torch.optim.Adam(model.generator.parameters(), lr=1e-3),
        prior=torch.optim.Adam(model.prior.parameters(), lr=1e-3),
    )
    g = torch.Generator().manual_seed(5)
    losses = model.compute_losses(x, generator=clone_generator(g))
    assert losses.prior_chain is not None and losses.energy_pos is not None
    assert losses.energy_neg is not None and losses.prior_loss is not None
    seen: list[list[nn.Module]] = []
    terms = model.learning_step(x, opts, generator=g, grad_hook=seen.append)

    assert len(seen) == 1 and seen[0][0] is model.prior and seen[0][1] is model.generator
    assert set(terms) == {
        "recon_nll",
        "posterior_grad_norm",
        "generator_param_grad_norm",
        "prior_loss",
        "energy_pos",
        "energy_neg",
        "energy_diff",
        "prior_grad_norm",
        "prior_param_grad_norm",
    }
    assert all(isinstance(v, float) and math.isfinite(v) for v in terms.values())
    assert terms["energy_diff"] == terms["energy_pos"] - terms["energy_neg"]
    # prior_loss = mean f(z-) - mean f(z+) = -energy_diff (float32 means: rounding ~1e-7 relative)
    assert terms["prior_loss"] == pytest.approx(-terms["energy_diff"], abs=1e-6)
    assert terms["energy_pos"] == pytest.approx(losses.energy_pos.mean().item(), rel=1e-6)
    assert terms["energy_neg"] == pytest.approx(losses.energy_neg.mean().item(), rel=1e-6)
    assert terms["recon_nll"] == pytest.approx(-losses.log_likelihood.mean().item(), rel=1e-6)
    assert terms["prior_grad_norm"] == pytest.approx(losses.prior_chain.mean_grad_norm, rel=1e-6)
    assert terms["posterior_grad_norm"] == pytest.approx(
        losses.posterior_chain.mean_grad_norm, rel=1e-6
    )
    assert terms["prior_grad_norm"] > 0 and terms["posterior_grad_norm"] > 0
    assert losses.prior_chain.grad_norm.shape == (8,)
    assert losses.posterior_chain.grad_norm.shape == (6,)


def test_gaussian_prior_has_only_generator_terms() -> None:
    model = make_model(GaussianPrior(Z_DIM))
    x = make_batch()
    lr = 0.02
    opts = Optimizers(generator=torch.optim.SGD(model.generator.parameters(), lr=lr))
    assert opts.prior is None
    before = params_snapshot(model)
    assert set(before) == {"generator.weight", "generator.bias"}

    g = torch.Generator().manual_seed(6)
    losses = model.compute_losses(x, generator=clone_generator(g))
    assert losses.prior_loss is None and losses.prior_chain is None
    assert losses.energy_pos is None and losses.energy_neg is None

    terms = model.learning_step(x, opts, generator=g)
    assert set(terms) == {"recon_nll", "posterior_grad_norm", "generator_param_grad_norm"}
    assert terms["recon_nll"] == pytest.approx(-losses.log_likelihood.mean().item(), rel=1e-6)
    grad_w, grad_b = expected_generator_grads(
        make_model(GaussianPrior(Z_DIM)), x, losses.posterior_chain.z
    )
    torch.testing.assert_close(
        model.generator.weight.detach(), before["generator.weight"] - lr * grad_w
    )
    torch.testing.assert_close(
        model.generator.bias.detach(), before["generator.bias"] - lr * grad_b
    )


# --------------------------------------------------------------------------- non-finite terms
def test_nan_likelihood_raises_and_changes_nothing() -> None:
    model = make_model(generator_cls=NaNGenerator)
    opts = Optimizers(
        generator=torch.optim.Adam(model.generator.parameters(), lr=0.1),
        prior=torch.optim.Adam(model.prior.parameters(), lr=0.1),
    )
    before = params_snapshot(model)
    with pytest.raises(NonFiniteError, match="recon_nll") as info:
        model.learning_step(make_batch(), opts, generator=torch.Generator().manual_seed(0))
    assert info.value.term == "recon_nll"
    assert math.isnan(info.value.value)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
        assert p.grad is None, name
        assert p.requires_grad, name
    assert not opts.generator.state and opts.prior is not None and not opts.prior.state


@pytest.mark.parametrize(
    ("target", "term"),
    [("prior", "prior_param_grad_norm"), ("generator", "generator_param_grad_norm")],
)
def test_non_finite_parameter_gradient_raises_and_changes_nothing(target: str, term: str) -> None:
    model = make_model()
    opts = Optimizers(
        generator=torch.optim.SGD(model.generator.parameters(), lr=0.1),
        prior=torch.optim.SGD(model.prior.parameters(), lr=0.1),
    )
    before = params_snapshot(model)

    def poison(modules: list[nn.Module]) -> None:
        module = modules[0] if target == "prior" else modules[1]
        next(module.parameters()).grad.fill_(float("inf"))  # type: ignore[union-attr]

    with pytest.raises(NonFiniteError, match=term) as info:
        model.learning_step(
            make_batch(), opts, generator=torch.Generator().manual_seed(0), grad_hook=poison
        )
    assert info.value.term == term
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def _with_infinite(model: LatentEBM, term: str) -> None:
    """Make ``model``'s ``term`` (a loss of :class:`LossTerms`) infinite in value while its
    gradient stays that of the finite loss (the added constant has none)."""
    import dataclasses

    healthy = model.compute_losses

    def compute_losses(*args: object, **kwargs: object) -> LossTerms:
        losses = healthy(*args, **kwargs)  # type: ignore[arg-type]
        value = getattr(losses, term) + torch.tensor(float("inf"))
        return dataclasses.replace(losses, **{term: value})

    model.compute_losses = compute_losses  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("term", "name"), [("generator_loss", "recon_nll"), ("prior_loss", "prior_loss")]
)
@pytest.mark.parametrize("hook", [None, "no-op"])
def test_a_non_finite_loss_is_named_with_or_without_a_hook(term: str, name: str, hook) -> None:
    """One process (the trainer passes a hook that does nothing then): the error names the
    infinite loss, not the NaN gradients that are made for other processes."""
    model = make_model(EnergyPrior(Z_DIM, hidden_dims=(8,)))
    before = params_snapshot(model)
    _with_infinite(model, term)
    opts = Optimizers(
        generator=torch.optim.SGD(model.generator.parameters(), lr=0.1),
        prior=torch.optim.SGD(model.prior.parameters(), lr=0.1),
    )
    with pytest.raises(NonFiniteError) as info:
        model.learning_step(
            make_batch(),
            opts,
            generator=torch.Generator().manual_seed(0),
            grad_hook=None if hook is None else (lambda modules: None),
        )
    assert (info.value.term, info.value.value, info.value.own_batch) == (name, math.inf, True)
    for key, p in model.named_parameters():
        assert torch.equal(p.detach(), before[key]), key


@pytest.mark.parametrize(
    ("term", "name"), [("generator_loss", "recon_nll"), ("prior_loss", "prior_loss")]
)
def test_a_non_finite_term_on_one_process_stops_every_process_at_that_step(
    term: str, name: str
) -> None:
    """Data parallel: one process's batch gives an infinite loss with finite gradients.
    Without an agreement that process skips while the other updates, and the two models
    part; with it both raise at the same step and neither changes (two processes stood in
    for by two threads whose hook averages their gradients)."""
    import threading

    models = [make_model(EnergyPrior(Z_DIM, hidden_dims=(8,))) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    before = params_snapshot(models[0])
    _with_infinite(models[1], term)
    barrier = threading.Barrier(2, timeout=30)
    grads: list[list[Tensor]] = [[], []]

    def averaging_hook(rank: int):
        def hook(modules: list[nn.Module]) -> None:
            grads[rank] = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
            barrier.wait()
            pairs = zip(grads[rank], grads[1 - rank], strict=True)
            averaged = [(mine + other) / 2 for mine, other in pairs]
            barrier.wait()
            for g, value in zip(grads[rank], averaged, strict=True):
                g.copy_(value)

        return hook

    outcome: list[object] = [None, None]

    def run(rank: int) -> None:
        model = models[rank]
        opts = Optimizers(
            generator=torch.optim.SGD(model.generator.parameters(), lr=0.1),
            prior=torch.optim.SGD(model.prior.parameters(), lr=0.1),
        )
        try:
            outcome[rank] = model.learning_step(
                make_batch(),
                opts,
                generator=torch.Generator().manual_seed(rank),
                grad_hook=averaging_hook(rank),
            )
        except Exception as error:  # noqa: BLE001 - recorded and asserted below
            outcome[rank] = error
            if not isinstance(error, NonFiniteError):
                barrier.abort()  # the other thread stops waiting

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    sick, healthy = outcome[1], outcome[0]
    assert isinstance(sick, NonFiniteError), sick
    assert (sick.term, sick.own_batch) == (name, True)
    assert isinstance(healthy, NonFiniteError), healthy  # the healthy process stops too
    assert healthy.term == "generator_param_grad_norm" and not healthy.own_batch
    assert math.isnan(healthy.value)
    for model in models:
        for key, p in model.named_parameters():
            assert torch.equal(p.detach(), before[key]), key


def test_gradients_do_not_pile_up_without_a_prior_optimiser() -> None:
    """Every step starts from zero gradients, also for modules that have no optimiser."""
    from latentebm.generators.lstm import LSTMDecoder

    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(embedding_dim=4, hidden_dim=6),
        z_dim=3,
        vocab_size=7,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    model = LatentEBM(
        EnergyPrior(3, hidden_dims=(5,)), decoder, LangevinSampler(3, 0.4), LangevinSampler(3, 0.1)
    )
    x = torch.tensor([[1, 3, 4, 2, 0], [1, 5, 6, 4, 2]])
    optimizers = Optimizers(generator=torch.optim.SGD(decoder.parameters(), lr=0.0))
    norms = [
        model.learning_step(x, optimizers, generator=torch.Generator().manual_seed(0))[
            "prior_param_grad_norm"
        ]
        for _ in range(3)
    ]
    assert norms[0] > 0
    assert norms[0] == pytest.approx(norms[1], rel=1e-6) == pytest.approx(norms[2], rel=1e-6)
