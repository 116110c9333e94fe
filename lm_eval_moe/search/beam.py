"""Beam search over reasoning steps (docs/METHODS.md section 3; search-and-learn ``beam_search``).

N beams each sample one "\\n\\n"-delimited step; every candidate is scored on its full text; the M
(``keep``; N / beam_width) best live beams survive and are duplicated back to N by the same rule as DES
(``rounding``, ``refill``: :func:`~lm_eval_moe.search.common.expansion_parents`), so DES with one k is this
search for every N and M; finished beams (EOS, or the token budget spent) leave the beam and are
collected; the last iteration samples to EOS. The final candidates are the N best finished beams. Not copied from search-and-learn: scoring an
empty step after a trailing delimiter (see verifiers.base) and padding the final list with copies.
"""

from __future__ import annotations

from collections.abc import Generator

from lm_eval_moe.generation.nodes import Node, root_node
from lm_eval_moe.search.common import (
    Candidate, Expand, Problem, Score, SearchConfig, SearchResult, best_first, candidate, expansion_parents,
    replicate, select_final, slot_seed, step_expansion, step_record, top,
)


def run(problem: Problem, config: SearchConfig) -> Generator:
    active: list[Node] = [root_node(problem.index, problem.prompt_ids, problem.base_expert_count)]
    completed: list[Candidate] = []
    steps = []
    for iteration in range(config.max_steps):
        last = iteration == config.max_steps - 1
        parents = replicate(active, config.budget) if iteration == 0 else expansion_parents(active, config)
        children = yield Expand(
            [step_expansion(p, slot_seed(problem.seed, iteration, slot), config, last) for slot, p in enumerate(parents)]
        )
        scores = yield Score(children)
        scored = [candidate(problem, child, score, config) for child, score in zip(children, scores)]
        completed += [c for child, c in zip(children, scored) if child.finished]
        live = [(child, c.score) for child, c in zip(children, scored) if not child.finished]
        active = top([n for n, _ in live], [s for _, s in live], config.keep)
        steps.append(step_record(iteration, children, [c.score for c in scored], active))
        if not active:
            break
    finals = best_first(completed, config.budget)
    return SearchResult(selected=select_final(finals, config.final), candidates=finals, steps=steps)
