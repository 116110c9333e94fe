"""pass@k and maj@k: the unbiased estimators over n independent samples, checked against brute force
over every k-subset, and named for what they compute (``coverage`` is any of the n)."""

from __future__ import annotations

import itertools
import math

import pytest

from lm_eval_moe.scoring import check_numeric
from lm_eval_moe.scoring.metrics import (
    EXACT_SUBSETS, REPORTED_K, majority_at_k, majority_index, pass_at_k, reported_ks, sample_metrics,
)


def boxed(answer: str) -> str:
    return f"so \\boxed{{{answer}}}"


def verdicts(answers: str, gold: str = "7"):
    return [check_numeric(boxed(a), gold) for a in answers]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_correct_sample(n):
    for correct in range(n + 1):
        flags = [True] * correct + [False] * (n - correct)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(flags, k))
            assert pass_at_k(n, correct, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)


def test_pass_at_k_matches_the_chen_formula_and_its_edges():
    assert pass_at_k(30, 7, 5) == pytest.approx(1 - math.comb(23, 5) / math.comb(30, 5))
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)  # pass@1 is the share of correct samples
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0  # pass@n is any of n
    for bad in (0, 9):
        with pytest.raises(ValueError, match=f"pass@{bad}"):
            pass_at_k(8, 2, bad)


def test_majority_at_k_averages_the_vote_over_every_subset():
    answers = verdicts("77888")
    expected = {}
    for k in range(1, 6):
        subsets = list(itertools.combinations(answers, k))
        wins = sum(s[majority_index(list(s))].correct for s in subsets)
        expected[k] = wins / len(subsets)
    assert {k: majority_at_k(answers, k) for k in range(1, 6)} == pytest.approx(expected)
    assert majority_at_k(answers, 5) == 0.0  # a vote of all five says 8 and majority_at_k(answers, 1) == pytest.approx(0.4)


def test_majority_at_k_subsamples_when_subsets_are_too_many():
    answers = verdicts("7" * 30 + "8" * 34)
    assert math.comb(64, 32) > EXACT_SUBSETS
    estimate = majority_at_k(answers, 32)
    assert estimate == majority_at_k(answers, 32)  # seeded: reproducible
    # 7 wins a 32-subset holding 16 or more of the 30 sevens (a 16:16 tie goes to the first seen, a 7)
    exact = sum(math.comb(30, x) * math.comb(34, 32 - x) for x in range(16, 31)) / math.comb(64, 32)
    assert estimate == pytest.approx(exact, abs=4 / math.sqrt(EXACT_SUBSETS))


def test_only_independent_samples_get_pass_and_maj_at_k():
    answers = verdicts("78877888")
    searched = sample_metrics(answers[0], answers, independent=False)
    assert set(searched) == {"exact_match", "coverage", "precision", "num_candidates"}
    sampled = sample_metrics(answers[0], answers, independent=True)
    assert [name for name in sampled if name.startswith("pass@")] == ["pass@1", "pass@2", "pass@3", "pass@4", "pass@5",
                                                                      "pass@8"]
    assert sampled["pass@8"] == sampled["coverage"] == 1.0
    assert sampled["pass@1"] == pytest.approx(3 / 8) == sampled["precision"]
    assert reported_ks(100) == list(REPORTED_K)
