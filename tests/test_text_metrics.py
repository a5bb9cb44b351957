"""BLEU, self-BLEU, distinct-n and average length against sacrebleu and hand-computed cases."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

from latentebm.metrics.text import average_length, corpus_bleu, distinct_n, self_bleu


def brute_force_self_bleu(samples: list[str]) -> float:
    scores = [
        sacrebleu.sentence_bleu(s, samples[:i] + samples[i + 1 :], tokenize="none").score
        for i, s in enumerate(samples)
    ]
    return sum(scores) / len(scores)


def test_self_bleu_matches_sacrebleu_sentence_bleu_against_the_others() -> None:
    samples = [
        "the cat sat on the mat",
        "the cat sat on a mat .",
        "a dog ran in the park",
        "the dog sat",
        "stocks fell sharply on monday",
        "the cat sat on the mat",
    ]
    assert self_bleu(samples) == pytest.approx(brute_force_self_bleu(samples), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=9).map(" ".join),
        min_size=2,
        max_size=7,
    )
)
def test_self_bleu_equals_brute_force_on_random_sets(samples: list[str]) -> None:
    assert self_bleu(samples) == pytest.approx(brute_force_self_bleu(samples), abs=1e-9)


def test_self_bleu_of_identical_samples_is_100_and_of_disjoint_samples_is_0() -> None:
    assert self_bleu(["a b c d e"] * 3) == pytest.approx(100.0)
    assert self_bleu(["a b c d", "e f g h", "i j k l"]) == pytest.approx(0.0)


def test_self_bleu_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least two"):
        self_bleu(["only one"])


def test_corpus_bleu_by_hand() -> None:
    refs = ["a b c d e f", "g h i j"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    # hypothesis "a b c d" vs reference "a b c d e f": all n-gram precisions 1, BP = exp(1 - 6/4)
    assert corpus_bleu(["a b c d"], ["a b c d e f"]) == pytest.approx(100 * math.exp(1 - 6 / 4))
    with pytest.raises(ValueError, match="one each"):
        corpus_bleu(["a"], ["a", "b"])


def test_distinct_n_and_average_length_by_hand() -> None:
    samples = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> {a, b, c} / 7; bigrams: ab ba ab ab bc -> {ab, ba, bc} / 5
    assert distinct_n(samples, 1) == pytest.approx(3 / 7)
    assert distinct_n(samples, 2) == pytest.approx(3 / 5)
    assert distinct_n(["a"], 2) == 0.0
    assert average_length(samples) == pytest.approx(3.5)
    with pytest.raises(ValueError):
        distinct_n(samples, 0)
