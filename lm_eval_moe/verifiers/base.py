"""Verifier interface, step splitting and score aggregation (docs/METHODS.md section 4).

A verifier scores each step of each candidate solution: ``score(questions, step_lists)`` returns one
:class:`StepScores` per candidate (per-step scores in [0, 1] and the verifier tokens it processed).
Steps are the candidate text split on the step delimiter, with the trailing delimiter stripped and
empty steps dropped, so a text ending in "\\n\\n" is not scored on an empty last step (a known flaw
of huggingface/search-and-learn we do not copy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from lm_eval_moe.generation.nodes import Node

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod", "mean")


@dataclass(frozen=True)
class StepScores:
    scores: tuple[float, ...]
    tokens: int  # verifier input tokens spent on this candidate


@runtime_checkable
class Verifier(Protocol):
    """What a search asks of a verifier: one :class:`StepScores` per path (a node of the search tree)."""

    name: str
    default_aggregation: Aggregation
    flops_per_token: float  # of a forward pass over the verifier's input (0 when it reads none)

    def score_paths(self, questions: Sequence[str], nodes: Sequence[Node], delimiter: str) -> list[StepScores]: ...


class StepVerifier:
    """A verifier that reads the text of each step (a PRM): paths are split into steps on the delimiter."""

    name = ""
    #: how its step scores become one score unless the user sets ``aggregation`` (the format's published rule)
    default_aggregation: Aggregation = "last"

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        raise NotImplementedError

    def score_paths(self, questions: Sequence[str], nodes: Sequence[Node], delimiter: str) -> list[StepScores]:
        return self.score(questions, [split_steps(node.text, delimiter) for node in nodes])


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """Non-empty steps of ``text`` (surrounding whitespace kept inside a step, blank steps dropped)."""
    return [step for step in text.split(delimiter) if step.strip()]


def aggregate(scores: Sequence[float], how: Aggregation) -> float:
    """One number per candidate from its per-step scores; 0.0 for a candidate with no step."""
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    if how == "mean":
        return float(sum(scores) / len(scores))
    raise ValueError(f"aggregation={how!r}: expected one of {', '.join(AGGREGATIONS)}")
