"""Step-by-step decoding of ``p_beta(x | z)`` (eq. 1 of Pang, Han, Nijkamp, Zhu and Wu (2020),
"Learning Latent Space Energy-Based Prior Model"), shared by the decoders.

The generator factorises ``p_beta(x | z) = prod_t p_beta(x_t | x_<t, z)``, so a sequence is
decoded one token at a time from ``<bos>``. A decoder supplies only its network step through a
small interface:

* ``state``: whatever the network carries from step to step (an LSTM's ``(h, c)``, a GRU's
  ``h``, a transformer's KV cache), for the rows being decoded;
* ``step(tokens, state) -> (logits, state)``: the next-token logits ``(rows, vocab)`` after the
  tokens ``(rows, 1)`` just emitted (``<bos>`` at the first call), and the updated state;
* ``reorder(state, rows) -> state`` (beam search only): the state of the rows ``rows``, in that
  order, when hypotheses are selected.

:func:`decode_tokens` decodes greedily or by sampling, :func:`beam_search` finds the most likely
sequence by beam search; :func:`check_decode_options` and :func:`check_beam_options` validate the
options. Sampling can be restricted to the ``top_k`` most likely tokens and to the nucleus
(``top_p``, :func:`nucleus`: Holtzman, Buys, Du, Forbes and Choi (2020), "The Curious Case of
Neural Text Degeneration"); greedy decoding and sampling can discourage repeats with the
repetition penalty of Keskar, McCann, Varshney, Xiong and Socher (2019), "CTRL: A Conditional
Transformer Language Model for Controllable Generation" (:func:`apply_repetition_penalty`).
These follow Hugging Face ``generate``: the penalty first, then temperature, ``top_k``,
``top_p``. :class:`StepwiseDecoder` builds a decoder's ``sample`` and ``beam_search`` from these
and its ``_step``, ``_initial_state`` and ``_reorder_state``. Outputs are
``LongTensor (B, L)`` of token ids without ``<bos>``; each row ends at its first ``<eos>``,
followed by ``<pad>``. ``<pad>`` (marks the end of a row) and ``<bos>`` (only starts one) are
never produced.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from torch import Tensor

State = TypeVar("State")
logger = logging.getLogger(__name__)

Step = Callable[[Tensor, State], tuple[Tensor, State]]
"""``step(tokens (rows, 1), state) -> (next-token logits (rows, vocab), state)``."""

Reorder = Callable[[State, Tensor], State]
"""``reorder(state, rows) -> state``: the state of the rows ``rows`` (a ``LongTensor``)."""


def check_decode_options(
    decode: str,
    *,
    temperature: float,
    top_k: int | None,
    max_length: int | None,
    default_length: int,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
) -> int:
    """Validate the options of a decoder's ``sample``; returns the number of steps to decode
    (``max_length``, else ``default_length``). Raises ``ValueError`` on a bad option, naming it:
    ``top_p`` must lie in (0, 1], ``repetition_penalty`` must be > 0 and finite, and a
    ``repetition_penalty`` other than 1 is refused with ``decode="beam"`` (beam search ranks
    hypotheses by their exact log-probability; the penalty is not implemented there)."""
    if decode not in ("greedy", "sample", "beam"):
        raise ValueError(f"decode must be 'greedy', 'sample' or 'beam', got {decode!r}")
    if not (temperature > 0 and math.isfinite(temperature)):  # NaN fails both
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:  # NaN fails too
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not (repetition_penalty > 0 and math.isfinite(repetition_penalty)):
        raise ValueError(f"repetition_penalty must be > 0 and finite, got {repetition_penalty}")
    if decode == "beam" and repetition_penalty != 1.0:
        raise ValueError(
            f"repetition_penalty applies to greedy and sample decoding; beam search does not "
            f"support it (got repetition_penalty={repetition_penalty} with decode='beam')"
        )
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return default_length if max_length is None else max_length


def resolve_max_length(max_length: int | None, max_new_tokens: int | None) -> int | None:
    """``max_new_tokens`` (the Hugging Face ``generate`` name) is an alias of ``max_length``:
    both count the tokens generated, excluding ``<bos>``. Returns the one given (``None`` if
    neither); ``ValueError`` if both are given and differ."""
    if max_new_tokens is None:
        return max_length
    if max_length is not None and max_length != max_new_tokens:
        raise ValueError(
            f"max_new_tokens ({max_new_tokens}) and max_length ({max_length}) differ: give one "
            "(both count the tokens generated, excluding <bos>)"
        )
    return max_new_tokens


def check_beam_options(
    *, beam_size: int, length_penalty: float, max_length: int | None, default_length: int
) -> int:
    """Validate the options of a decoder's ``beam_search``; returns the number of steps to
    decode (``max_length``, else ``default_length``). Raises ``ValueError`` on a bad option."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not (length_penalty >= 0 and math.isfinite(length_penalty)):  # NaN fails both
        raise ValueError(f"length_penalty must be >= 0 and finite, got {length_penalty}")
    length = default_length if max_length is None else max_length
    if length < 1:
        raise ValueError(f"max_length must be >= 1, got {length}")
    return length


