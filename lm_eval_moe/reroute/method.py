"""Rerouting as a method over a loaded policy (``moe_reroute``'s run): a batch of prompts generated with router
deltas optimised every m tokens (:class:`~lm_eval_moe.reroute.rerouter.Rerouter`), each row's response facts
(Phase 1 records, routing entropy per block, cost) and, with ``pathway_stats``, the expert-pathway analysis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation.sampling import SamplingConfig
from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.reroute.pathways import pathway_stats
from lm_eval_moe.reroute.rerouter import Rerouter
from lm_eval_moe.reroute.settings import RerouteSettings
from lm_eval_moe.resources import Meter


@dataclass
class ReroutedRow:
    tokens: list[int]
    meta: dict[str, Any]  # cost, reroute (phases, block entropy, finish reason, pathways), resources


class RerouteMethod:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, moe: DynamicMoE, cost_model: CostModel,
                 settings: RerouteSettings) -> None:
        self.model, self.moe, self.settings = model, moe, settings
        self.rerouter = Rerouter(model, tokenizer, moe, cost_model, settings)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingConfig,
                 seeds: Sequence[int], stop_strings: Sequence[str], eos_ids: set[int],
                 on_phase: Callable[[int, int, int], None] | None = None) -> list[ReroutedRow]:
        """One batch, optimised together. Its wall time is the method's: the pathway diagnostic after it is not
        part of it."""
        meter = Meter()
        outcomes = self.rerouter.generate(prompts, max_new_tokens, sampling, seeds, stop_strings=stop_strings,
                                          eos_ids=eos_ids, on_phase=on_phase)
        resources = meter.stop().per_sample(len(outcomes))
        pathways: list[dict[str, Any]] = [{}] * len(outcomes)
        if self.settings.pathway_stats:
            pathways = pathway_stats(self.model, self.moe, self.rerouter.pad_id, prompts,
                                     [o.tokens for o in outcomes], [o.block_deltas[-1] for o in outcomes])
        return [ReroutedRow(outcome.tokens, {
            "cost": outcome.cost.as_dict(), "resources": resources,
            "reroute": {"phases": outcome.phases, "block_entropy": outcome.block_entropy,
                        "finish_reason": outcome.finish_reason, "pathways": pathway},
        }) for outcome, pathway in zip(outcomes, pathways)]

    def report(self) -> dict[str, Any]:
        """The rerouting settings in force (reported with the results)."""
        names = ("steps", "lr", "interval", "layer_selection", "layer_fraction", "layer_weighting", "confidence_order",
                 "weight_decay", "eps", "loss_window", "loss_reduction", "gradient_checkpointing", "seed")
        return {name: getattr(self.settings, name) for name in names}
