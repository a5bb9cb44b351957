"""Tests of the fused, chunked linear + cross-entropy for a frozen output layer.

:class:`FrozenLinearCrossEntropy` must be the mathematics of the plain
``F.cross_entropy(F.linear(h, W, b), t, ignore_index, reduction="none")``: the same per-row nll
(0 at ignored rows) and the same gradient with respect to the hidden states for any upstream
gradient; :func:`linear_cross_entropy` must take the plain path whenever weight gradients are
needed, so training is unchanged bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from latentebm.generators.fused import FrozenLinearCrossEntropy, linear_cross_entropy
from latentebm.generators.lstm import LSTMDecoder
from latentebm.langevin import LangevinSampler, frozen
from latentebm.model import LatentEBM, Optimizers
from latentebm.prior import EnergyPrior

N, H, V, IGNORE = 37, 6, 11, 3
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


def problem(dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen, dtype=dtype)
    weight = torch.randn(V, H, generator=gen, dtype=dtype)
    bias = torch.randn(V, generator=gen, dtype=dtype)
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[::4] = IGNORE  # ignored rows, including the first and the last
    targets[N - 1] = IGNORE
    return hidden, weight, bias, targets


def plain_nll(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="none")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, N, 1000])
def test_nll_and_hidden_gradient_match_plain(dtype: torch.dtype, chunk_size: int) -> None:
    hidden, weight, bias, targets = problem(dtype)
    upstream = torch.randn(N, generator=torch.Generator().manual_seed(9), dtype=dtype)
    h_plain = hidden.clone().requires_grad_(True)
    nll_plain = plain_nll(h_plain, weight, bias, targets)
    (grad_plain,) = torch.autograd.grad(nll_plain, h_plain, upstream)

    h_fused = hidden.clone().requires_grad_(True)
    nll = FrozenLinearCrossEntropy.apply(h_fused, weight, bias, targets, IGNORE, chunk_size)
    (grad,) = torch.autograd.grad(nll, h_fused, upstream)

    tol = TOLERANCE[dtype]
    torch.testing.assert_close(nll, nll_plain.detach(), rtol=tol, atol=tol)
    assert torch.all(nll[targets == IGNORE] == 0)
    torch.testing.assert_close(grad, grad_plain, rtol=tol, atol=tol)
    assert torch.all(grad[targets == IGNORE] == 0)


def test_without_bias_and_without_gradient() -> None:
    hidden, weight, _, targets = problem(torch.float64)
    nll = FrozenLinearCrossEntropy.apply(hidden, weight, None, targets, IGNORE, 8)
    torch.testing.assert_close(
        nll, plain_nll(hidden, weight, None, targets), rtol=1e-12, atol=1e-12
    )
    assert not nll.requires_grad


@pytest.mark.parametrize("ignored", ["all", "none"])
def test_all_or_no_rows_ignored(ignored: str) -> None:
    hidden, weight, bias, targets = problem(torch.float64)
    targets = torch.full_like(targets, IGNORE) if ignored == "all" else targets.clamp(4, V - 1)
    h = hidden.clone().requires_grad_(True)
    nll = FrozenLinearCrossEntropy.apply(h, weight, bias, targets, IGNORE, 8)
    (grad,) = torch.autograd.grad(nll.sum(), h)
    h_plain = hidden.clone().requires_grad_(True)
    nll_plain = plain_nll(h_plain, weight, bias, targets)
    (grad_plain,) = torch.autograd.grad(nll_plain.sum(), h_plain)
    torch.testing.assert_close(nll, nll_plain.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, grad_plain, rtol=1e-12, atol=1e-12)
    assert (nll == 0).all() == (ignored == "all")


def test_gradcheck() -> None:
    hidden, weight, bias, targets = problem(torch.float64)
    hidden = hidden[:7].clone().requires_grad_(True)
    targets = targets[:7]

    def fn(h: Tensor) -> Tensor:
        return FrozenLinearCrossEntropy.apply(h, weight, bias, targets, IGNORE, 3)

    assert torch.autograd.gradcheck(fn, (hidden,))


def test_refuses_weights_that_need_gradients() -> None:
    hidden, weight, bias, targets = problem(torch.float64)
    with pytest.raises(ValueError, match="frozen"):
        FrozenLinearCrossEntropy.apply(
            hidden.requires_grad_(True), weight.requires_grad_(True), bias, targets, IGNORE, 8
        )


@pytest.mark.parametrize("frozen_weights", [True, False])
def test_wrapper_paths(frozen_weights: bool) -> None:
    hidden, weight, bias, targets = problem(torch.float32)
    weight.requires_grad_(not frozen_weights)
    bias.requires_grad_(not frozen_weights)
    upstream = torch.randn(N, generator=torch.Generator().manual_seed(9))
    inputs = [weight, bias] if not frozen_weights else []

    h_plain = hidden.clone().requires_grad_(True)
    plain = plain_nll(h_plain, weight, bias, targets)
    plain_grads = torch.autograd.grad(plain, [h_plain, *inputs], upstream)

    h = hidden.clone().requires_grad_(True)
    nll = linear_cross_entropy(h, weight, bias, targets, IGNORE, chunk_size=8)
    grads = torch.autograd.grad(nll, [h, *inputs], upstream)

    is_fused = nll.grad_fn is not None and "FrozenLinearCrossEntropy" in type(nll.grad_fn).__name__
    assert is_fused == frozen_weights
    if frozen_weights:
        torch.testing.assert_close(nll, plain.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[0], plain_grads[0], rtol=1e-5, atol=1e-5)
    else:  # the plain path itself: bit for bit, weight gradients included
        assert torch.equal(nll, plain)
        for got, want in zip(grads, plain_grads, strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("grad_mode", [False, True])
def test_wrapper_without_any_gradient_works_in_chunks_of_rows(
    grad_mode: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation (no gradient needed: grad mode off, or nothing requires one) never forms the
    logits of more than ``chunk_size`` rows at once, and skips the ignored rows."""
    hidden, weight, bias, targets = problem(torch.float64)
    want = plain_nll(hidden, weight, bias, targets)
    rows_seen: list[int] = []
    linear = F.linear

    def counting_linear(x: Tensor, *args: Tensor | None) -> Tensor:
        rows_seen.append(x.shape[0])
        return linear(x, *args)

    monkeypatch.setattr(F, "linear", counting_linear)
    with torch.set_grad_enabled(grad_mode):
        got = linear_cross_entropy(hidden, weight, bias, targets, IGNORE, chunk_size=8)
    assert got.grad_fn is None
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.dtype == want.dtype and bool((got[targets == IGNORE] == 0).all())
    kept = int((targets != IGNORE).sum())
    assert max(rows_seen) == 8 and sum(rows_seen) == kept
    rows_seen.clear()
    none = torch.full_like(targets, IGNORE)
    nothing = linear_cross_entropy(hidden, weight, bias, none, IGNORE)
    assert torch.equal(nothing, torch.zeros(N, dtype=torch.float64))
    assert rows_seen == []


