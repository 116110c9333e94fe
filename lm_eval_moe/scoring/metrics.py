"""Sample-level metrics over one selected answer and a set of candidates, named for what they compute.

* ``exact_match``: the selected answer is correct.
* ``coverage``: some candidate is correct (any of the n; the DES paper's pass@N).
* ``precision``: share of correct candidates (docs/METHODS.md section 2).
* ``pass@k`` (k <= n, independent samples only: a request's ``repeats``): the unbiased estimator of Chen
  et al. (2021), ``1 - C(n - c, k) / C(n, k)`` with c correct of n: the chance that k samples drawn without
  replacement contain a correct one. ``pass@n`` equals ``coverage``.
* ``maj@k`` (likewise): the expected correctness of the majority vote over k of the n samples drawn without
  replacement (ties: the answer seen first), computed over every k-subset when there are at most
  ``EXACT_SUBSETS`` of them, else as the mean over that many seeded random subsets.

The final candidates of a search are not independent draws, so a search reports ``coverage`` and
``precision`` only. Reported k: the ``REPORTED_K`` values up to n (the task YAMLs list the same names).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lm_eval_moe.scoring.checkers import Verdict

REPORTED_K = (1, 2, 3, 4, 5, 8, 10, 16, 32, 64, 100)
EXACT_SUBSETS = 20_000


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k, in the numerically stable product form."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n (n = {n})")
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - correct + 1, n + 1))


def majority_index(verdicts: Sequence[Verdict], weights: Sequence[float] | None = None) -> int | None:
    """Index of a candidate holding the most voted answer (summed weights if given); None if no
    candidate has an answer."""
    tally: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    for index, verdict in enumerate(verdicts):
        if verdict.key is None:
            continue
        tally[verdict.key] += 1.0 if weights is None else weights[index]
        first_seen.setdefault(verdict.key, index)
    if not tally:
        return None
    best = max(tally, key=lambda key: (tally[key], -first_seen[key]))
    return first_seen[best]


def majority_at_k(verdicts: Sequence[Verdict], k: int, seed: int = 0) -> float:
    """Expected correctness of the majority of k of the candidates (see module docstring); vectorised
    over the subsets, the same vote as :func:`majority_index` (most votes, ties to the first seen)."""
    n = len(verdicts)
    if not 1 <= k <= n:
        raise ValueError(f"maj@{k} needs 1 <= k <= n (n = {n})")
    if math.comb(n, k) <= EXACT_SUBSETS:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    else:
        draws = np.random.default_rng(seed).random((EXACT_SUBSETS, n))
        subsets = np.sort(np.argsort(draws, axis=1)[:, :k], axis=1)
    answers = {key: code for code, key in enumerate(dict.fromkeys(v.key for v in verdicts if v.key is not None))}
    if not answers:
        return 0.0
    codes = np.array([answers.get(v.key, -1) for v in verdicts])[subsets]  # (subsets, k)
    holds = codes[:, :, None] == np.arange(len(answers))[None, None, :]  # (subsets, k, answers)
    votes = holds.sum(axis=1)
    first_seen = np.where(holds.any(axis=1), holds.argmax(axis=1), k)
    winner = np.argmax(votes * (k + 1) - first_seen, axis=1)
    correct_answer = np.zeros(len(answers), dtype=bool)
    for verdict in verdicts:
        if verdict.key is not None and verdict.correct:
            correct_answer[answers[verdict.key]] = True
    return float((correct_answer[winner] & (votes.max(axis=1) > 0)).mean())


def reported_ks(n: int) -> list[int]:
    return [k for k in REPORTED_K if k <= n]


def candidate_metrics(passed: Sequence[bool], independent: bool) -> dict[str, float]:
    """``coverage``, ``precision``, ``num_candidates`` and, for independent samples, ``pass@k``."""
    n, correct = len(passed), sum(passed)
    metrics = {"coverage": float(correct > 0), "precision": correct / n, "num_candidates": float(n)}
    if independent:
        metrics.update({f"pass@{k}": pass_at_k(n, correct, k) for k in reported_ks(n)})
    return metrics


def sample_metrics(selected: Verdict, candidates: Sequence[Verdict], independent: bool) -> dict[str, float]:
    """Metrics of an answer task; ``independent``: the candidates are independent samples (``repeats``),
    so pass@k and maj@k apply."""
    if not candidates:
        candidates = [selected]
    metrics = {"exact_match": float(selected.correct)}
    metrics.update(candidate_metrics([v.correct for v in candidates], independent))
    if independent:
        metrics.update({f"maj@{k}": majority_at_k(candidates, k) for k in reported_ks(len(candidates))})
    return metrics
