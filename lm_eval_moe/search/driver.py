"""Run a search strategy on many problems at once, batching their requests.

Each round, every live problem's pending request is collected: all expansions go to ONE engine call
(all live beams of all problems share a batch, whatever their expert counts) and all scoring to ONE
verifier call. Strategies alternate Expand and Score, so the problems stay in lock step and the
engine's frontier always holds the states the next expansions continue from.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from lm_eval_moe.cost import Cost
from lm_eval_moe.generation.engine import StepEngine
from lm_eval_moe.generation.nodes import Node
from lm_eval_moe.search.common import Expand, Problem, Score, SearchConfig, SearchResult
from lm_eval_moe.verifiers.base import StepScores, split_steps
from lm_eval_moe.verifiers.likelihood import LikelihoodVerifier

Strategy = Callable[[Problem, SearchConfig], Generator]


@dataclass
class SearchOutcome:
    problem: Problem
    result: SearchResult
    cost: Cost
    nodes: list[Node]  # every node generated for this problem (for traces and independent checks)


def _score(verifier, problems: dict[int, Problem], nodes: Sequence[Node], delimiter: str) -> list[StepScores]:
    if isinstance(verifier, LikelihoodVerifier):
        return verifier.score_nodes(nodes)
    return verifier.score(
        [problems[node.problem].question for node in nodes], [split_steps(node.text, delimiter) for node in nodes]
    )


def run_search(
    strategy: Strategy,
    problems: Sequence[Problem],
    config: SearchConfig,
    engine: StepEngine,
    verifier,
    progress: tqdm | None = None,
) -> list[SearchOutcome]:
    """Search every problem; outcomes in the order of ``problems``. Resets the engine first."""
    engine.reset()
    engine.stop_strings = {p.index: p.stop_strings for p in problems if p.stop_strings}
    by_index = {p.index: p for p in problems}
    searches = {p.index: strategy(p, config) for p in problems}
    pending = {index: next(search) for index, search in searches.items()}
    results: dict[int, SearchResult] = {}
    nodes: dict[int, list[Node]] = {p.index: [] for p in problems}
    while pending:
        answers: dict[int, object] = {}
        expand = [(index, request) for index, request in pending.items() if isinstance(request, Expand)]
        if expand:
            children = engine.expand([e for _, request in expand for e in request.expansions])
            cursor = 0
            for index, request in expand:
                answers[index] = children[cursor : cursor + len(request.expansions)]
                nodes[index] += answers[index]
                cursor += len(request.expansions)
        score = [(index, request) for index, request in pending.items() if isinstance(request, Score)]
        if score:
            flat = [node for _, request in score for node in request.nodes]
            scored = _score(verifier, by_index, flat, engine.delimiter) if flat else []
            cursor = 0
            for index, request in score:
                answers[index] = scored[cursor : cursor + len(request.nodes)]
                engine.costs[index].verifier_tokens += sum(s.tokens for s in answers[index])
                cursor += len(request.nodes)
        for index, answer in answers.items():
            try:
                pending[index] = searches[index].send(answer)
            except StopIteration as stop:
                results[index] = stop.value
                del pending[index]
                if progress is not None:
                    progress.update(1)
    return [SearchOutcome(p, results[p.index], engine.costs[p.index], nodes[p.index]) for p in problems]
