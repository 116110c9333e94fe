"""Run a search strategy on many problems at once, batching their requests.

Each round, every live problem's pending request is collected: all expansions go to ONE engine call
(all live beams of all problems share a batch, whatever their expert counts) and all scoring to ONE
verifier call. Strategies alternate Expand and Score, so the problems stay in lock step and the
engine's frontier always holds the states the next expansions continue from. Everything the batch hands
the engine (stop strings, router biases, cost ledgers) travels in one :class:`BatchContext`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from lm_eval_moe.cost import Cost
from lm_eval_moe.generation.batch import BatchContext, StepGenerator
from lm_eval_moe.generation.nodes import Node
from lm_eval_moe.search.common import Expand, Problem, Score, SearchAlgorithm, SearchConfig, SearchResult
from lm_eval_moe.verifiers.base import Verifier


@dataclass
class SearchOutcome:
    problem: Problem
    result: SearchResult
    cost: Cost
    nodes: list[Node]  # every node generated for this problem (for traces and independent checks)

    def average_expert_count(self) -> float:
        """Mean k over every token generated for the problem (each token counted once, under its path's k)."""
        generated = [(n, len(n.token_ids) - (len(n.parent.token_ids) if n.parent else 0)) for n in self.nodes]
        total = sum(count for _, count in generated)
        return sum(sum(n.expert_count) / len(n.expert_count) * count for n, count in generated) / total if total else 0.0

    def as_meta(self, strategy: str) -> dict:
        """What a response carries: every final candidate (text, k, score, finish reason), the cost, and per
        step the expert-count statistics and the k of each state kept (the chosen-k analysis)."""
        result = self.result
        return {
            "candidates": [c.as_dict() for c in result.candidates],
            "selected": result.selected.as_dict() if result.selected is not None else None,
            "cost": self.cost.as_dict(),
            "search": {
                "strategy": strategy,
                "avg_expert_count": self.average_expert_count(),
                "steps": [{**{k: step[k] for k in ("step", "expanded", "expert_count_mean", "expert_count_variance",
                                                   "finished")},
                           "kept_expert_counts": [step["expert_counts"][i] for i in step["kept"]]}
                          for step in result.steps],
            },
        }

    def trace_record(self) -> dict:
        result = self.result
        return {"question": self.problem.question, "selected": result.selected.as_dict() if result.selected else None,
                "candidates": [c.as_dict() for c in result.candidates], "steps": result.steps,
                "cost": self.cost.as_dict()}


def _generated_tokens(context: BatchContext, expand: Sequence[tuple[int, Expand]]) -> int:
    return sum(context.ledgers[index].cost.generated_tokens for index, _ in expand)


#: tqdm's default format with the problem count to one decimal (rounds move it in fractions of a problem)
ROUND_BAR = "{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class RoundProgress:
    """Moves a bar counted in problems every search round, not only when a problem ends: each live problem
    advances 1/``max_rounds`` per round (never reaching its whole unit before it finishes), a finished one
    completes its unit; the postfix shows the round, the live paths and the generated tokens per second."""

    def __init__(self, bar: tqdm | None, max_rounds: int, problems: Sequence[int]) -> None:
        self.bar, self.max_rounds = bar, max(1, max_rounds)
        self.credit = {index: 0.0 for index in problems}
        self.round_number = 0

    def round(self, live: Sequence[int], paths: int, tokens: int, seconds: float) -> None:
        self.round_number += 1
        if self.bar is None:
            return
        step = 0.0
        for index in live:
            gain = max(0.0, min(1.0 / self.max_rounds, 0.99 - self.credit[index]))
            self.credit[index] += gain
            step += gain
        self.bar.set_postfix_str(f"round {self.round_number}/{self.max_rounds}, {paths} live paths, "
                                 f"{tokens / max(seconds, 1e-9):.0f} tok/s", refresh=False)
        self.bar.update(step)

    def finished(self, index: int) -> None:
        if self.bar is not None:
            self.bar.update(1.0 - self.credit[index])
        self.credit[index] = 1.0


def run_search(
    algorithm: SearchAlgorithm,
    problems: Sequence[Problem],
    config: SearchConfig,
    engine: StepGenerator,
    verifier: Verifier,
    context: BatchContext,
    progress: tqdm | None = None,
    max_rounds: int = 1,
) -> list[SearchOutcome]:
    """Search every problem; outcomes in the order of ``problems``. Resets the engine first. ``progress``
    moves every round (:class:`RoundProgress`; ``max_rounds``: the strategy's most expansion rounds)."""
    engine.reset()
    rounds = RoundProgress(progress, max_rounds, [p.index for p in problems])
    by_index = {p.index: p for p in problems}
    searches = {p.index: algorithm(p, config) for p in problems}
    pending = {index: next(search) for index, search in searches.items()}
    results: dict[int, SearchResult] = {}
    nodes: dict[int, list[Node]] = {p.index: [] for p in problems}
    while pending:
        answers: dict[int, object] = {}
        expand = [(index, request) for index, request in pending.items() if isinstance(request, Expand)]
        if expand:
            started, generated = time.perf_counter(), _generated_tokens(context, expand)
            children = engine.expand([e for _, request in expand for e in request.expansions], context)
            rounds.round([index for index, _ in expand], sum(len(request.expansions) for _, request in expand),
                         _generated_tokens(context, expand) - generated, time.perf_counter() - started)
            cursor = 0
            for index, request in expand:
                answers[index] = children[cursor : cursor + len(request.expansions)]
                nodes[index] += answers[index]
                cursor += len(request.expansions)
        score = [(index, request) for index, request in pending.items() if isinstance(request, Score)]
        if score:
            flat = [node for _, request in score for node in request.nodes]
            questions = [by_index[node.problem].question for node in flat]
            scored = verifier.score_paths(questions, flat, engine.delimiter) if flat else []
            cursor = 0
            for index, request in score:
                answers[index] = scored[cursor : cursor + len(request.nodes)]
                tokens = sum(s.tokens for s in answers[index])
                context.ledgers[index].verified(tokens, tokens * verifier.flops_per_token)
                cursor += len(request.nodes)
        for index, answer in answers.items():
            try:
                pending[index] = searches[index].send(answer)
            except StopIteration as stop:
                results[index] = stop.value
                del pending[index]
                rounds.finished(index)
    return [SearchOutcome(p, results[p.index], context.ledgers[p.index].cost, nodes[p.index]) for p in problems]
