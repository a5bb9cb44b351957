"""Chain initialisation: persistent prior chains (replay buffer) and amortised posterior chains
(inference model q_phi, as in Cui and Han (2023), "Learning Energy-Based Model via Dual-MCMC
Teaching")."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from latentebm.config import RecipeError, load_recipe
from latentebm.inference import SequenceEncoder
from latentebm.langevin import LangevinSampler
from latentebm.model import LatentEBM, Optimizers
from latentebm.prior import GaussianPrior
from latentebm.replay import PosteriorMemory, ReplayBuffer
from tests.test_train import assert_same, fit, load_latest, read_metrics

AMORTIZED = [
    "model.posterior_chain.init=amortized",
    "model.inference._component_=latentebm.inference.SequenceEncoder",
    "model.inference.embedding_dim=8",
    "model.inference.hidden_dim=8",
]
PERSISTENT = [
    "model.prior_chain.init=persistent",
    "model.prior_chain.buffer_size=50",
    "model.prior_chain.reinit_rate=0.1",
]
PERSISTENT_POSTERIOR = ["model.posterior_chain.init=persistent"]


# ----------------------------------------------------------------------------- replay buffer
def test_replay_buffer_draw_and_update() -> None:
    g = torch.Generator().manual_seed(0)
    calls: list[int] = []

    def reference(k: int) -> Tensor:
        calls.append(k)
        return torch.full((k, 2), -1.0)

    buffer = ReplayBuffer(10, 2, reinit_rate=0.0)
    indices, z = buffer.draw(4, reference, g)
    assert calls == [10] and bool(buffer.filled)  # filled from the reference once
    assert torch.equal(z, torch.full((4, 2), -1.0))
    buffer.update(indices, torch.arange(8.0).view(4, 2))
    for row, index in enumerate(indices.tolist()):
        # with repeated indices the last write wins
        last = max(r for r, i in enumerate(indices.tolist()) if i == index)
        assert torch.equal(buffer.z[index], torch.arange(8.0).view(4, 2)[last])
        del row
    again, z2 = buffer.draw(6, reference, g)
    assert calls == [10]  # reinit_rate 0: nothing fresh
    assert torch.equal(z2, buffer.z[again])
    always_fresh = ReplayBuffer(10, 2, reinit_rate=1.0)
    always_fresh.draw(1, reference, g)
    _, z3 = always_fresh.draw(5, reference, g)
    assert calls[-1] == 5 and torch.equal(z3, torch.full((5, 2), -1.0))
    with pytest.raises(ValueError, match="reinit_rate"):
        ReplayBuffer(3, 2, reinit_rate=1.5)


class QuadraticPrior(GaussianPrior):
    """``f(z) = -(c/2) ||z||^2``: ``p_alpha = N(0, v I)`` with ``1/v = 1/sigma^2 + c``
    (the closed form of docs/conventions.md)."""

    has_energy = True

    def __init__(self, z_dim: int, c: float) -> None:
        super().__init__(z_dim, 1.0)
        self.c = c

    def energy(self, z: Tensor) -> Tensor:
        return -0.5 * self.c * z.pow(2).sum(dim=1)


class NoGenerator(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        return (0.0 * self.weight).expand(z.shape[0])  # flat: the posterior is the prior


def test_persistent_chains_reach_the_stationary_prior_that_short_runs_miss() -> None:
    """Target N(0, 0.2 I) (c = 4). Five steps at a = 0.2 from N(0, I) leave the variance far
    above 0.2; chains continued through the buffer converge to it."""
    c, z_dim, n = 4.0, 2, 500
    target_var = 1.0 / (1.0 + c)
    prior = QuadraticPrior(z_dim, c)
    chain = LangevinSampler(5, 0.2)
    model = LatentEBM(
        prior, NoGenerator(), chain, LangevinSampler(1, 0.1), replay=ReplayBuffer(n, z_dim, 0.0)
    )
    g = torch.Generator().manual_seed(0)
    short_run = model.sample_prior(4000, generator=g).z
    assert short_run.var(dim=0).mean() > 1.5 * target_var
    for _ in range(60):
        model.sample_prior(n, generator=g, persistent=True)
    persistent = model.replay.z  # type: ignore[union-attr]
    # sampling error of a variance from ~500 x 2 draws is ~5 %; the step-size bias is ~a^2/4
    assert persistent.var(dim=0).mean().item() == pytest.approx(target_var, rel=0.15)
    assert persistent.mean().abs() < 0.05


# ----------------------------------------------------------------------------- q_phi
def encoder(z_dim: int = 3) -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(
        SequenceEncoder.Config(embedding_dim=4, hidden_dim=5),
        z_dim=z_dim,
        vocab_size=9,
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )


def test_encoder_log_prob_is_a_normalised_gaussian_and_ignores_padding() -> None:
    q = encoder()
    x = torch.tensor([[1, 3, 4, 2, 0, 0], [1, 5, 2, 0, 0, 0]])
    z = torch.randn(2, 3)
    mean, log_std = q(x)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).sum(dim=1)
    torch.testing.assert_close(q.log_prob(z, x), expected)
    torch.testing.assert_close(q(x[:, :4])[0], mean)  # padding does not change the encoding
    draws = q.sample(x[:1].repeat(4000, 1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(dim=0), mean[0].detach(), atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(dim=0), log_std[0].exp().detach(), atol=0.1, rtol=0)
    assert not q.sample(x).requires_grad
    assert math.isfinite(float(q.log_prob(z, x).sum().detach()))


def test_q_phi_learns_the_posterior_it_initialises() -> None:
    """With a flat likelihood and f(z) = -(c/2)||z||^2 the posterior is N(0, 0.2 I); q_phi
    starts near N(., I), and teaching it with the revised samples (Cui and Han 2023) must bring its
    standard deviation to sqrt(0.2) and its mean to 0."""
    c, z_dim = 4.0, 3
    q = encoder(z_dim)
    model = LatentEBM(
        QuadraticPrior(z_dim, c),
        NoGenerator(),
        LangevinSampler(1, 0.2),
        LangevinSampler(20, 0.25),
        inference=q,
    )
    optimizers = Optimizers(
        generator=torch.optim.SGD(model.generator.parameters(), lr=0.0),
        inference=torch.optim.Adam(q.parameters(), lr=2e-2),
    )
    x = torch.tensor([[1, 3, 4, 2], [1, 5, 6, 2]]).repeat(32, 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        terms = model.learning_step(x, optimizers, generator=g)
    mean, log_std = q(x[:2])
    target_std = math.sqrt(1.0 / (1.0 + c))
    torch.testing.assert_close(
        log_std.exp(), torch.full_like(log_std, target_std), atol=0.08, rtol=0
    )
    assert mean.abs().max() < 0.15
    assert math.isfinite(terms["inference_nll"])


def test_amortized_training_runs_and_starts_the_chain_from_q(tiny_recipe, tmp_path: Path) -> None:
    recipe = tiny_recipe(trainer={"log_every": 1, "samples_at_end": 0})
    run = fit(recipe, *AMORTIZED, "trainer.max_steps=30", f"trainer.run_dir={tmp_path / 'a'}")
    rows = [r for r in read_metrics(run) if "inference_nll" in r]
    assert len(rows) == 30 and all(r["inference_param_grad_norm"] > 0 for r in rows)
    assert all(math.isfinite(r["inference_nll"]) for r in rows)
    state = load_latest(run)
    assert state["optim_inference"] is not None
    assert any(key.startswith("inference.") for key in state["model"])

    import latentebm

    model = latentebm.load(run).model
    assert model.inference is not None
    x = latentebm.load(run).task.encode(["the cat sat on the mat", "a dog ran"])
    start = model.posterior_chain.run  # the chain's z_init must be q_phi's sample
    seen: list[Tensor] = []

    def spy(log_density, z_init, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(z_init.clone())
        return start(log_density, z_init, **kwargs)

    model.posterior_chain.run = spy  # type: ignore[method-assign]
    model.sample_posterior(x, generator=torch.Generator().manual_seed(3))
    expected = model.inference.sample(x, torch.Generator().manual_seed(3))
    torch.testing.assert_close(seen[0], expected)


@pytest.mark.parametrize(
    "options",
    [AMORTIZED, PERSISTENT, PERSISTENT_POSTERIOR],
    ids=["amortized", "persistent", "persistent-posterior"],
)
def test_resume_equals_uninterrupted_with_chain_init(
    tiny_recipe, tmp_path: Path, options: list[str]
) -> None:
    recipe = tiny_recipe(trainer={"log_every": 1, "checkpoint_every": 3, "samples_at_end": 0})
    straight = fit(recipe, *options, "trainer.max_steps=6", f"trainer.run_dir={tmp_path / 'a'}")
    cut = tmp_path / "b"
    fit(recipe, *options, "trainer.max_steps=3", f"trainer.run_dir={cut}")
    fit(recipe, *options, "trainer.max_steps=6", "trainer.resume=auto", f"trainer.run_dir={cut}")
    a, b = load_latest(straight), load_latest(cut)
    for key in ("model", "optim_generator", "optim_prior", "optim_inference", "rng"):
        assert_same(a[key], b[key], key)
    if options is PERSISTENT:
        assert "replay.z" in a["model"] and bool(a["model"]["replay.filled"])
    if options is PERSISTENT_POSTERIOR:
        seen = a["model"]["posterior_memory.seen"]
        assert 0 < int(seen.sum()) <= seen.numel()  # 6 batches of 16 of the training split


def test_bad_init_combinations_are_one_line_errors(tiny_recipe) -> None:
    recipe = tiny_recipe()
    cases = {
        "model.prior_chain.init=amortized": "amortized is for the posterior chain",
        "model.posterior_chain.init=amortized": "amortized needs model.inference",
        "model.prior_chain.reinit_rate=2": "must be in [0, 1]",
    }
    for override, message in cases.items():
        with pytest.raises(RecipeError, match=message.replace("[", r"\[")) as error:
            load_recipe(recipe, [override])
        assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- posterior memory
def test_posterior_memory_starts_seen_examples_where_they_stopped() -> None:
    memory = PosteriorMemory(5, 2)

    def reference(k: int) -> Tensor:
        return torch.full((k, 2), -1.0)

    first = memory.initial(torch.tensor([0, 3]), reference)
    assert torch.equal(first, torch.full((2, 2), -1.0))
    memory.update(torch.tensor([0, 3]), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    again = memory.initial(torch.tensor([3, 1, 0]), reference)
    assert again.tolist() == [[3.0, 4.0], [-1.0, -1.0], [1.0, 2.0]]
    assert memory.seen.tolist() == [True, False, False, True, False]


def test_persistent_posterior_chains_converge_over_visits() -> None:
    """Flat likelihood and f(z) = -(c/2)||z||^2: the posterior of every example is N(0, 0.2 I).
    Three steps at a = 0.2 from N(0, I) miss it; resuming each example's chain on every visit
    reaches it."""
    c, z_dim, n = 4.0, 2, 400
    model = LatentEBM(
        QuadraticPrior(z_dim, c),
        NoGenerator(),
        LangevinSampler(1, 0.2),
        LangevinSampler(3, 0.2),
        posterior_memory=PosteriorMemory(n, z_dim),
    )
    x = torch.zeros(n, 1)
    g = torch.Generator().manual_seed(0)
    short = model.sample_posterior(x, generator=g).z
    assert short.var(dim=0).mean() > 1.5 / (1 + c)
    indices = torch.arange(n)
    for _ in range(80):
        end = model.sample_posterior(x, generator=g, indices=indices).z
    assert end.var(dim=0).mean().item() == pytest.approx(1 / (1 + c), rel=0.15)
    assert torch.equal(model.posterior_memory.z, end)  # type: ignore[union-attr]