# ------------------------------------------------------------------------------ end to end
PAD, BOS, EOS, VOCAB, Z_DIM = 0, 1, 2, 23, 4


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> Iterator[torch.dtype]:
    default = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(default)


def make_model(fused_output: bool) -> LatentEBM:
    torch.manual_seed(0)
    decoder = LSTMDecoder(
        LSTMDecoder.Config(
            embedding_dim=5, hidden_dim=8, init_range=0.3, fused_output=fused_output
        ),
        z_dim=Z_DIM,
        vocab_size=VOCAB,
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
    )
    prior = EnergyPrior(Z_DIM, hidden_dims=(8,))
    return LatentEBM(prior, decoder, LangevinSampler(5, 0.4), LangevinSampler(6, 0.3))


def batch() -> Tensor:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(3, VOCAB, (5, 9), generator=gen)
    x[:, 0] = BOS
    for row, length in enumerate([9, 4, 6, 2, 8]):
        x[row, length - 1] = EOS
        x[row, length:] = PAD
    return x


def test_decoder_uses_fused_path_only_in_chains() -> None:
    model = make_model(True)
    x = batch()
    z = torch.randn(x.shape[0], Z_DIM, requires_grad=True)
    with frozen(model):
        ll = model.generator.token_log_likelihood(x, z)
    assert ll.grad_fn is not None
    training = model.generator.token_log_likelihood(x, z)
    plain = make_model(False).generator.token_log_likelihood(x, z)
    assert torch.equal(training, plain)  # weights need grad: the plain path
    torch.testing.assert_close(ll, plain.detach(), rtol=1e-5, atol=1e-5)


