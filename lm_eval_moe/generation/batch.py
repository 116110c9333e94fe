"""The explicit contract between a search batch and a step generator (the HF engine or the vLLM one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lm_eval_moe.cost import CostLedger, CostModel
from lm_eval_moe.generation.nodes import Expansion, Node


@dataclass
class BatchContext:
    """What one batch of problems hands the generator, per problem index: the cost ledger its work is charged
    to, the text that ends a candidate (the task's stop sequences) and a router-logit bias (layers, experts)
    from rerouting, if any."""

    ledgers: dict[int, CostLedger]
    stop_strings: dict[int, tuple[str, ...]] = field(default_factory=dict)
    biases: dict[int, Any] = field(default_factory=dict)

    @classmethod
    def for_problems(cls, indices: Sequence[int], cost_model: CostModel,
                     stop_strings: dict[int, tuple[str, ...]] | None = None) -> BatchContext:
        return cls({index: CostLedger(cost_model) for index in indices},
                   {index: stops for index, stops in (stop_strings or {}).items() if stops})


class StepGenerator(Protocol):
    """Advances a batch of partial solutions by one step (or to the end), each with its own expert count."""

    delimiter: str
    cache_mode: str

    def reset(self) -> None:
        """Forget every cached prefix (between batches of problems)."""

    def expand(self, expansions: Sequence[Expansion], context: BatchContext) -> list[Node]:
        """One child per expansion, in order."""