def mask_never_emitted(scores: Tensor, *, pad_id: int, bos_id: int) -> Tensor:
    """``-inf`` (in place) for ``<pad>`` (marks the end of a row) and ``<bos>`` (only starts
    one) in next-token ``scores (rows, vocab)``; returns ``scores``."""
    scores[:, pad_id] = float("-inf")
    scores[:, bos_id] = float("-inf")
    return scores


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """The repetition penalty of Keskar et al. (2019), "CTRL" (as Hugging Face's
    ``RepetitionPenaltyLogitsProcessor``): for the tokens already generated in a row
    (``seen (rows, vocab)``, boolean), a positive logit is divided by ``penalty`` and a negative
    one multiplied by it, so ``penalty > 1`` makes repeats less likely (``1``: unchanged).
    Returns new logits ``(rows, vocab)``."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Nucleus (top-p) filtering of Holtzman et al. (2020), "The Curious Case of Neural Text
    Degeneration": per row of ``probs (rows, vocab)``, keep the smallest set of most likely
    tokens whose probability sums to at least ``top_p`` (a token is kept if the tokens more
    likely than it hold less than ``top_p``; the most likely one always), zero the others and
    renormalise. ``top_p >= 1`` returns ``probs`` unchanged."""
    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=1, descending=True, stable=True)
    before = sorted_probs.cumsum(dim=1)
    before = torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], dim=1)
    drop_sorted = before >= top_p  # the mass of the more likely tokens already reaches top_p
    drop = drop_sorted.scatter(1, order, drop_sorted)
    kept = probs.masked_fill(drop, 0.0)
    return kept / kept.sum(dim=1, keepdim=True)


