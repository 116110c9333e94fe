"""What every search strategy shares: the driver protocol, configuration, selection and final rules.

A strategy is a generator ``run(problem, config)`` that yields requests and receives their results:

* ``yield Expand(expansions)`` -> the children (:class:`~lm_eval_moe.generation.Node`), in order;
* ``yield Score(nodes)`` -> one :class:`~lm_eval_moe.verifiers.StepScores` per node;

and finally returns a :class:`SearchResult`. The driver runs many problems in lock step and batches
their requests (one engine call, one verifier call per round), so strategies stay pure algorithms
that never touch the model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lm_eval_moe.generation.nodes import Expansion, Node
from lm_eval_moe.generation.sampling import derived_seed
from lm_eval_moe.model_args import expert_count_value
from lm_eval_moe.verifiers.base import AGGREGATIONS, Aggregation, StepScores, aggregate

#: a strategy: a generator ``run(problem, config)`` yielding Expand / Score requests, returning a SearchResult
SearchAlgorithm = Callable[["Problem", "SearchConfig"], Generator]
FinalRule = Literal["prm_best", "majority", "weighted"]
FINAL_RULES = ("prm_best", "majority", "weighted")
Rounding = Literal["round_robin", "floor"]
Refill = Literal["replicate", "none"]


@dataclass(frozen=True)
class Problem:
    index: int  # position in the driver's batch
    prompt_ids: tuple[int, ...]
    question: str  # what a verifier sees
    seed: int
    base_expert_count: tuple[int, ...]  # the policy's k for strategies without their own k set
    stop_strings: tuple[str, ...] = ()  # text that ends a candidate (the task's stop sequences)
    #: what votes group a candidate's text by: the task's own answer key (its checker's reading), None to
    #: vote on nothing (then voting falls back to the best score)
    answer_key: Callable[[str], str | None] | None = None


@dataclass(frozen=True)
class SearchConfig:
    """Every configurable point of docs/METHODS.md sections 2-3, validated once."""

    budget: int = 32  # N
    keep: int = 8  # M (beam search and DVTS: beam width = N / M)
    max_steps: int = 10  # T
    expert_counts: tuple[tuple[int, ...], ...] = ()  # K for DES, per-layer tuples
    max_step_tokens: int = 512
    max_tokens: int = 2048  # per candidate
    aggregation: Aggregation = "last"
    final: FinalRule = "prm_best"
    rounding: Rounding = "round_robin"  # when N / |C_t| is not whole
    refill: Refill = "replicate"  # fewer than M live states: spend the whole budget on them, or not
    finished_compete: bool = False  # finished candidates compete for Top_M (and are dropped if they lose)
    inherit: bool = True  # DES: children keep their parent's k (False: the inheritance ablation)
    needs_scores: bool = True  # False: verifier-free final rule (self-consistency)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget={self.budget}: must be >= 1")
        if not 1 <= self.keep <= self.budget:
            raise ValueError(f"keep={self.keep}: must be in 1..budget ({self.budget})")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps}: must be >= 1")
        if self.max_step_tokens < 1 or self.max_tokens < 1:
            raise ValueError("max_step_tokens and max_tokens must be >= 1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation={self.aggregation!r}: expected one of {', '.join(AGGREGATIONS)}")
        if self.final not in FINAL_RULES:
            raise ValueError(f"final={self.final!r}: expected one of {', '.join(FINAL_RULES)}")
        if self.rounding not in ("round_robin", "floor"):
            raise ValueError(f"rounding={self.rounding!r}: expected round_robin or floor")
        if self.refill not in ("replicate", "none"):
            raise ValueError(f"refill={self.refill!r}: expected replicate or none")

    @property
    def beam_width(self) -> int:
        return max(1, self.budget // self.keep)


@dataclass
class Expand:
    expansions: list[Expansion]


@dataclass
class Score:
    nodes: list[Node]


@dataclass(frozen=True)
class Candidate:
    text: str
    expert_count: tuple[int, ...]
    score: float
    step_scores: tuple[float, ...]
    step_count: int  # expansions the path went through: reasoning steps in step-wise search, 1 in Best-of-N
    finish_reason: str
    answer: str | None  # majority-vote key of the extracted answer

    def as_dict(self) -> dict:
        counts = self.expert_count
        return {
            "text": self.text,
            "expert_count": expert_count_value(counts),
            "score": self.score,
            "step_scores": list(self.step_scores),
            "step_count": self.step_count,
            "finish_reason": self.finish_reason,
            "answer": self.answer,
        }


@dataclass
class SearchResult:
    selected: Candidate | None
    candidates: list[Candidate]
    steps: list[dict] = field(default_factory=list)  # per-step trace (expert counts, scores, kept)


def slot_seed(problem_seed: int, step: int, slot: int) -> int:
    """Seed of expansion ``slot`` at ``step``: the same slot gets the same seed in every strategy."""
    return derived_seed(problem_seed, step, slot)


def replicate(states: Sequence[Node | None], total: int, rounding: Rounding = "round_robin") -> list[Node | None]:
    """Parents for ``total`` expansions of ``states``: round robin (s0, s1, .., s0, s1, ..; exactly
    ``total``, earlier states get the remainder, as search-and-learn's beam search) or ``floor``
    (each state ``total // len(states)`` times, the remainder unspent)."""
    if not states:
        return []
    if rounding == "floor":
        per_state = max(1, total // len(states))
        return [state for _ in range(per_state) for state in states]
    return [states[i % len(states)] for i in range(total)]


def expansion_parents(kept: Sequence[Node], config: SearchConfig) -> list[Node]:
    """The parent of each of a round's expansions, for DES and beam search alike: the kept states replicated
    to N (``rounding``); with fewer than M live states, ``refill=replicate`` spends the whole budget on them
    and ``none`` only the N / M share each would have had."""
    states: list[Node | None] = list(kept)
    if config.refill == "none":
        states += [None] * (config.keep - len(kept))
    return [parent for parent in replicate(states, config.budget, config.rounding) if parent is not None]


def step_expansion(node: Node, seed: int, config: SearchConfig, last: bool, expert_count=None) -> Expansion:
    """One reasoning step (to the delimiter), or to the end of the candidate on the last step."""
    remaining = max(1, config.max_tokens - len(node.token_ids))
    if last:
        return Expansion(node, seed, remaining, stop_at_delimiter=False, length_finishes=True, expert_count=expert_count)
    cap = min(config.max_step_tokens, remaining)
    return Expansion(node, seed, cap, length_finishes=cap == remaining, expert_count=expert_count)


def candidate(problem: Problem, node: Node, scores: StepScores | None, config: SearchConfig,
              reason: str | None = None) -> Candidate:
    step_scores = scores.scores if scores is not None else ()
    return Candidate(
        text=node.text,
        expert_count=node.expert_count,
        score=aggregate(step_scores, config.aggregation) if scores is not None else 0.0,
        step_scores=tuple(step_scores),
        step_count=node.depth,
        finish_reason=reason or node.finish_reason,
        answer=problem.answer_key(node.text) if problem.answer_key is not None else None,
    )


def top(nodes: Sequence[Node], scores: Sequence[float], count: int) -> list[Node]:
    """The ``count`` best nodes by score (ties: the earlier node), in their original order."""
    ranked = sorted(range(len(nodes)), key=lambda i: (-scores[i], i))[:count]
    return [nodes[i] for i in sorted(ranked)]


def best_first(candidates: Sequence[Candidate], limit: int | None = None) -> list[Candidate]:
    ordered = sorted(range(len(candidates)), key=lambda i: (-candidates[i].score, i))
    return [candidates[i] for i in ordered[:limit]]


def select_final(candidates: Sequence[Candidate], rule: FinalRule) -> Candidate | None:
    """prm_best: highest score. majority / weighted: the answer with most votes / largest summed score
    (ties: the answer seen first), represented by its best-scored candidate. Without any extracted
    answer, voting falls back to the highest score."""
    if not candidates:
        return None
    if rule == "prm_best":
        return best_first(candidates, 1)[0]
    tally: dict[str, float] = {}
    for item in candidates:
        if item.answer is not None:
            tally[item.answer] = tally.get(item.answer, 0.0) + (1.0 if rule == "majority" else item.score)
    if not tally:
        return best_first(candidates, 1)[0]
    order = {answer: position for position, answer in enumerate(tally)}
    winner = max(tally, key=lambda answer: (tally[answer], -order[answer]))
    return best_first([c for c in candidates if c.answer == winner], 1)[0]


def step_record(step: int, nodes: Sequence[Node], scores: Sequence[float], kept: Sequence[Node]) -> dict:
    kept_ids = {node.id for node in kept}
    counts = [sum(node.expert_count) / len(node.expert_count) for node in nodes]
    mean = sum(counts) / len(counts) if counts else 0.0
    return {
        "step": step,
        "expanded": len(nodes),
        "expert_counts": [expert_count_value(node.expert_count) for node in nodes],
        "expert_count_mean": mean,
        "expert_count_variance": sum((c - mean) ** 2 for c in counts) / len(counts) if counts else 0.0,
        "scores": list(scores),
        "finished": sum(node.finished for node in nodes),
        "kept": [i for i, node in enumerate(nodes) if node.id in kept_ids],
    }
