"""A search method over a loaded policy, assembled from :class:`SearchSettings`: the verifier, the step
generator (HF or vLLM), the optional rerouting priming, batching of problems, and what each search reports.

The lm-eval model classes hand this module problems and get outcomes back; everything about how a search
runs lives here and below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation import SamplingConfig, StepEngine
from lm_eval_moe.generation.batch import BatchContext, StepGenerator
from lm_eval_moe.model_args import expert_count_value
from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.reroute import Rerouter
from lm_eval_moe.search.common import Problem
from lm_eval_moe.search.driver import SearchOutcome, run_search
from lm_eval_moe.search.settings import SearchSettings
from lm_eval_moe.search.strategies import STRATEGIES
from lm_eval_moe.resources import Meter
from lm_eval_moe.verifiers import Verifier, load_verifier


class SearchMethod:
    """DES or a baseline with its verifier, ready to search batches of problems."""

    def __init__(self, settings: SearchSettings, moe: DynamicMoE, cost_model: CostModel, engine: StepGenerator,
                 verifier: Verifier, rerouter: Rerouter | None, vllm_engine: Any = None) -> None:
        self.settings, self.moe, self.cost_model = settings, moe, cost_model
        self.engine, self.verifier, self.rerouter, self.vllm_engine = engine, verifier, rerouter, vllm_engine

    @classmethod
    def build(cls, settings: SearchSettings, model: Any, tokenizer: Any, moe: DynamicMoE, cost_model: CostModel,
              eos_ids: set[int], device: torch.device | str, vllm_engine: Any = None,
              verifier: Any = None) -> SearchMethod:
        """``vllm_engine``: the loaded vLLM engine when ``backend=vllm``; ``verifier``: one already loaded with
        these settings (a sweep over other settings keeps it)."""
        if verifier is None:
            verifier = load_verifier(
                settings.verifier or "majority", verifier_format=settings.verifier_format,
                step_tag=settings.verifier_step_tag,
                device=settings.verifier_device or device, dtype=settings.verifier_dtype,
                batch_size=settings.verifier_batch_size, trust_remote_code=settings.verifier_trust_remote_code,
            )
        sampling = SamplingConfig(settings.temperature, settings.top_p, settings.top_k)
        if vllm_engine is not None:
            from lm_eval_moe.generation.vllm_engine import VLLMStepEngine

            engine: StepGenerator = VLLMStepEngine(vllm_engine, tokenizer, sampling, settings.step_delimiter,
                                                   sorted(eos_ids))
        else:
            engine = StepEngine(model, tokenizer, moe, sampling, delimiter=settings.step_delimiter,
                                cache_mode=settings.cache_mode,  # type: ignore[arg-type]
                                prompt_expert_count=settings.prompt_expert_count,  # type: ignore[arg-type]
                                eos_ids=eos_ids)
        rerouter = (Rerouter(model, tokenizer, moe, cost_model, settings.reroute_settings)
                    if settings.reroute_settings is not None else None)
        return cls(settings, moe, cost_model, engine, verifier, rerouter, vllm_engine)

    @property
    def max_rounds(self) -> int:
        """Expansion rounds a problem takes at most: its steps for step-wise strategies, else one."""
        return self.settings.max_steps if STRATEGIES[self.settings.strategy].stepwise else 1

    @property
    def verifier_name(self) -> str:
        return self.settings.verifier or "none"

    @property
    def verifier_format(self) -> str | None:
        """The format the verifier was loaded as (given or detected); None for majority and likelihood."""
        name = getattr(self.verifier, "name", "")
        return name.split(":", 1)[0] if ":" in name else None

    def run(self, problems: Sequence[Problem], max_tokens: int, sampling: SamplingConfig,
            progress: tqdm | None = None) -> Iterator[tuple[list[SearchOutcome], dict[str, Any]]]:
        """Search ``problems`` (whose candidates may use up to ``max_tokens``) in batches of
        ``search_batch_size``, sampling with ``sampling``; yields each batch's outcomes, in order, as soon as
        the batch is done, with each outcome's share of the batch's wall time and memory."""
        settings = self.settings
        config = settings.search_config(self.moe.default_k, self.moe.num_experts, max_tokens,
                                        self.verifier.default_aggregation)
        self.engine.sampling = sampling
        for start in range(0, len(problems), settings.search_batch_size):
            meter = Meter()
            batch = list(problems[start : start + settings.search_batch_size])
            context = BatchContext.for_problems([p.index for p in batch], self.cost_model,
                                                {p.index: p.stop_strings for p in batch})
            if self.rerouter is not None:
                deltas = self.rerouter.prime([p.prompt_ids for p in batch], [context.ledgers[p.index] for p in batch],
                                             [p.seed for p in batch])
                context.biases = {p.index: deltas[row] for row, p in enumerate(batch)}
            outcomes = run_search(STRATEGIES[settings.strategy].algorithm, batch, config, self.engine, self.verifier,
                                  context, progress, max_rounds=self.max_rounds)
            yield outcomes, meter.stop().per_sample(len(outcomes))

    def describe(self) -> dict[str, Any]:
        """The effective settings of this method (reported with the results)."""
        settings = self.settings
        return {
            "strategy": settings.strategy, "budget": settings.budget, "keep": settings.kept_states,
            "beam_width": settings.budget // settings.kept_states, "max_steps": settings.max_steps,
            "expert_counts": [expert_count_value(k) for k in settings.search_config(
                self.moe.default_k, self.moe.num_experts, 1).expert_counts],
            "max_step_tokens": settings.max_step_tokens, "step_delimiter": settings.step_delimiter,
            "verifier": self.verifier_name, "verifier_format": self.verifier_format,
            "aggregation": settings.aggregation or self.verifier.default_aggregation, "final": settings.final_rule,
            "rounding": settings.rounding, "refill": settings.refill, "finished_compete": settings.finished_compete,
            "inherit": settings.inherit, "seed": settings.seed, "cache_mode": self.engine.cache_mode,
            "reroute": None if settings.reroute_settings is None else {
                name: getattr(settings.reroute_settings, name)
                for name in ("steps", "lr", "layer_selection", "layer_fraction", "confidence_order")},
        }

    def trace(self, task: str, doc_id: int, outcome: SearchOutcome) -> None:
        """Append the problem's whole search (``trace_path``): every step's k, scores and kept states."""
        if self.settings.trace_path is None:
            return
        path = Path(self.settings.trace_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"task": task, "doc_id": doc_id, "strategy": self.settings.strategy, **outcome.trace_record()}
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