def decode_tokens(
    step: Step[State],
    state: State,
    *,
    batch: int,
    length: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    device: torch.device,
    decode: Literal["greedy", "sample"] = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
    softmax_dtype: torch.dtype | None = None,
    mask_specials: bool = True,
) -> Tensor:
    """Decode one sequence per row from ``p_beta(x | z)`` (Pang et al. eq. 1), a token a step.

    Args:
        step, state: the decoder's network step and its state for the ``batch`` rows.
        batch: number of rows.
        length: most tokens per sequence (>= 1; not checked here).
        pad_id, bos_id, eos_id: the special token ids.
        device: where the token tensors live.
        decode: ``greedy`` (arg-max token each step) or ``sample`` (from the softmax of
            ``logits / temperature``, restricted to the ``top_k`` most likely tokens if set,
            then to the nucleus of probability ``top_p`` if set (:func:`nucleus`), one
            ``torch.multinomial`` draw from ``generator`` per step). ``temperature``,
            ``top_k`` and ``top_p`` do not change greedy decoding.
        repetition_penalty: before either, the logits of the tokens the row has already
            generated are penalised (:func:`apply_repetition_penalty`; ``1.0``: off).
        softmax_dtype: dtype the sampling softmax is computed in (``None``: the logits' own).
        mask_specials: never emit ``<pad>`` or ``<bos>`` (renormalising the rest). ``False``
            samples the model's own softmax: a row may then contain ``<pad>`` or ``<bos>``
            before its ``<eos>``, which callers that need exact draws of ``p_beta(x | z)``
            reject (:func:`latentebm.metrics.bdmc.simulate`).

    Returns:
        ``LongTensor (B, L)``, ``L <= length``: decoding stops once every row has emitted
        ``<eos>``; a finished row is continued with ``<pad>``.
    """
    token = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    seen: Tensor | None = None  # (batch, vocab): tokens each row has generated (the penalty)
    out: list[Tensor] = []
    for _ in range(length):
        logits, state = step(token, state)
        if mask_specials:
            logits = mask_never_emitted(logits, pad_id=pad_id, bos_id=bos_id)
        if repetition_penalty != 1.0:
            if seen is None:
                seen = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
            logits = apply_repetition_penalty(logits, seen, repetition_penalty)
        if decode == "greedy":
            next_token = logits.argmax(dim=1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[1]:
                kth = logits.topk(top_k, dim=1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if softmax_dtype is not None:
                logits = logits.to(softmax_dtype)
            probs = torch.softmax(logits, dim=1)
            if top_p is not None:
                probs = nucleus(probs, top_p)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        next_token = next_token.masked_fill(finished, pad_id)
        out.append(next_token)
        if seen is not None:
            seen.scatter_(1, next_token.unsqueeze(1), True)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
        token = next_token.unsqueeze(1)
    return torch.stack(out, dim=1)


def beam_search(
    step: Step[State],
    state: State,
    reorder: Reorder[State],
    *,
    batch: int,
    beam_size: int,
    vocab_size: int,
    length: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    device: torch.device,
    length_penalty: float = 0.0,
) -> Tensor:
    """The most likely sequence under ``p_beta(x | z)`` (Pang et al. eq. 1) per row, by beam
    search batched over rows.

    Hypotheses are scored by their log-probability ``sum_t log p(x_t | x_<t, z)`` under the
    full softmax (computed in float32; the score ``log_likelihood`` gives ``<bos> + sequence``),
    ranked by ``score / length ** length_penalty`` (length: tokens incl. ``<eos>``; 0: no
    normalisation, the exact log-probability). A hypothesis that emits ``<eos>`` is finished: it
    stays in the beam with a fixed score (its one continuation is ``<pad>``, log-probability 0)
    and competes with the open ones; the search stops when every hypothesis is finished or after
    ``length`` tokens (open hypotheses are then cut there, as greedy decoding does). ``<pad>``
    and ``<bos>`` are never produced. ``beam_size=1`` is greedy decoding.

    Args:
        step, reorder: the decoder's network step and state reordering.
        state: the state of ``batch * beam_size`` rows; row ``b * beam_size + j`` is beam ``j``
            of row ``b`` (e.g. from ``z.repeat_interleave(beam_size, dim=0)``).
        batch: number of sequences to decode.
        beam_size: hypotheses kept per sequence (>= 1; not checked here).
        vocab_size: number of token ids (the logits' width).
        length: most tokens per sequence (>= 1; not checked here).
        pad_id, bos_id, eos_id: the special token ids.
        device: where the tensors live.
        length_penalty: exponent of the length normalisation of the ranking (>= 0).

    Returns:
        ``LongTensor (B, L)`` in the format of :func:`decode_tokens`, trimmed to the longest
        chosen sequence (at least one column).
    """
    k, vocab = beam_size, vocab_size
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis to start with: the others are copies
    lengths = torch.zeros(batch, k, device=device)
    finished = torch.zeros(batch, k, dtype=torch.bool, device=device)
    tokens = torch.empty(batch, k, 0, dtype=torch.long, device=device)
    token = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    # a finished hypothesis has one continuation, <pad>, with log-probability 0
    after_end = torch.full((vocab,), float("-inf"), device=device)
    after_end[pad_id] = 0.0
    for _ in range(length):
        logits, state = step(token, state)
        # scored under the full softmax (as log_likelihood), then never-emitted tokens out
        log_probs = torch.log_softmax(logits.float(), dim=1)
        log_probs = mask_never_emitted(log_probs, pad_id=pad_id, bos_id=bos_id)
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
        finished = finished.gather(1, origin) | (next_token == eos_id)
        history = tokens.gather(1, origin.unsqueeze(2).expand(-1, -1, tokens.shape[2]))
        tokens = torch.cat([history, next_token.unsqueeze(2)], dim=2)
        if bool((finished | scores.isneginf()).all()):
            break
        rows = (origin + torch.arange(batch, device=device).unsqueeze(1) * k).view(-1)
        state = reorder(state, rows)
        token = next_token.view(batch * k, 1)
    rank = scores
    if length_penalty:
        rank = scores / lengths.clamp(min=1) ** length_penalty
    choice = rank.argmax(dim=1)
    out = tokens[torch.arange(batch, device=device), choice]
    width = int((out != pad_id).sum(dim=1).max()) if batch else 0
    return out[:, : max(width, 1)]


class StepwiseDecoder(Generic[State]):
    """``sample`` and ``beam_search`` of a decoder of ``p_beta(x | z)`` (Pang et al. eq. 1) from its
    network step: a mixin for the ``nn.Module`` decoders (:class:`LSTMDecoder
    <latentebm.generators.lstm.LSTMDecoder>`, :class:`TransformerDecoder
    <latentebm.generators.transformer.TransformerDecoder>`).

    The decoder provides ``config.max_decode_length``, ``vocab_size``, ``pad_id``, ``bos_id``,
    ``eos_id`` and the methods ``_step(z)`` (the :data:`Step` given z), ``_initial_state(z)``
    (the state before ``<bos>``) and ``_reorder_state(state, rows)`` (a :data:`Reorder`).
    """

    config: Any
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int

    _sample_softmax_dtype: ClassVar[torch.dtype | None] = None
    """dtype of the softmax that ``decode="sample"`` draws from (``None``: the logits' own)."""

    def _step(self, z: Tensor) -> Step[State]:
        raise NotImplementedError

    def _initial_state(self, z: Tensor) -> State:
        raise NotImplementedError

    def _reorder_state(self, state: State, rows: Tensor) -> State:
        raise NotImplementedError

    def _check_length(self, length: int) -> None:
        """Reject a decoding length the network cannot handle (``ValueError``); any by default."""

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
        mask_specials: bool = True,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
    ) -> Tensor:
        """Decode one sequence per row of z.

        Args:
            decode: ``greedy`` (arg-max token each step), ``sample`` (from the softmax of
                ``logits / temperature``, restricted to the ``top_k`` most likely tokens if set,
                then to the nucleus ``top_p`` if set) or ``beam`` (beam search, see
                :meth:`beam_search`; ``temperature``, ``top_k`` and ``top_p`` are ignored).
            top_p: nucleus sampling (Holtzman et al. 2020): sample from the smallest set of
                most likely tokens whose probability (after temperature and ``top_k``) sums to
                at least ``top_p``, in (0, 1]; ``None`` or 1: no restriction.
            repetition_penalty: CTRL's penalty (Keskar et al. 2019) on the tokens a row has
                already generated, > 0 (1: off); greedy and sample only (``ValueError`` with
                ``beam`` unless 1).
            max_length: most tokens per sequence, excluding ``<bos>`` (default
                ``config.max_decode_length``; the transformer's is at most
                ``config.max_positions``).
            generator: random source for ``decode="sample"``.
            beam_size, length_penalty: for ``decode="beam"``.
            mask_specials: ``False``: sample the full softmax (see :func:`decode_tokens`).

        Returns:
            ``LongTensor (B, L)`` of token ids without ``<bos>``; each row ends at its first
            ``<eos>``, followed by ``<pad>``. ``<pad>`` and ``<bos>`` are never produced.
        """
        length = check_decode_options(
            decode,
            temperature=temperature,
            top_k=top_k,
            max_length=max_length,
            default_length=self.config.max_decode_length,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
        )
        self._check_length(length)
        if decode == "beam":
            tokens = self.beam_search(
                z, beam_size=beam_size, length_penalty=length_penalty, max_length=length
            )
        else:
            tokens = decode_tokens(
                self._step(z),
                self._initial_state(z),
                batch=z.shape[0],
                length=length,
                pad_id=self.pad_id,
                bos_id=self.bos_id,
                eos_id=self.eos_id,
                device=z.device,
                decode=decode,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                repetition_penalty=repetition_penalty,
                generator=generator,
                softmax_dtype=self._sample_softmax_dtype,
                mask_specials=mask_specials,
            )
        if mask_specials:  # unmasked draws (exact simulation) reject cut rows themselves
            self._warn_if_cut(tokens, length)
        return tokens

    def _warn_if_cut(self, tokens: Tensor, length: int) -> None:
        """Warn (once per decoder) when rows reached ``length`` tokens without ``<eos>``: their
        text is cut there, which biases lengths and any metric of the samples."""
        if getattr(self, "_warned_cut", False) or tokens.shape[0] == 0:
            return
        cut = int((~(tokens == self.eos_id).any(dim=1)).sum())
        if cut:
            self._warned_cut = True
            logger.warning(
                "%d of %d generated sequences reached the length cap of %d tokens without "
                "<eos> and were cut there: raise model.generator.max_decode_length (or pass a "
                "larger max_length)",
                cut,
                tokens.shape[0],
                length,
            )

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

        :func:`beam_search` on the decoder's step, its state reordered when hypotheses are
        selected. Hypotheses are scored by their log-probability under the full softmax (the
        score ``log_likelihood`` gives ``<bos> + sequence``) and ranked by
        ``score / length ** length_penalty`` (0: the exact log-probability); the search stops
        when every hypothesis has emitted ``<eos>`` or after ``max_length`` tokens.
        ``beam_size=1`` is greedy decoding.

        Returns:
            ``LongTensor (B, L)`` in the format of :meth:`sample`.
        """
        length = check_beam_options(
            beam_size=beam_size,
            length_penalty=length_penalty,
            max_length=max_length,
            default_length=self.config.max_decode_length,
        )
        self._check_length(length)
        z_beams = z.repeat_interleave(beam_size, dim=0)  # row b*k + j is beam j of row b
        return beam_search(
            self._step(z_beams),
            self._initial_state(z_beams),
            self._reorder_state,
            batch=z.shape[0],
            beam_size=beam_size,
            vocab_size=self.vocab_size,
            length=length,
            pad_id=self.pad_id,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            device=z.device,
            length_penalty=length_penalty,
        )
