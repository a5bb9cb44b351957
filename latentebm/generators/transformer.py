"""Transformer decoder ``p_beta(x | z)`` for token sequences: a GPT-2 built from scratch.

An alternative to the LSTM of seed 001 (appendix B.1) for the generator of eq. 1,
``log p_beta(x | z) = sum_t log p_beta(x_t | x_<t, z)``. The network is a Hugging Face
``transformers`` ``GPT2Model`` configured from the recipe (no pretrained weights are downloaded
or loaded: the task's own vocabulary, ``<bos>``, ``<eos>`` and ``<pad>`` ids are used), followed
by an output layer tied to the token embeddings. z enters in one of two ways
(``z_conditioning``):

* ``prefix``: a linear map turns z into ``n_prefix`` embedding vectors that are prepended to the
  token embeddings (``inputs_embeds``); every token attends to them through the causal
  self-attention, and only the real targets are scored.
* ``cross_attention``: GPT-2 with ``add_cross_attention=True``; a linear map turns z into
  ``n_prefix`` "encoder" hidden states that every layer cross-attends to.

Optionally (``z_to_tokens``) a linear image of z is also added to every token embedding, the
analogue of the LSTM decoder's concatenating z to every input.

Sequences are ``LongTensor (B, T)``: ``<bos> x_1 ... x_n <eos> <pad> ...`` (right padding). The
likelihood scores the tokens after ``<bos>`` up to and including ``<eos>``; padding is masked in
the attention (``attention_mask``) and in the score.

``transformers`` is an optional dependency (``pip install latentebm[transformer]``); it is
imported when a decoder is built, not when this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentebm.generators.fused import linear_cross_entropy

INSTALL_HINT = "the transformer decoder needs `pip install latentebm[transformer]`"


def _import_gpt2() -> tuple[Any, Any]:
    """``(GPT2Config, GPT2Model)`` from ``transformers``, with an install hint if it is missing."""
    try:
        from transformers import GPT2Config, GPT2Model
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
    return GPT2Config, GPT2Model


def _reorder_cache(cache: Any, rows: Tensor) -> Any:
    """Keep the KV-cache rows ``rows`` (in that order): a ``transformers`` ``Cache`` object
    (``reorder_cache``, in place) or the legacy tuple-of-tuples format of older versions."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)
        return cache
    return tuple(tuple(t.index_select(0, rows) for t in layer) for layer in cache)


