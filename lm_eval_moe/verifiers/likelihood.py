"""Verifier-free scoring: the policy's own likelihood, and majority voting (docs/METHODS.md section 4).

``likelihood`` scores each step by the geometric-mean probability of its tokens under the policy
(temperature 1, the path's own expert count), read from the log-probabilities recorded while
sampling, so it costs no extra forward pass. A step is one expansion of the search (a whole solution
for Best-of-N, which therefore gets one score).

``majority`` has no notion of a good partial solution: step-wise strategies prune with the
likelihood score and the final answer is the majority vote over finished candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lm_eval_moe.generation.nodes import Node
from lm_eval_moe.verifiers.base import StepScores


class LikelihoodVerifier:
    name = "likelihood"
    default_aggregation = "last"
    flops_per_token = 0.0  # reads the log-probabilities recorded while sampling: no forward pass

    def score_paths(self, questions: Sequence[str], nodes: Sequence[Node], delimiter: str) -> list[StepScores]:
        """One score per expansion of the path, read from its recorded log-probabilities (no forward pass)."""
        results = []
        for node in nodes:
            scores = tuple(math.exp(sum(lp) / len(lp)) for lp in node.step_logprobs() if lp)
            results.append(StepScores(scores, 0))
        return results


class MajorityVerifier(LikelihoodVerifier):
    name = "majority"
