"""``moe_search`` and ``moe_des``: verifier-guided search over reasoning steps as an lm-eval model.

Each ``generate_until`` request is one problem; problems are searched ``search_batch_size`` at a time
with all their live beams in one batch. The response text is the selected candidate (cut at the
task's stop sequences); its metadata carries every final candidate with its k and score, the cost
(generated tokens counted once, verifier tokens, expert-token products, FLOPs) and per-step expert
count statistics, which the task's ``process_results`` turns into metrics (precision, pass@k, ...).

The question shown to the verifier is the document's ``moe_question`` (our tasks provide it), else
the whole prompt. Search settings are model args; from the task's generation kwargs only the stop
sequences and ``max_gen_toks`` (the per-candidate token budget, unless ``max_tokens`` is given) apply.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.cost import Cost
from lm_eval_moe.generation import SamplingConfig, StepEngine
from lm_eval_moe.model_wrappers.args import ModelArgError, parse_backend, parse_bool, parse_int
from lm_eval_moe.model_wrappers.base import MoEHFLMBase, repeat_indices, request_seed
from lm_eval_moe.model_wrappers.moe_reroute import reroute_config
from lm_eval_moe.reroute import Rerouter, ScaledAdam
from lm_eval_moe.response import MoEResponse
from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
from lm_eval_moe.search.driver import SearchOutcome, run_search
from lm_eval_moe.verifiers import load_verifier

logger = logging.getLogger(__name__)

#: strategy -> (final rule, needs verifier scores)
STRATEGY_DEFAULTS = {
    "des": ("prm_best", True),
    "best_of_n": ("prm_best", True),
    "weighted_best_of_n": ("weighted", True),
    "beam": ("prm_best", True),
    "dvts": ("prm_best", True),
    "self_consistency": ("majority", False),
}


def parse_expert_counts(value: Any, default_counts: list[int], num_experts: int) -> tuple[tuple[int, ...], ...]:
    """K: ``4-11`` (a range), ``4|6|8`` or ``4;6;8`` (a set; commas separate model args), a JSON list,
    per-layer sets like ``4:4:6:6|8:8:8:8``; default: the paper's shape around the model's k,
    {k-4 .. k+3} clipped to 1..num_experts (our choice; the paper used {4..11} with k = 8)."""
    layers = len(default_counts)
    if value is None or value == "":
        k = default_counts[0]
        return tuple((c,) * layers for c in range(max(1, k - 4), min(num_experts, k + 3) + 1))
    if isinstance(value, int):
        entries: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        entries = list(value)
    else:
        text = str(value).strip()
        if text.startswith("["):
            entries = json.loads(text)
        elif "-" in text and "|" not in text and ";" not in text and ":" not in text:
            low, high = (parse_int("expert_counts", part) for part in text.split("-", 1))
            if low > high:
                raise ModelArgError(f"model arg expert_counts={value!r}: the range is empty")
            entries = list(range(low, high + 1))
        else:
            entries = [part for part in text.replace(";", "|").split("|") if part]
    counts = []
    for entry in entries:
        if isinstance(entry, str) and ":" in entry:
            entry = [parse_int("expert_counts", p) for p in entry.split(":")]
        per_layer = tuple(entry) if isinstance(entry, (list, tuple)) else (parse_int("expert_counts", entry),) * layers
        if len(per_layer) != layers:
            raise ModelArgError(f"model arg expert_counts: a per-layer set needs {layers} values, got {list(per_layer)}")
        for k in per_layer:
            if not 1 <= int(k) <= num_experts:
                raise ModelArgError(
                    f"model arg expert_counts={value!r}: {k} is out of range, allowed 1..{num_experts} routed experts"
                )
        counts.append(tuple(int(k) for k in per_layer))
    if not counts:
        raise ModelArgError(f"model arg expert_counts={value!r}: no expert count given")
    return tuple(counts)


class MoESearchLM(MoEHFLMBase):
    """``--model moe_search`` (``strategy=...``) and ``--model moe_des``: see README for the model args."""

    model_name = "moe_search"
    default_strategy = "best_of_n"

    def __init__(
        self,
        pretrained: Any,
        strategy: str | None = None,
        budget: Any = 32,
        keep: Any = None,
        beam_width: Any = None,
        max_steps: Any = 10,
        expert_counts: Any = None,
        temperature: Any = 0.8,
        top_p: Any = 1.0,
        top_k: Any = 0,
        step_delimiter: str = "\\n\\n",
        max_step_tokens: Any = 512,
        max_tokens: Any = None,
        verifier: str | None = None,
        verifier_type: str | None = None,
        verifier_device: str | None = None,
        verifier_dtype: str | None = None,
        verifier_batch_size: Any = 8,
        verifier_trust_remote_code: Any = False,
        aggregation: str = "last",
        final: str | None = None,
        seed: Any = 1234,
        rounding: str = "round_robin",
        refill: str = "replicate",
        finished_compete: Any = False,
        inherit: Any = True,
        cache_mode: str = "auto",
        prompt_expert_count: str = "path",
        search_batch_size: Any = 4,
        trace_path: str | None = None,
        reroute: Any = False,
        reroute_steps: Any = 5,
        reroute_lr: Any = 0.05,
        reroute_layer_selection: str = "soft",
        reroute_layer_fraction: Any = 0.25,
        reroute_confidence_order: str = "paper",
        backend: str = "hf",
        vllm_max_model_len: Any = None,
        vllm_gpu_memory_utilization: Any = None,
        vllm_tensor_parallel_size: Any = 1,
        **kwargs: Any,
    ) -> None:
        backend = parse_backend(backend)
        if backend == "vllm" and parse_bool("reroute", reroute):
            raise ModelArgError("reroute=true needs router-logit biases, which backend=vllm does not have: use backend=hf")
        super().__init__(pretrained=pretrained, **kwargs)
        self.backend = backend
        self.rerouter = None
        if parse_bool("reroute", reroute):
            config = reroute_config(reroute_steps, reroute_lr, 1, reroute_layer_selection, reroute_layer_fraction,
                                    reroute_confidence_order)
            self.rerouter = Rerouter(self.model, self.tokenizer, self.moe, self.cost_model, config)
        self.strategy = strategy or self.default_strategy
        if self.strategy not in STRATEGIES:
            raise ModelArgError(f"model arg strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        default_final, needs_scores = STRATEGY_DEFAULTS[self.strategy]
        if verifier is None and needs_scores:
            raise ModelArgError(
                f"strategy {self.strategy} needs a verifier: a PRM (local path or hub id), or majority / likelihood"
            )
        budget = parse_int("budget", budget)
        if keep is not None and beam_width is not None:
            raise ModelArgError("give keep (M) or beam_width (N / M), not both")
        if beam_width is not None:
            keep_value = max(1, budget // parse_int("beam_width", beam_width))
        else:
            keep_value = parse_int("keep", keep) if keep is not None else max(1, budget // 4)
        final_rule = final or default_final
        if verifier == "majority" and final_rule != "majority":
            logger.info("verifier=majority: the final answer is the majority vote (pruning uses the likelihood)")
            final_rule = "majority"
        self._max_tokens = parse_int("max_tokens", max_tokens) if max_tokens is not None else None
        self.search_config = SearchConfig(
            budget=budget,
            keep=keep_value,
            max_steps=parse_int("max_steps", max_steps),
            expert_counts=parse_expert_counts(expert_counts, self.moe.default_expert_counts, self.moe.num_experts)
            if self.strategy == "des"
            else (),
            max_step_tokens=parse_int("max_step_tokens", max_step_tokens),
            aggregation=aggregation,  # type: ignore[arg-type]
            final=final_rule,  # type: ignore[arg-type]
            rounding=rounding,  # type: ignore[arg-type]
            refill=refill,  # type: ignore[arg-type]
            finished_compete=parse_bool("finished_compete", finished_compete),
            inherit=parse_bool("inherit", inherit),
            needs_scores=needs_scores,
        )
        self.seed = parse_int("seed", seed)
        self.search_batch_size = parse_int("search_batch_size", search_batch_size)
        self.trace_path = Path(trace_path) if trace_path else None
        self.verifier_name = verifier or "none"
        self.verifier = load_verifier(
            verifier or "majority",
            verifier_type=verifier_type,
            device=verifier_device,
            dtype=verifier_dtype,
            batch_size=parse_int("verifier_batch_size", verifier_batch_size),
            trust_remote_code=parse_bool("verifier_trust_remote_code", verifier_trust_remote_code),
        )
        sampling = SamplingConfig(temperature=float(temperature), top_p=float(top_p), top_k=parse_int("top_k", top_k))
        delimiter = codecs.decode(step_delimiter, "unicode_escape")
        if backend == "vllm":
            if prompt_expert_count != "path":
                raise ModelArgError("backend=vllm reads every prefix under its path's k: prompt_expert_count=path only")
            from lm_eval_moe.generation.vllm_engine import VLLMStepEngine

            counts = [k for per_layer in self.search_config.expert_counts for k in per_layer] or self.moe.expert_counts
            engine = self._vllm_engine(pretrained, max(counts), self.seed, vllm_max_model_len,
                                       vllm_gpu_memory_utilization, vllm_tensor_parallel_size)
            self.engine = VLLMStepEngine(engine, self.tokenizer, self.cost_model, sampling, delimiter,
                                         sorted(self._eos_ids()))
        else:
            self.engine = StepEngine(
                self.model, self.tokenizer, self.moe, self.cost_model, sampling, delimiter=delimiter,
                cache_mode=cache_mode,  # type: ignore[arg-type]
                prompt_expert_count=prompt_expert_count,  # type: ignore[arg-type]
            )
        logger.info(
            "%s: strategy=%s N=%d M=%d T=%d K=%s verifier=%s aggregation=%s final=%s temperature=%s seed=%d",
            self.model_name, self.strategy, budget, keep_value, self.search_config.max_steps,
            [self._describe_counts(list(k)) for k in self.search_config.expert_counts] or "-",
            self.verifier_name, aggregation, final_rule, temperature, self.seed,
        )

    def settings(self) -> dict[str, Any]:
        config = self.search_config
        return {
            **super().settings(),
            "backend": self.backend,
            "strategy": self.strategy,
            "budget": config.budget,
            "keep": config.keep,
            "beam_width": config.beam_width,
            "max_steps": config.max_steps,
            "expert_counts": [list(k) if len(set(k)) > 1 else k[0] for k in config.expert_counts],
            "max_step_tokens": config.max_step_tokens,
            "temperature": self.engine.sampling.temperature,
            "top_p": self.engine.sampling.top_p,
            "step_delimiter": self.engine.delimiter,
            "verifier": self.verifier_name,
            "aggregation": config.aggregation,
            "final": config.final,
            "rounding": config.rounding,
            "refill": config.refill,
            "finished_compete": config.finished_compete,
            "inherit": config.inherit,
            "seed": self.seed,
            "cache_mode": self.engine.cache_mode,
            "reroute": None if self.rerouter is None else {
                "steps": self.rerouter.config.steps, "lr": self.rerouter.config.lr,
                "layer_selection": self.rerouter.config.layer_selection,
                "layer_fraction": self.rerouter.config.layer_fraction,
                "confidence_order": self.rerouter.config.confidence_order,
            },
        }

    def _problem(self, index: int, request: Instance, repeat: int) -> tuple[Problem, list[str], int]:
        context, gen_kwargs = request.args[0], dict(request.args[1])
        gen_kwargs.pop("expert_count", None)
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
        max_tokens = self._max_tokens or int(kwargs["max_gen_toks"])
        prompt = self.tok_encode(context, left_truncate_len=max(1, self.max_length - max_tokens))
        doc = request.doc if isinstance(request.doc, dict) else {}
        problem = Problem(
            index=index,
            prompt_ids=tuple(prompt),
            question=str(doc.get("moe_question") or context),
            seed=request_seed(self.seed, request, repeat),
            base_expert_count=tuple(self.moe.expert_counts),
            stop_strings=tuple(s for s in until if s and s != eos_text),
        )
        return problem, until, max_tokens

    def _generate(self, requests: list[Instance], disable_tqdm: bool) -> list[str]:
        prepared = [(request, *self._problem(index, request, repeat))
                    for index, (request, repeat) in enumerate(zip(requests, repeat_indices(requests)))]
        by_budget: dict[int, list[int]] = {}
        for index, (_, _, _, max_tokens) in enumerate(prepared):
            by_budget.setdefault(max_tokens, []).append(index)
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc=f"{self.model_name} ({self.strategy})")
        strategy = STRATEGIES[self.strategy]
        for max_tokens, indices in by_budget.items():
            config = dataclasses.replace(self.search_config, max_tokens=max_tokens)
            for start in range(0, len(indices), self.search_batch_size):
                chunk = indices[start : start + self.search_batch_size]
                problems = [prepared[i][1] for i in chunk]
                reroute_costs = self._reroute_prompts(problems)
                outcomes = run_search(strategy, problems, config, self.engine, self.verifier, progress)
                for outcome, extra in zip(outcomes, reroute_costs):
                    outcome.cost.add(extra)
                for index, outcome in zip(chunk, outcomes):
                    request, _, until, _ = prepared[index]
                    results[index] = self._response(outcome, until)
                    self._trace(request, outcome)
        progress.close()
        return results  # type: ignore[return-value]

    def _reroute_prompts(self, problems: list[Problem]) -> list[Cost]:
        """``reroute=true``: one Phase 1 of test-time rerouting on each prompt before the search; the
        deltas then bias every path of that problem (a combination neither paper has)."""
        costs = [Cost() for _ in problems]
        self.engine.problem_bias = {}
        if self.rerouter is None:
            return costs
        deltas = torch.zeros(len(problems), self.moe.num_layers, self.moe.num_experts, device=self.engine.device,
                             requires_grad=True)
        config = self.rerouter.config
        optimizer = ScaledAdam(deltas, config.lr, eps=config.eps, weight_decay=config.weight_decay)
        self.rerouter.optimise([p.prompt_ids for p in problems], deltas, optimizer, list(range(len(problems))), costs,
                               [p.seed for p in problems])
        self.engine.problem_bias = {p.index: deltas[i].detach() for i, p in enumerate(problems)}
        return costs

    def _response(self, outcome: SearchOutcome, until: list[str]) -> MoEResponse:
        result = outcome.result
        generated = [(n, len(n.token_ids) - (len(n.parent.token_ids) if n.parent else 0)) for n in outcome.nodes]
        total = sum(count for _, count in generated)
        avg_k = sum(sum(n.expert_count) / len(n.expert_count) * count for n, count in generated) / total if total else 0.0
        cost = Cost(**outcome.cost.as_dict())
        self.totals.add(cost)
        text = result.selected.text if result.selected is not None else ""
        meta = {
            "candidates": [c.as_dict() for c in result.candidates],
            "selected": result.selected.as_dict() if result.selected is not None else None,
            "cost": cost.as_dict(),
            "search": {
                "strategy": self.strategy,
                "avg_expert_count": avg_k,
                "steps": [
                    {k: step[k] for k in ("step", "expanded", "expert_count_mean", "expert_count_variance", "finished")}
                    for step in result.steps
                ],
            },
        }
        return MoEResponse(postprocess_generated_text(text, until, None), meta)

    def _trace(self, request: Instance, outcome: SearchOutcome) -> None:
        if self.trace_path is None:
            return
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "task": request.task_name,
            "doc_id": request.doc_id,
            "strategy": self.strategy,
            "question": outcome.problem.question,
            "selected": outcome.result.selected.as_dict() if outcome.result.selected else None,
            "candidates": [c.as_dict() for c in outcome.result.candidates],
            "steps": outcome.result.steps,
            "cost": outcome.cost.as_dict(),
        }
        with self.trace_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


class MoEDESLM(MoESearchLM):
    """``--model moe_des``: Dynamic Experts Search (``moe_search`` with ``strategy=des``)."""

    model_name = "moe_des"
    default_strategy = "des"
