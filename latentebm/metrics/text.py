r"""Surface metrics of generated text: BLEU, self-BLEU, distinct-n, average length.

All functions take *already tokenized* sentences (tokens separated by single spaces), the form
``TextTask.decode`` returns for the word tokenizer; pass ``tokenize="13a"`` to let sacrebleu
tokenize detokenized text (a sentencepiece model's output).

- :func:`corpus_bleu` is sacrebleu's corpus BLEU (Papineni et al. 2002; Post 2018) with one
  reference per hypothesis: reconstruction BLEU of the test split.
- :func:`self_bleu` is the mean over samples of the sentence BLEU of each sample against all the
  *other* samples as references (Zhu et al. 2018, "Texygen"): high self-BLEU means samples that
  repeat each other (low diversity). Sentence BLEU follows ``sacrebleu.sentence_bleu``: exp
  smoothing, effective n-gram order, closest reference length. The clipped n-gram counts against
  ``N - 1`` references are computed from each n-gram's two largest per-sentence counts, so the
  whole set costs ``O(total n-grams)`` instead of ``O(N^2)`` sacrebleu calls; the score of each
  sentence is then sacrebleu's own ``BLEU.compute_bleu`` (tested equal to ``sentence_bleu``).
- :func:`distinct_n` is the number of distinct n-grams over the total number of n-grams in all
  samples (Li et al. 2016).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

MAX_NGRAM_ORDER = 4


def _tokens(sentence: str, tokenize: str) -> list[str]:
    if tokenize == "none":
        return sentence.split()
    from sacrebleu.metrics.bleu import BLEU

    return BLEU(tokenize=tokenize).tokenizer(sentence.rstrip()).split()


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "none"
) -> float:
    """Corpus BLEU (0-100) of ``hypotheses[i]`` against ``references[i]`` (sacrebleu).

    ``tokenize="none"``: the sentences are already tokenized (split on whitespace).
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: need one each"
        )
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one sentence")
    import sacrebleu

    return float(
        sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score
    )


def _ngram_counts(tokens: list[str], max_order: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i : i + n])] += 1
    return counts


def _closest_other_length(sorted_lengths: list[int], hyp_len: int) -> int:
    """sacrebleu's reference length for a hypothesis of ``hyp_len`` tokens scored against all
    the other sentences: the closest length, the shorter on a tie. ``sorted_lengths`` holds
    every sentence's length, the hypothesis's own included (one copy of ``hyp_len`` is skipped).
    """
    lo = bisect.bisect_left(sorted_lengths, hyp_len)
    hi = bisect.bisect_right(sorted_lengths, hyp_len)
    if hi - lo >= 2:  # another sentence has the same length
        return hyp_len
    shorter = sorted_lengths[lo - 1] if lo > 0 else None
    longer = sorted_lengths[hi] if hi < len(sorted_lengths) else None
    if shorter is None:
        assert longer is not None
        return longer
    if longer is None or hyp_len - shorter <= longer - hyp_len:
        return shorter
    return longer


def self_bleu(
    samples: Sequence[str], *, tokenize: str = "none", max_order: int = MAX_NGRAM_ORDER
) -> float:
    """Mean sentence BLEU (0-100) of each sample against all the others (Texygen self-BLEU).

    Needs at least two samples. Empty samples score 0 and count in the mean.
    """
    if len(samples) < 2:
        raise ValueError(f"self_bleu needs at least two samples, got {len(samples)}")
    from sacrebleu.metrics.bleu import BLEU

    token_lists = [_tokens(s, tokenize) for s in samples]
    counts = [_ngram_counts(t, max_order) for t in token_lists]
    # each n-gram's largest count, the sentence holding it, and the second largest count
    best: dict[tuple[str, ...], tuple[int, int, int]] = {}
    for index, sentence_counts in enumerate(counts):
        for ngram, count in sentence_counts.items():
            top, top_index, second = best.get(ngram, (0, -1, 0))
            if count > top:
                best[ngram] = (count, index, top)
            elif count > second:
                best[ngram] = (top, top_index, count)
    lengths = sorted(len(t) for t in token_lists)
    total_score = 0.0
    for index, (tokens, sentence_counts) in enumerate(zip(token_lists, counts, strict=True)):
        if not tokens:
            continue
        correct = [0] * max_order
        total = [0] * max_order
        for ngram, count in sentence_counts.items():
            top, top_index, second = best[ngram]
            max_ref = second if top_index == index else top
            order = len(ngram) - 1
            correct[order] += min(count, max_ref)
            total[order] += count
        ref_len = _closest_other_length(lengths, len(tokens))
        score = BLEU.compute_bleu(
            correct,
            total,
            len(tokens),
            ref_len,
            smooth_method="exp",
            effective_order=True,
            max_ngram_order=max_order,
        )
        total_score += score.score
    return total_score / len(samples)


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the samples (whitespace tokens); 0 if none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for sentence in samples:
        tokens = sentence.split()
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i : i + n]))
            total += 1
    return len(seen) / total if total else 0.0


def average_length(samples: Sequence[str]) -> float:
    """Mean number of whitespace tokens per sample."""
    if not samples:
        raise ValueError("average_length needs at least one sample")
    return sum(len(s.split()) for s in samples) / len(samples)
