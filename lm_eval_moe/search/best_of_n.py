"""Best-of-N (plain and weighted) and self-consistency (docs/METHODS.md section 3).

N full samples from the policy at its own k (no step delimiter, to EOS or the token budget). Best-of-N
scores each with the verifier (``last`` aggregation in search-and-learn) and answers with the best one
(``final=prm_best``) or with the answer of largest summed score (``final=weighted``, weighted
Best-of-N). Self-consistency skips the verifier and takes the majority answer.
"""

from __future__ import annotations

from collections.abc import Generator

from lm_eval_moe.generation.nodes import Expansion, root_node
from lm_eval_moe.search.common import (
    Expand, Problem, Score, SearchConfig, SearchResult, best_first, candidate, select_final, slot_seed, step_record,
)


def run(problem: Problem, config: SearchConfig) -> Generator:
    root = root_node(problem.index, problem.prompt_ids, problem.base_expert_count)
    expansions = [
        Expansion(root, slot_seed(problem.seed, 0, slot), config.max_tokens, stop_at_delimiter=False, length_finishes=True)
        for slot in range(config.budget)
    ]
    samples = yield Expand(expansions)
    scores = (yield Score(samples)) if config.needs_scores else [None] * len(samples)
    candidates = [candidate(problem, node, score, config) for node, score in zip(samples, scores)]
    aggregated = [c.score for c in candidates]
    return SearchResult(
        selected=select_final(candidates, config.final),
        candidates=best_first(candidates),
        steps=[step_record(0, samples, aggregated, samples)],
    )
