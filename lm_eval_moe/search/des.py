"""Dynamic Experts Search (Han, Ma, Quan, Yang, arXiv 2509.22572; docs/METHODS.md section 2).

t = 0: the budget N is split evenly over the expert counts K; each of the N samples is ONE step from
the prompt, and each candidate remembers its k. All N are scored; the M best live ones are kept.
t >= 1: every kept state is expanded N / |C_t| times with ITS OWN k (inheritance); the children are
scored and the M best live ones kept; finished candidates leave the pool. The last step (t = T-1) is
generated to EOS. Final answer: PRM-best, majority or weighted vote over the N best finished.

Configurable where the paper is silent (SearchConfig): rounding when N / |C_t| or N / |K| is not whole
(round robin: exactly N, earlier ones get the remainder; floor), refill when fewer than M states live
(replicate: spend the whole budget on them; none), aggregation of step scores, the final rule, and
whether finished candidates compete for Top_M. With K = {the model's k} DES is beam search with
beam width N / M (tested: identical candidates for the same seed).

Inheritance ablation (``inherit=False``, our construction: the paper's ablation is not specified to us):
from t = 1 on every child draws its k uniformly from K (seeded per slot) instead of keeping its parent's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Mapping, Sequence

from lm_eval_moe.generation.nodes import Node, root_node
from lm_eval_moe.search.common import (
    Candidate, Expand, Problem, Score, SearchConfig, SearchResult, best_first, candidate, expansion_parents,
    select_final, slot_seed, step_expansion, step_record, top,
)


def initial_counts(config: SearchConfig) -> list[tuple[int, ...]]:
    """The expert count of each of the N first samples: N / |K| per k, blocked in K's order."""
    per_count = config.budget // len(config.expert_counts)
    counts = [k for k in config.expert_counts for _ in range(per_count)]
    if config.rounding == "round_robin":
        counts += list(config.expert_counts[: config.budget - len(counts)])
    return counts


def child_count(config: SearchConfig, parent: Node, step: int, slot: int, problem_seed: int) -> tuple[int, ...]:
    """The k of a child: its parent's (inheritance), or in the ablation a uniform draw from K."""
    if config.inherit:
        return parent.expert_count
    return random.Random(slot_seed(problem_seed, step, slot) ^ 0x6B).choice(config.expert_counts)


#: the parents of a round's expansions, from the kept states and every score so far of each k
Allocation = Callable[[Sequence[Node], Mapping[tuple[int, ...], Sequence[float]], SearchConfig], list[Node]]


def even_allocation(kept: Sequence[Node], _scores: Mapping[tuple[int, ...], Sequence[float]],
                    config: SearchConfig) -> list[Node]:
    """The paper's rule: every kept state expanded N / |C_t| times."""
    return expansion_parents(kept, config)


def run(problem: Problem, config: SearchConfig) -> Generator:
    return search(problem, config, even_allocation)


def search(problem: Problem, config: SearchConfig, allocate: Allocation) -> Generator:
    """DES with the rounds' parents chosen by ``allocate`` (DES: :func:`even_allocation`)."""
    if not config.expert_counts:
        raise ValueError("DES needs a set of expert counts K (model arg expert_counts)")
    root = root_node(problem.index, problem.prompt_ids, config.expert_counts[0])
    completed: list[Candidate] = []
    kept: list[Node] = []
    scores_of_k: dict[tuple[int, ...], list[float]] = {k: [] for k in config.expert_counts}
    steps = []
    for t in range(config.max_steps):
        last = t == config.max_steps - 1
        if t == 0:
            requests = [
                step_expansion(root, slot_seed(problem.seed, 0, slot), config, last, expert_count=k)
                for slot, k in enumerate(initial_counts(config))
            ]
        else:
            parents = allocate(kept, scores_of_k, config)
            requests = [
                step_expansion(p, slot_seed(problem.seed, t, slot), config, last, expert_count=child_count(config, p, t, slot, problem.seed))
                for slot, p in enumerate(parents)
            ]
        children = yield Expand(requests)
        scores = yield Score(children)
        scored = [candidate(problem, child, score, config) for child, score in zip(children, scores)]
        for child, c in zip(children, scored):
            scores_of_k.setdefault(tuple(child.expert_count), []).append(c.score)
        pool = [(child, c) for child, c in zip(children, scored) if config.finished_compete or not child.finished]
        winners = top([n for n, _ in pool], [c.score for _, c in pool], config.keep)
        won = {node.id for node in winners}
        for child, c in zip(children, scored):
            if child.finished and (not config.finished_compete or child.id in won):
                completed.append(c)
        kept = [node for node in winners if not node.finished]
        steps.append(step_record(t, children, [c.score for c in scored], winners))
        if not kept:
            break
    finals = best_first(completed, config.budget)
    return SearchResult(selected=select_final(finals, config.final), candidates=finals, steps=steps)
