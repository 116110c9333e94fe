"""Partial solutions (search tree nodes) and the requests that grow them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_ids = itertools.count()


@dataclass(eq=False)
class Node:
    """A prompt plus the tokens generated after it, decoded under one per-layer expert count.

    ``step_ends[i]`` is the number of generated tokens after expansion ``i`` (one reasoning step per
    expansion in step-wise search; a whole solution for Best-of-N). ``logprobs`` are the policy's
    (temperature 1) log-probabilities of the generated tokens.
    """

    problem: int
    prompt_ids: tuple[int, ...]
    expert_count: tuple[int, ...]
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    step_ends: tuple[int, ...] = ()
    text: str = ""
    finished: bool = False
    finish_reason: str = ""  # "eos" | "length" | "" (still open)
    parent: Node | None = None
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def depth(self) -> int:
        return len(self.step_ends)

    @property
    def root(self) -> Node:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def step_logprobs(self) -> list[tuple[float, ...]]:
        """Token log-probabilities grouped by expansion."""
        bounds = (0, *self.step_ends)
        return [self.logprobs[a:b] for a, b in zip(bounds, bounds[1:])]


def root_node(problem: int, prompt_ids: tuple[int, ...], expert_count: tuple[int, ...]) -> Node:
    return Node(problem=problem, prompt_ids=prompt_ids, expert_count=expert_count)


@dataclass(frozen=True)
class Expansion:
    """Grow ``parent`` by one step (``stop_at_delimiter``) or to the end, with ``expert_count``
    (None: inherit the parent's), sampling with ``seed``, at most ``max_new_tokens`` tokens.
    ``length_finishes``: reaching ``max_new_tokens`` ends the candidate (its token budget is spent),
    rather than only this step."""

    parent: Node
    seed: int
    max_new_tokens: int
    stop_at_delimiter: bool = True
    length_finishes: bool = False
    expert_count: tuple[int, ...] | None = None


def child_node(expansion: Expansion, expert_count: tuple[int, ...], tokens: Sequence[int], logprobs: Sequence[float],
               reason: str, decode: Callable[[list[int]], str]) -> Node:
    """The node an expansion produced (any engine): its new tokens appended, finished on EOS or a stop
    string, or on the length limit where that limit ends the candidate."""
    parent = expansion.parent
    token_ids = parent.token_ids + tuple(tokens)
    return Node(
        problem=parent.problem,
        prompt_ids=parent.prompt_ids,
        expert_count=expert_count,
        token_ids=token_ids,
        logprobs=parent.logprobs + tuple(logprobs),
        step_ends=parent.step_ends + (len(token_ids),),
        text=decode(list(token_ids)),
        finished=reason in ("eos", "stop") or (reason == "length" and expansion.length_finishes),
        finish_reason=reason,
        parent=parent,
    )
