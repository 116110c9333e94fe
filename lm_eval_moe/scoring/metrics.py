"""Sample-level metrics over one selected answer and a set of candidates.

* ``exact_match``: the selected answer is correct.
* ``pass@k``: some candidate is correct (k = number of candidates).
* ``maj@k``: the most frequent answer among the candidates is correct (ties: earliest first).
* ``precision``: share of correct candidates (docs/METHODS.md section 2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from lm_eval_moe.scoring.checkers import Verdict


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


def sample_metrics(selected: Verdict, candidates: Sequence[Verdict]) -> dict[str, float]:
    if not candidates:
        candidates = [selected]
    majority = majority_index(candidates)
    return {
        "exact_match": float(selected.correct),
        "pass@k": float(any(v.correct for v in candidates)),
        "maj@k": float(majority is not None and candidates[majority].correct),
        "precision": sum(v.correct for v in candidates) / len(candidates),
        "num_candidates": float(len(candidates)),
    }
