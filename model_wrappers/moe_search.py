"""``moe_search`` and ``moe_des``: verifier-guided search over reasoning steps as an lm-eval model.

This class translates: each ``generate_until`` request becomes a search problem (its prompt, the question a
verifier sees, a seed from the document, the task's stop sequences), the method (``lm_eval_moe.search.method``,
built from ``SearchSettings``) searches them, and each outcome becomes the response text (the selected
candidate, cut at the stop sequences) with metadata: every final candidate with its k and score, the cost
and per-step expert-count statistics, which the task's ``process_results`` turns into metrics.

Generation kwargs: ``until`` and ``max_gen_toks`` (the per-candidate token budget, unless ``max_tokens`` is
given) apply. A search samples by nature: when a request asks for sampling (``do_sample=true``) its
``temperature``/``top_p``/``top_k`` are used (an explicit model arg that differs is an error); when it asks
for greedy decoding (our tasks' default) the model args' sampling is used, said once in the log and
recorded in the results.
"""

from __future__ import annotations

import logging
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.utils import postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.generation import SamplingConfig
from lm_eval_moe.model_args import ModelArgError, given
from lm_eval_moe.model_wrappers.base import MoEHFLMBase, request_seed
from lm_eval_moe.resources import Meter
from lm_eval_moe.search import Problem
from lm_eval_moe.search.driver import ROUND_BAR
from lm_eval_moe.search.method import SearchMethod
from lm_eval_moe.search.settings import SearchSettings, search_arg_names, search_settings

logger = logging.getLogger(__name__)
SAMPLING = ("temperature", "top_p", "top_k")


class MoESearchLM(MoEHFLMBase):
    """``--model moe_search`` (``strategy=...``) and ``--model moe_des``: see the README for the model args."""

    model_name = "moe_search"
    settings_type = SearchSettings
    default_strategy = "best_of_n"
    supported_gen_kwargs = frozenset({"do_sample", *SAMPLING})

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        super().__init__(pretrained=pretrained, **model_args)
        settings: SearchSettings = self.method_settings
        vllm_engine = None
        if settings.backend == "vllm":
            from lm_eval_moe.generation.vllm_engine import engine_from_settings

            counts = settings.search_config(self.moe.default_expert_counts, self.moe.num_experts, 1).expert_counts
            vllm_engine = engine_from_settings(settings, self.checkpoint, max(k for c in counts for k in c) if counts
                                               else max(self.moe.expert_counts),
                                               str(self.model.dtype).removeprefix("torch."), settings.seed)
        self._vllm_engine = vllm_engine
        self.method = SearchMethod.build(settings, self.model, self.tokenizer, self.moe, self.cost_model, self.eos_ids,
                                         self.device, vllm_engine)
        self._greedy_noted = False
        logger.info("%s: %s", self.model_name, self.method.describe())

    @classmethod
    def settings_from(cls, args: dict[str, Any]) -> SearchSettings:
        settings = search_settings(args, cls.default_strategy)
        if settings.verifier not in (None, "majority", "likelihood"):
            from lm_eval_moe.checkpoints import resolve_checkpoint

            resolve_checkpoint(settings.verifier, "verifier")
        return settings

    @classmethod
    def settings_arg_names(cls) -> list[str]:
        return search_arg_names()

    @classmethod
    def expert_counts_to_check(cls, settings: Any) -> list[tuple[str, list[Any]]]:
        checks = super().expert_counts_to_check(settings)
        if settings.expert_counts:
            checks.append(("expert_counts", list(settings.expert_counts)))
        return checks

    @classmethod
    def load_time_settings(cls) -> list[str]:
        """The loaded verifier too."""
        return [*super().load_time_settings(), *(name for name in cls.settings_arg_names() if name.startswith("verifier"))]

    def apply_settings(self) -> None:
        super().apply_settings()
        self.method = SearchMethod.build(self.method_settings, self.model, self.tokenizer, self.moe, self.cost_model,
                                         self.eos_ids, self.device, self._vllm_engine, verifier=self.method.verifier)
        logger.info("%s: %s", self.model_name, self.method.describe())

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "backend": self.method_settings.backend, **self.method.describe()}

    def _sampling(self, kwargs: dict[str, Any]) -> SamplingConfig:
        """The request's sampling when it asks for sampling, else the model args' (see module docstring)."""
        settings = self.method_settings
        if not kwargs.get("do_sample"):
            if not self._greedy_noted:
                logger.warning("%s: the task asks for greedy decoding; a search samples, at temperature=%s top_p=%s "
                               "top_k=%s (model args)", self.model_name, settings.temperature, settings.top_p,
                               settings.top_k)
                self._greedy_noted = True
            return SamplingConfig(settings.temperature, settings.top_p, settings.top_k)
        requested = {name: kwargs[name] for name in SAMPLING if name in kwargs}
        for name, value in requested.items():
            if given(settings, name) and float(getattr(settings, name)) != float(value):
                raise ModelArgError(f"sampling {name} is given twice: {value} in the generation kwargs and "
                                    f"{getattr(settings, name)} in the model args")
        values = {name: getattr(settings, name) for name in SAMPLING} | requested
        return SamplingConfig(float(values["temperature"]), float(values["top_p"]), int(values["top_k"] or 0))

    def _problem(self, index: int, request: Instance, repeat: int) -> tuple[Problem, list[str], int, SamplingConfig]:
        context, gen_kwargs = request.args[0], dict(request.args[1])
        until, max_new, kwargs = self.request_kwargs(gen_kwargs)
        max_tokens = self.method_settings.max_tokens or max_new
        prompt = self.tok_encode(context, left_truncate_len=max(1, self.max_length - max_tokens))
        doc = request.doc if isinstance(request.doc, dict) else {}
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        problem = Problem(
            index=index, prompt_ids=tuple(prompt), question=str(doc.get("moe_question") or context),
            seed=request_seed(self.method_settings.seed, request, repeat),
            base_expert_count=tuple(self.moe.expert_counts),
            stop_strings=tuple(s for s in until if s and s != eos_text),
        )
        return problem, until, max_tokens, self._sampling(kwargs)

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> list[str]:
        prepared = [self._problem(index, request, repeat)
                    for index, (request, repeat) in enumerate(zip(requests, repeats))]
        groups: dict[tuple[int, SamplingConfig], list[int]] = {}
        for index, (_, _, max_tokens, sampling) in enumerate(prepared):
            groups.setdefault((max_tokens, sampling), []).append(index)
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc=f"{self.model_name} ({self.method_settings.strategy})", bar_format=ROUND_BAR)
        for (max_tokens, sampling), indices in groups.items():
            effective = {"max_tokens": max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                         "top_k": sampling.top_k}
            done = 0
            meter = Meter()
            for batch in self.method.run([prepared[i][0] for i in indices], max_tokens, sampling, progress):
                usage = self.measured(meter, len(batch))
                batch_indices, done = indices[done : done + len(batch)], done + len(batch)
                for index, outcome in zip(batch_indices, batch, strict=True):
                    request, until = requests[index], prepared[index][1]
                    selected = outcome.result.selected
                    text = postprocess_generated_text(selected.text if selected else "", until, None)
                    meta = outcome.as_meta(self.method_settings.strategy)
                    results[index] = self.finished(index, text, meta, effective, usage)
                    self.method.trace(request.task_name, request.doc_id, outcome)
                meter = Meter()
        progress.close()
        return results  # type: ignore[return-value]


class MoEDESLM(MoESearchLM):
    """``--model moe_des``: Dynamic Experts Search (``moe_search`` with ``strategy=des``)."""

    model_name = "moe_des"
    default_strategy = "des"