class TransformerDecoder(nn.Module):
    """``log p_beta(x | z) = sum_t log p(x_t | x_<t, z)`` with a GPT-2 conditioned on z.

    Args:
        config: sizes, conditioning and decoding defaults (the recipe's ``model.generator``).
        z_dim: dimension of z.
        vocab_size, pad_id, bos_id, eos_id: from the task's tokenizer.
    """

    @dataclass
    class Config:
        n_layer: int = 4
        """Transformer blocks (GPT-2 ``n_layer``)."""
        n_embd: int = 256
        """Width of the embeddings and hidden states (GPT-2 ``n_embd``)."""
        n_head: int = 4
        """Attention heads per block; must divide ``n_embd``."""
        dropout: float = 0.0
        """Dropout on embeddings, attention weights and residual branches during training (GPT-2
        ``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``). It is also active in the posterior
        Langevin chain of a training step, as for the LSTM decoder."""
        max_positions: int = 128
        """Longest input (``<bos> x_1 .. x_n``, i.e. sequence length - 1) the position
        embeddings cover; ``n_positions`` is this plus ``n_prefix`` in ``prefix`` mode."""
        init_std: float = 0.02
        """Standard deviation of the normal initialisation (GPT-2 ``initializer_range``), also
        used for the z maps; biases start at 0."""
        z_conditioning: Literal["prefix", "cross_attention"] = "prefix"
        """How z enters: ``prefix`` (z -> n_prefix embeddings prepended to the tokens) or
        ``cross_attention`` (z -> n_prefix states that every block cross-attends to)."""
        n_prefix: int = 4
        """Number of vectors z is mapped to (prefix tokens or cross-attention states)."""
        z_to_tokens: bool = False
        """Also add a linear image of z to every token embedding (as the LSTM decoder feeds z
        at every step)."""
        tie_embeddings: bool = True
        """Output layer shares its weight with the token embeddings (as GPT-2); no bias."""
        attn_implementation: Literal["sdpa", "eager"] = "sdpa"
        """Attention kernel of ``transformers``: ``sdpa`` (PyTorch's fused attention) or
        ``eager`` (plain matmul + softmax)."""
        max_decode_length: int = 60
        """Longest sequence produced by ``sample`` unless told otherwise (<= max_positions)."""
        fused_output: bool = True
        """Score tokens with the fused, chunked output layer
        (:func:`latentebm.generators.fused.linear_cross_entropy`) when the output layer is
        frozen and z needs a gradient (the Langevin chains); ``False``: always the plain
        ``linear`` + ``cross_entropy``."""

    def __init__(
        self,
        config: TransformerDecoder.Config,
        *,
        z_dim: int,
        vocab_size: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
    ) -> None:
        super().__init__()
        gpt2_config_cls, gpt2_model_cls = _import_gpt2()
        if config.n_embd % config.n_head:
            raise ValueError(
                f"n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})"
            )
        for name in ("n_layer", "n_embd", "n_head", "max_positions", "n_prefix"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        if config.max_decode_length > config.max_positions:
            raise ValueError(
                f"max_decode_length ({config.max_decode_length}) must be <= max_positions "
                f"({config.max_positions})"
            )
        self.config = config
        self.z_dim = z_dim
        self.vocab_size = vocab_size
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.prefix_mode = config.z_conditioning == "prefix"
        # prefix mode: positions 0..n_prefix-1 hold z, the tokens follow
        self.n_prefix_positions = config.n_prefix if self.prefix_mode else 0
        gpt2_config = gpt2_config_cls(
            vocab_size=vocab_size,
            n_positions=config.max_positions + self.n_prefix_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            initializer_range=config.init_std,
            bos_token_id=bos_id,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            add_cross_attention=not self.prefix_mode,
            use_cache=False,
            attn_implementation=config.attn_implementation,
        )
        self.transformer = gpt2_model_cls(gpt2_config)
        width = config.n_embd
        # z -> n_prefix vectors (prefix embeddings or cross-attention "encoder" states)
        self.latent_to_states = nn.Linear(z_dim, config.n_prefix * width)
        self.latent_to_tokens = nn.Linear(z_dim, width) if config.z_to_tokens else None
        self.output = nn.Linear(width, vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.transformer.wte.weight
        for layer in (self.latent_to_states, self.latent_to_tokens):
            if layer is not None:
                nn.init.normal_(layer.weight, std=config.init_std)
                nn.init.zeros_(layer.bias)
        if not config.tie_embeddings:
            nn.init.normal_(self.output.weight, std=config.init_std)

    # ------------------------------------------------------------------------- network pieces
    def _latent_states(self, z: Tensor) -> Tensor:
        """z ``(B, d)`` -> ``(B, n_prefix, n_embd)``: prefix embeddings or encoder states."""
        return self.latent_to_states(z).view(z.shape[0], self.config.n_prefix, -1)

    def _embed(self, tokens: Tensor, z: Tensor) -> Tensor:
        """Token embeddings ``(B, T, n_embd)`` (plus the image of z if ``z_to_tokens``)."""
        embedded = self.transformer.wte(tokens)
        if self.latent_to_tokens is not None:
            embedded = embedded + self.latent_to_tokens(z).unsqueeze(1)
        return embedded

    def _run(
        self,
        embedded: Tensor,
        z: Tensor,
        *,
        first: bool,
        attention_mask: Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> tuple[Tensor, Any]:
        """Run GPT-2 on token embeddings; returns the hidden states of the token positions
        ``(B, T, n_embd)`` and the cache. ``first``: the z prefix is prepended (prefix mode)."""
        encoder_states = None
        n_prefix = 0
        if self.prefix_mode:
            if first:
                n_prefix = self.config.n_prefix
                embedded = torch.cat([self._latent_states(z).to(embedded.dtype), embedded], dim=1)
                if attention_mask is not None:
                    ones = attention_mask.new_ones(attention_mask.shape[0], n_prefix)
                    attention_mask = torch.cat([ones, attention_mask], dim=1)
        else:
            encoder_states = self._latent_states(z).to(embedded.dtype)
        out = self.transformer(
            inputs_embeds=embedded,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_states,
            past_key_values=cache,
            use_cache=use_cache,
        )
        return out.last_hidden_state[:, n_prefix:], out.past_key_values

    def _hidden_states(self, inputs: Tensor, z: Tensor) -> Tensor:
        """Top-layer states for ``inputs (B, T)`` given z, shape ``(B, T, n_embd)``; state t
        predicts token t + 1. Padding is masked out of the attention."""
        if inputs.shape[1] > self.config.max_positions:
            raise ValueError(
                f"sequence of {inputs.shape[1] + 1} tokens is longer than the decoder's "
                f"max_positions + 1 = {self.config.max_positions + 1}: raise "
                "model.generator.max_positions or set task.max_length"
            )
        mask = (inputs != self.pad_id).long()
        hidden, _ = self._run(self._embed(inputs, z), z, first=True, attention_mask=mask)
        return hidden

    # ------------------------------------------------------------------------- likelihood
    def token_log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x_t | x_<t, z)`` for every target position, shape ``(B, T-1)``; 0 at padding."""
        width = x.shape[1]
        if width - 1 > self.config.max_positions:
            # trailing columns that are padding everywhere do not need positions
            used = int((x != self.pad_id).sum(dim=1).max())
            x = x[:, : max(used, 2)]
        inputs, targets = x[:, :-1], x[:, 1:]
        hidden = self._hidden_states(inputs, z).reshape(-1, self.config.n_embd)
        if self.config.fused_output:
            # fused and chunked when the output layer is frozen (Langevin), else plain
            nll = linear_cross_entropy(
                hidden, self.output.weight, None, targets.reshape(-1), ignore_index=self.pad_id
            )
        else:
            nll = F.cross_entropy(
                self.output(hidden), targets.reshape(-1), ignore_index=self.pad_id, reduction="none"
            )
        scores = -nll.view(targets.shape)
        if scores.shape[1] < width - 1:
            scores = F.pad(scores, (0, width - 1 - scores.shape[1]))
        return scores

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p_beta(x | z)`` summed over the target tokens (incl. ``<eos>``), shape ``(B,)``."""
        return self.token_log_likelihood(x, z).sum(dim=1)

    def num_targets(self, x: Tensor) -> Tensor:
        """Number of scored tokens per sequence (after ``<bos>``, up to and incl. ``<eos>``)."""
        return (x[:, 1:] != self.pad_id).sum(dim=1)

    # ------------------------------------------------------------------------- decoding
    def _step_logits(self, token: Tensor, z: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """One incremental step: next-token logits ``(B, V)`` after ``token (B, 1)``, and the
        updated KV cache (``cache=None``: first step, ``token`` is ``<bos>``; in prefix mode
        the z prefix is run then and stays in the cache)."""
        hidden, cache = self._run(
            self._embed(token, z), z, first=cache is None, cache=cache, use_cache=True
        )
        return self.output(hidden[:, -1]), cache

    def _never_emitted(self, scores: Tensor) -> Tensor:
        """``-inf`` for ``<pad>`` (marks the end of a row) and ``<bos>`` (only starts one)."""
        scores[:, self.pad_id] = float("-inf")
        scores[:, self.bos_id] = float("-inf")
        return scores

    def _check_length(self, length: int) -> None:
        if length > self.config.max_positions:
            raise ValueError(
                f"max_length ({length}) must be <= the decoder's max_positions "
                f"({self.config.max_positions})"
            )

    @torch.no_grad()
    def sample(
        self,
        z: Tensor,
        *,
        decode: Literal["greedy", "sample", "beam"] = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        max_length: int | None = None,
        generator: torch.Generator | None = None,
        beam_size: int = 5,
        length_penalty: float = 0.0,
    ) -> Tensor:
        """Decode one sequence per row of z, incrementally with GPT-2's KV cache.

        Same options and output as :meth:`LSTMDecoder.sample
        <latentebm.generators.lstm.LSTMDecoder.sample>`:

        Args:
            decode: ``greedy`` (arg-max token each step), ``sample`` (from the softmax of
                ``logits / temperature``, restricted to the ``top_k`` most likely tokens if set)
                or ``beam`` (beam search, see :meth:`beam_search`; ``temperature`` and ``top_k``
                are ignored).
            max_length: most tokens per sequence (default ``config.max_decode_length``; at most
                ``config.max_positions``).
            generator: random source for ``decode="sample"``.
            beam_size, length_penalty: for ``decode="beam"``.

        Returns:
            ``LongTensor (B, L)`` of token ids without ``<bos>``; each row ends at its first
            ``<eos>``, followed by ``<pad>``. ``<pad>`` and ``<bos>`` are never produced.
        """
        if decode not in ("greedy", "sample", "beam"):
            raise ValueError(f"decode must be 'greedy', 'sample' or 'beam', got {decode!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        length = self.config.max_decode_length if max_length is None else max_length
        self._check_length(length)
        if decode == "beam":
            return self.beam_search(
                z, beam_size=beam_size, length_penalty=length_penalty, max_length=length
            )
        batch = z.shape[0]
        token = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=z.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=z.device)
        out: list[Tensor] = []
        cache: Any = None
        for _ in range(length):
            logits, cache = self._step_logits(token, z, cache)
            logits = self._never_emitted(logits)
            if decode == "greedy":
                next_token = logits.argmax(dim=1)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[1]:
                    kth = logits.topk(top_k, dim=1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits.float(), dim=1)
                next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            next_token = next_token.masked_fill(finished, self.pad_id)
            out.append(next_token)
            finished |= next_token == self.eos_id
            if bool(finished.all()):
                break
            token = next_token.unsqueeze(1)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def beam_search(
        self,
        z: Tensor,
        *,
        beam_size: int = 5,
        length_penalty: float = 0.0,
        max_length: int | None = None,
    ) -> Tensor:
        """The most likely sequence per row of z found by beam search (batched over rows).

        The algorithm of :meth:`LSTMDecoder.beam_search
        <latentebm.generators.lstm.LSTMDecoder.beam_search>`, with GPT-2's KV cache reordered
        (``Cache.reorder_cache``) when hypotheses are selected. Hypotheses are scored by their
        log-probability ``sum_t log p(x_t | x_<t, z)`` under the full softmax (the score
        :meth:`log_likelihood` gives ``<bos> + sequence``), ranked by
        ``score / length ** length_penalty`` (length: tokens incl. ``<eos>``; 0: the exact
        log-probability). A hypothesis that emits ``<eos>`` is finished and keeps its score; the
        search stops when every hypothesis is finished or after ``max_length`` tokens.
        ``<pad>`` and ``<bos>`` are never produced. ``beam_size=1`` is greedy decoding.

        Returns:
            ``LongTensor (B, L)`` in the format of :meth:`sample`.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
        length = self.config.max_decode_length if max_length is None else max_length
        if length < 1:
            raise ValueError(f"max_length must be >= 1, got {length}")
        self._check_length(length)
        batch, k, vocab, device = z.shape[0], beam_size, self.vocab_size, z.device
        z_beams = z.repeat_interleave(k, dim=0)  # (B*k, d): row b*k + j is beam j of row b
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis to start with: the others are copies
        lengths = torch.zeros(batch, k, device=device)
        finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
        tokens = torch.empty(batch, k, 0, dtype=torch.long, device=device)
        token = torch.full((batch * k, 1), self.bos_id, dtype=torch.long, device=device)
        # a finished hypothesis has one continuation, <pad>, with log-probability 0
        after_end = torch.full((vocab,), float("-inf"), device=device)
        after_end[self.pad_id] = 0.0
        cache: Any = None
        for _ in range(length):
            logits, cache = self._step_logits(token, z_beams, cache)
            # scored under the full softmax (as log_likelihood), then never-emitted tokens out
            log_probs = self._never_emitted(torch.log_softmax(logits.float(), dim=1))
            log_probs = log_probs.view(batch, k, vocab)
            log_probs = torch.where(finished.unsqueeze(2), after_end, log_probs)
            candidates = (scores.unsqueeze(2) + log_probs).view(batch, k * vocab)
            new_lengths = (lengths + (~finished).float()).unsqueeze(2).expand(-1, -1, vocab)
            rank = candidates
            if length_penalty:
                rank = candidates / new_lengths.reshape(batch, k * vocab) ** length_penalty
            best = rank.topk(k, dim=1).indices  # (B, k)
            origin, next_token = best // vocab, best % vocab
            scores = candidates.gather(1, best)
            lengths = new_lengths.reshape(batch, k * vocab).gather(1, best)
            finished = finished.gather(1, origin) | (next_token == self.eos_id)
            history = tokens.gather(1, origin.unsqueeze(2).expand(-1, -1, tokens.shape[2]))
            tokens = torch.cat([history, next_token.unsqueeze(2)], dim=2)
            if bool((finished | scores.isneginf()).all()):
                break
            rows = (origin + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
            cache = _reorder_cache(cache, rows)
            token = next_token.view(batch * k, 1)
        rank = scores
        if length_penalty:
            rank = scores / lengths.clamp(min=1) ** length_penalty
        choice = rank.argmax(dim=1)
        out = tokens[torch.arange(batch, device=device), choice]
        width = int((out != self.pad_id).sum(dim=1).max()) if batch else 0
        return out[:, : max(width, 1)]