def test_sample_posterior_matches_plain(dtype: torch.dtype) -> None:
    x = batch()
    results = []
    for fused in (True, False):
        model = make_model(fused)
        gen = torch.Generator().manual_seed(5)
        results.append(model.sample_posterior(x, generator=gen))
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(results[0].z, results[1].z, rtol=tol, atol=tol)
    torch.testing.assert_close(
        results[0].grad_norm, results[1].grad_norm, rtol=tol * 10, atol=tol * 10
    )


def test_learning_step_matches_plain(dtype: torch.dtype) -> None:
    x = batch()
    states, terms = [], []
    base = make_model(True)
    for fused in (True, False):
        model = copy.deepcopy(base)
        model.generator.config.fused_output = fused
        optimizers = Optimizers(
            generator=torch.optim.Adam(model.generator.parameters(), lr=1e-3),
            prior=torch.optim.Adam(model.prior.parameters(), lr=1e-3),
        )
        gen = torch.Generator().manual_seed(5)
        terms.append(model.learning_step(x, optimizers, generator=gen))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=tol, atol=tol, msg=key)
    assert terms[0]["recon_nll"] == pytest.approx(terms[1]["recon_nll"], rel=tol)


def test_bfloat16_products_approximate_float32() -> None:
    gen = torch.Generator().manual_seed(4)
    hidden = (0.5 * torch.randn(64, 32, generator=gen)).requires_grad_(True)
    weight = 0.2 * torch.randn(300, 32, generator=gen)
    bias = 0.1 * torch.randn(300, generator=gen)
    targets = torch.randint(0, 300, (64,), generator=gen)
    targets[::5] = IGNORE
    results = []
    for dtype in (None, torch.bfloat16):
        nll = FrozenLinearCrossEntropy.apply(hidden, weight, bias, targets, IGNORE, 16, dtype)
        (grad,) = torch.autograd.grad(nll.sum(), hidden)
        results.append((nll.detach(), grad))
    (nll32, grad32), (nll16, grad16) = results
    assert nll16.dtype == torch.float32 and grad16.dtype == torch.float32
    assert not torch.equal(nll16, nll32)  # the products did run in bfloat16
    torch.testing.assert_close(nll16, nll32, rtol=0, atol=0.05)
    assert float((grad16 - grad32).norm() / grad32.norm()) < 0.02
    assert torch.all(nll16[targets == IGNORE] == 0) and torch.all(grad16[targets == IGNORE] == 0)


def test_decoder_bfloat16_chains_leave_training_exact() -> None:
    model = make_model(True)
    model.generator.config.chain_matmul_dtype = "bfloat16"
    x = batch()
    z = torch.randn(x.shape[0], Z_DIM, requires_grad=True)
    reference = make_model(True).generator
    assert torch.equal(model.generator.log_likelihood(x, z), reference.log_likelihood(x, z))
    with frozen(model), frozen(reference):
        chain = model.generator.log_likelihood(x, z)
        exact = reference.log_likelihood(x, z)
    assert not torch.equal(chain, exact)
    torch.testing.assert_close(chain, exact, rtol=0, atol=0.05)
    model.eval()
    reference.eval()
    with frozen(model), frozen(reference):  # evaluation (eval mode): float32 products
        assert torch.equal(model.generator.log_likelihood(x, z), reference.log_likelihood(x, z))
