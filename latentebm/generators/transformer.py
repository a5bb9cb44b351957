"""Transformer decoder ``p_beta(x | z)`` for token sequences: a GPT-2 built from scratch.

An alternative to the LSTM of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space
Energy-Based Prior Model" (appendix B.1) for the generator of eq. 1,
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
imported when a decoder is built, not when this module is imported. Incremental decoding uses
the library's current KV-cache API where it has one: the cache is a ``DynamicCache`` (an
``EncoderDecoderCache`` with cross-attention) passed and returned as ``cache``; the older name
``past_key_values`` is deprecated there (a ``FutureWarning``; removal announced for 5.40) and
is used only with versions that predate the rename.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentebm.config import check_fields, checked_field, positive, rate
from latentebm.errors import MissingDependencyError
from latentebm.generators import decoding
from latentebm.generators.fused import linear_cross_entropy

INSTALL_HINT = "the transformer decoder needs `pip install latentebm[transformer]`"


def _import_gpt2() -> tuple[Any, Any]:
    """``(GPT2Config, GPT2Model)`` from ``transformers``, with an install hint if it is missing."""
    try:
        from transformers import GPT2Config, GPT2Model
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(f"{INSTALL_HINT} ({exc})") from exc
    return GPT2Config, GPT2Model


def _cache_keyword(model_cls: Any) -> str:
    """The name under which ``GPT2Model.forward`` takes the KV cache and its output returns it:
    ``cache`` in the current ``transformers`` API (where ``past_key_values`` is a deprecated
    alias that warns), ``past_key_values`` in versions before the rename."""
    parameters = inspect.signature(model_cls.forward).parameters  # follows the decorators
    return "cache" if "cache" in parameters else "past_key_values"


def _new_cache(config: Any, *, cross_attention: bool) -> Any:
    """An empty KV cache of the current ``transformers`` API for a GPT-2 of ``config``: a
    ``DynamicCache``, or with cross-attention an ``EncoderDecoderCache`` of two (self-attention
    and the cross-attention keys and values of z, computed at the first step)."""
    from transformers import DynamicCache, EncoderDecoderCache

    if cross_attention:
        return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
    return DynamicCache(config=config)


def _cache_is_empty(cache: Any) -> bool:
    """Whether no token has been run yet: no cache (older versions start from ``None``) or an
    empty ``Cache`` object."""
    return cache is None or (hasattr(cache, "get_seq_length") and cache.get_seq_length() == 0)


def _reorder_cache(cache: Any, rows: Tensor) -> Any:
    """Keep the KV-cache rows ``rows`` (in that order): a ``transformers`` ``Cache`` object
    (``reorder_cache``, in place) or the legacy tuple-of-tuples format of older versions."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)
        return cache
    return tuple(tuple(t.index_select(0, rows) for t in layer) for layer in cache)


