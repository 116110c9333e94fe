"""Diverse Verifier Tree Search (docs/METHODS.md section 3; search-and-learn ``dvts``).

N / beam_width independent subtrees. In each iteration every live subtree samples beam_width
one-step continuations of its current state and greedily moves to the best-scored one. A subtree ends
when that choice finished (EOS or token budget) or contains "boxed{" (an answer was given); the last
iteration samples to EOS. Each subtree returns its last candidates.

Not copied from search-and-learn: it returns a subtree's unfinished candidates (cut at a step
delimiter) mixed with finished ones; here only the last candidates that finished or give an answer
are returned (the chosen one always qualifies).
"""

from __future__ import annotations

from collections.abc import Generator

from lm_eval_moe.generation.nodes import Node, root_node
from lm_eval_moe.search.common import (
    Candidate, Expand, Problem, Score, SearchConfig, SearchResult, best_first, candidate, select_final, slot_seed,
    step_expansion, step_record,
)

ANSWER_MARK = "boxed{"


def _done(node: Node) -> str | None:
    if node.finished:
        return node.finish_reason
    return "answer" if ANSWER_MARK in node.text else None


def run(problem: Problem, config: SearchConfig) -> Generator:
    width = config.beam_width
    root = root_node(problem.index, problem.prompt_ids, problem.base_expert_count)
    current: list[Node] = [root] * max(1, config.budget // width)
    last_candidates: list[list[Candidate]] = [[] for _ in current]
    live = list(range(len(current)))
    steps = []
    for iteration in range(config.max_steps):
        last = iteration == config.max_steps - 1
        requests = [
            step_expansion(current[tree], slot_seed(problem.seed, iteration, tree * width + j), config, last)
            for tree in live
            for j in range(width)
        ]
        children = yield Expand(requests)
        scores = yield Score(children)
        scored = [candidate(problem, child, score, config, reason=_done(child)) for child, score in zip(children, scores)]
        chosen = []
        for position, tree in enumerate(live):
            group = range(position * width, (position + 1) * width)
            best = max(group, key=lambda i: (scored[i].score, -i))
            current[tree] = children[best]
            chosen.append(children[best])
            last_candidates[tree] = [scored[i] for i in group if _done(children[i]) is not None]
        steps.append(step_record(iteration, children, [c.score for c in scored], chosen))
        live = [tree for tree in live if _done(current[tree]) is None]
        if not live:
            break
    finals = best_first([c for group in last_candidates for c in group])
    return SearchResult(selected=select_final(finals, config.final), candidates=finals, steps=steps)
