"""The chain recurrence (latentebm/generators/chain_lstm.py) is ``nn.LSTM``'s mathematics.

Values and gradients with respect to the inputs (the input gates and h0, hence z) must equal
``nn.LSTM``'s up to rounding; the decoder must take the chain path only in the chains (frozen
LSTM, z needing a gradient, no active dropout) and must never serve stale input gates after the
parameters or the tokens change.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from latentebm.generators.chain_lstm import InputGateCache, gate_order, lstm_recurrence
from latentebm.generators.lstm import LSTMDecoder
from latentebm.langevin import frozen

PAD, BOS, EOS, VOCAB, Z_DIM = 0, 1, 2, 13, 3


def reference_lstm(seed: int = 0) -> nn.LSTM:
    torch.manual_seed(seed)
    lstm = nn.LSTM(4, 5, batch_first=False).double()
    with torch.no_grad():
        for p in lstm.parameters():
            p.uniform_(-0.8, 0.8)
    return lstm.requires_grad_(False)


def test_recurrence_matches_nn_lstm_values_and_input_gradients() -> None:
    lstm = reference_lstm()
    steps, batch, hidden = 6, 3, 5
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(steps, batch, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, generator=gen, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(steps, batch, hidden, generator=gen, dtype=torch.float64)

    expected, _ = lstm(inputs, (h0.unsqueeze(0), torch.zeros_like(h0).unsqueeze(0)))
    grads_expected = torch.autograd.grad(expected, (inputs, h0), upstream)

    order = gate_order(hidden, inputs.device)
    gates = inputs @ lstm.weight_ih_l0[order].t() + (lstm.bias_ih_l0 + lstm.bias_hh_l0)[order]
    out = lstm_recurrence(gates, h0, lstm.weight_hh_l0[order])
    grads = torch.autograd.grad(out, (inputs, h0), upstream)

    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_recurrence_passes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(2)
    gates = torch.randn(4, 2, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda g, h: lstm_recurrence(g, h, weight), (gates, h0))


def test_recurrence_refuses_trainable_recurrent_weight() -> None:
    weight = torch.randn(8, 2, requires_grad=True)
    with pytest.raises(ValueError, match="frozen"):
        lstm_recurrence(torch.randn(3, 1, 8), torch.randn(1, 2), weight)


def make_decoder(fast_chain: bool, dropout: float = 0.0) -> LSTMDecoder:
    torch.manual_seed(0)
    config = LSTMDecoder.Config(
        embedding_dim=5, hidden_dim=7, init_range=0.4, fast_chain=fast_chain, dropout=dropout
    )
    decoder = LSTMDecoder(config, z_dim=Z_DIM, vocab_size=VOCAB, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    return decoder.double()


def token_batch(seed: int = 3) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(3, VOCAB, (4, 8), generator=gen)
    x[:, 0] = BOS
    for row, length in enumerate([8, 3, 6, 5]):
        x[row, length - 1] = EOS
        x[row, length:] = PAD
    return x


def likelihood_and_z_grad(decoder: LSTMDecoder, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    z = z.clone().requires_grad_(True)
    with frozen(decoder):
        token_ll = decoder.token_log_likelihood(x, z)
        (grad,) = torch.autograd.grad(token_ll.sum(), z)
    return token_ll.detach(), grad


def assert_paths_agree(fast: LSTMDecoder, plain: LSTMDecoder, x: Tensor, z: Tensor) -> None:
    """The chain path and nn.LSTM give the same log-likelihoods and z-gradients."""
    got, want = likelihood_and_z_grad(fast, x, z), likelihood_and_z_grad(plain, x, z)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("fused_output", [True, False])
def test_decoder_chain_path_matches_nn_lstm(fused_output: bool) -> None:
    x = token_batch()
    z = torch.randn(x.shape[0], Z_DIM, dtype=torch.float64)
    fast, plain = make_decoder(True), make_decoder(False)
    fast.config.fused_output = plain.config.fused_output = fused_output
    with frozen(fast):
        assert fast._uses_chain_recurrence(z.requires_grad_(True))
    got, got_grad = likelihood_and_z_grad(fast, x, z)
    want, want_grad = likelihood_and_z_grad(plain, x, z)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-11)
    assert torch.all(got[x[:, 1:] == PAD] == 0)


def test_decoder_takes_plain_path_outside_chains() -> None:
    decoder = make_decoder(True)
    z = torch.randn(4, Z_DIM, dtype=torch.float64, requires_grad=True)
    assert not decoder._uses_chain_recurrence(z)  # weights need gradients: training
    with frozen(decoder):
        assert not decoder._uses_chain_recurrence(z.detach())  # nothing needs a gradient
        with torch.no_grad():
            assert not decoder._uses_chain_recurrence(z)
    dropout = make_decoder(True, dropout=0.3)
    with frozen(dropout):
        assert not dropout._uses_chain_recurrence(z)  # training mode, active dropout
        dropout.eval()
        assert dropout._uses_chain_recurrence(z)


def test_cached_input_gates_follow_parameter_and_token_changes() -> None:
    fast, plain = make_decoder(True), make_decoder(False)
    x = token_batch()
    z = torch.randn(x.shape[0], Z_DIM, dtype=torch.float64)
    likelihood_and_z_grad(fast, x, z)  # fills the cache
    cached = fast._gate_cache.get(fast.lstm, fast.embedding, x[:, :-1])
    assert fast._gate_cache.get(fast.lstm, fast.embedding, x[:, :-1]) is cached  # same batch

    # an optimiser-style in-place update of the embedding and of the LSTM's input weights
    for decoder in (fast, plain):
        with torch.no_grad():
            decoder.embedding.weight.add_(0.5)
            decoder.lstm.weight_ih_l0.mul_(1.5)
    assert_paths_agree(fast, plain, x, z)
    # the same tensor changed in place, then a new batch
    x[1, 1] = 5
    assert_paths_agree(fast, plain, x, z)
    other = token_batch(seed=4)
    assert_paths_agree(fast, plain, other, z)


def test_cache_recomputes_after_load_state_dict() -> None:
    fast, plain = make_decoder(True), make_decoder(False)
    x, z = token_batch(), torch.randn(4, Z_DIM, dtype=torch.float64)
    likelihood_and_z_grad(fast, x, z)
    torch.manual_seed(9)
    state = {k: torch.randn_like(v) for k, v in plain.state_dict().items()}
    fast.load_state_dict(state)
    plain.load_state_dict(state)
    assert_paths_agree(fast, plain, x, z)


def test_input_gate_cache_clear() -> None:
    cache = InputGateCache()
    decoder = make_decoder(True).requires_grad_(False)
    inputs = token_batch()[:, :-1]
    first = cache.get(decoder.lstm, decoder.embedding, inputs)
    cache.clear()
    assert cache.get(decoder.lstm, decoder.embedding, inputs) is not first