class TransformerDecoder(nn.Module, decoding.StepwiseDecoder[Any]):
    """``log p_beta(x | z) = sum_t log p(x_t | x_<t, z)`` with a GPT-2 conditioned on z.

    Args:
        config: sizes, conditioning and decoding defaults (the recipe's ``model.generator``).
        z_dim: dimension of z.
        vocab_size, pad_id, bos_id, eos_id: from the task's tokenizer.

    Decoding (``sample``, ``beam_search``) is
    :class:`~latentebm.generators.decoding.StepwiseDecoder`, incremental on GPT-2's KV cache.
    """

    @dataclass
    class Config:
        n_layer: int = checked_field(4, check=positive)
        """Transformer blocks (GPT-2 ``n_layer``)."""
        n_embd: int = checked_field(256, check=positive)
        """Width of the embeddings and hidden states (GPT-2 ``n_embd``)."""
        n_head: int = checked_field(4, check=positive)
        """Attention heads per block; must divide ``n_embd``."""
        dropout: float = checked_field(0.0, check=rate)
        """Dropout on embeddings, attention weights and residual branches during training (GPT-2
        ``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``). It is also active in the posterior
        Langevin chain of a training step, as for the LSTM decoder."""
        max_positions: int = checked_field(128, check=positive)
        """Longest input (``<bos> x_1 .. x_n``, i.e. sequence length - 1) the position
        embeddings cover; ``n_positions`` is this plus ``n_prefix`` in ``prefix`` mode."""
        init_std: float = checked_field(0.02, check=positive)
        """Standard deviation of the normal initialisation (GPT-2 ``initializer_range``), also
        used for the z maps; biases start at 0."""
        z_conditioning: Literal["prefix", "cross_attention"] = "prefix"
        """How z enters: ``prefix`` (z -> n_prefix embeddings prepended to the tokens) or
        ``cross_attention`` (z -> n_prefix states that every block cross-attends to)."""
        n_prefix: int = checked_field(4, check=positive)
        """Number of vectors z is mapped to (prefix tokens or cross-attention states)."""
        z_to_tokens: bool = False
        """Also add a linear image of z to every token embedding (as the LSTM decoder feeds z
        at every step)."""
        tie_embeddings: bool = True
        """Output layer shares its weight with the token embeddings (as GPT-2); no bias."""
        attn_implementation: Literal["sdpa", "eager"] = "sdpa"
        """Attention kernel of ``transformers``: ``sdpa`` (PyTorch's fused attention) or
        ``eager`` (plain matmul + softmax)."""
        max_decode_length: int = checked_field(60, check=positive)
        """Longest sequence produced by ``sample`` unless told otherwise (<= max_positions)."""
        fused_output: bool = True
        """Score tokens with the fused, chunked output layer
        (:func:`latentebm.generators.fused.linear_cross_entropy`) when the output layer is
        frozen and z needs a gradient (the Langevin chains); ``False``: always the plain
        ``linear`` + ``cross_entropy``."""

        def __post_init__(self) -> None:
            check_fields(self)
            if self.n_embd % self.n_head:
                raise ValueError(
                    f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})"
                )
            if self.max_decode_length > self.max_positions:
                raise ValueError(
                    f"max_decode_length ({self.max_decode_length}) must be <= max_positions "
                    f"({self.max_positions})"
                )

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
        config.__post_init__()  # the checks of Config, in case a field was changed since
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
        self._cache_keyword = _cache_keyword(gpt2_model_cls)
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
        ``(B, T, n_embd)`` and the updated KV cache (``None`` without ``use_cache``).
        ``first``: the z prefix is prepended (prefix mode)."""
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
        # the cache under the name this transformers version takes (``cache``; see
        # _cache_keyword), and only when decoding incrementally
        cache_args = {self._cache_keyword: cache} if use_cache else {}
        out = self.transformer(
            inputs_embeds=embedded,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_states,
            use_cache=use_cache,
            **cache_args,
        )
        new_cache = getattr(out, self._cache_keyword) if use_cache else None
        return out.last_hidden_state[:, n_prefix:], new_cache

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
            # fused when the output layer is frozen (Langevin), plain in training, and
            # chunked by rows without any gradient (evaluation): linear_cross_entropy
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
    # ``sample`` and ``beam_search`` come from decoding.StepwiseDecoder, on GPT-2's KV cache;
    # the sampling softmax is computed in float32
    _sample_softmax_dtype = torch.float32

    def _step(self, z: Tensor) -> decoding.Step[Any]:
        """The decoding step given z ``(B, d)`` (:mod:`latentebm.generators.decoding`), on
        GPT-2's KV cache: next-token logits ``(B, V)`` after ``token (B, 1)`` and the updated
        cache (an empty cache: first step, ``token`` is ``<bos>``; in prefix mode the z prefix
        is run then and stays in the cache)."""

        def step(token: Tensor, cache: Any) -> tuple[Tensor, Any]:
            first = _cache_is_empty(cache)
            hidden, cache = self._run(
                self._embed(token, z), z, first=first, cache=cache, use_cache=True
            )
            return self.output(hidden[:, -1]), cache

        return step

    def _initial_state(self, z: Tensor) -> Any:
        """The decoding state before ``<bos>``: an empty KV cache of the current
        ``transformers`` API (:func:`_new_cache`), or ``None`` with versions before it (GPT-2
        then starts its own cache)."""
        if self._cache_keyword != "cache":
            return None
        return _new_cache(self.transformer.config, cross_attention=not self.prefix_mode)

    def _reorder_state(self, state: Any, rows: Tensor) -> Any:
        """Keep the KV-cache rows ``rows`` (beam search reordering)."""
        return _reorder_cache(state, rows)

    def _check_length(self, length: int) -> None:
        """``max_length`` of ``sample``/``beam_search`` must fit the position embeddings."""
        if length > self.config.max_positions:
            raise ValueError(
                f"max_length ({length}) must be <= the decoder's max_positions "
                f"({self.config.max_positions})"
            )
