"""Adaptive DES (``strategy=des_adaptive``): OUR construction, not in the DES paper (docs/METHODS.md 2.4).

DES spends each round's budget N evenly over the kept states (N / |C_t| each), whatever their k. Here the
share of each expert count k follows how the verifier has scored the paths of that k so far:

    share_k = N * w_k / sum_j w_j,  w_k = mean score of every path of k scored so far (all rounds),

over the k that still have kept states (a k without a live path has nothing to extend: children keep their
parent's k, as in DES). Each such k gets at least one expansion; shares are rounded by largest remainder
(ties: K's order) so that exactly N expansions run; a k's expansions go round robin over its kept states.
Round 0 is DES's even split over K (nothing is scored yet). With one k in K it is DES with the default
rounding and refill (round robin over the kept states), hence beam search; ``rounding``, ``refill`` and
``inherit`` do not apply.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence

from lm_eval_moe.generation.nodes import Node
from lm_eval_moe.search import des
from lm_eval_moe.search.common import Problem, SearchConfig, replicate


def shares(weights: Sequence[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder; at least 1 each; ties: first)."""
    if total < len(weights):
        raise ValueError(f"cannot give each of {len(weights)} expert counts one of {total} expansions")
    floors = [1] * len(weights)
    spare = total - len(weights)
    weight_sum = sum(weights)
    exact = [spare * w / weight_sum if weight_sum > 0 else spare / len(weights) for w in weights]
    floors = [f + int(e) for f, e in zip(floors, exact)]
    left = total - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - int(exact[i])), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def score_allocation(kept: Sequence[Node], scores_of_k: Mapping[tuple[int, ...], Sequence[float]],
                     config: SearchConfig) -> list[Node]:
    """The round's parents: each live k's share of N by its paths' mean score, over its kept states."""
    by_k: dict[tuple[int, ...], list[Node]] = {}
    for node in kept:
        by_k.setdefault(tuple(node.expert_count), []).append(node)
    live = [k for k in config.expert_counts if k in by_k] + [k for k in by_k if k not in config.expert_counts]
    if not live:
        return []
    weights = [sum(scores_of_k.get(k, ())) / max(1, len(scores_of_k.get(k, ()))) for k in live]
    parents: list[Node] = []
    for k, count in zip(live, shares(weights, config.budget)):
        parents += replicate(by_k[k], count)  # round robin over the kept states of k
    return parents


def run(problem: Problem, config: SearchConfig) -> Generator:
    return des.search(problem, config, score_allocation)
