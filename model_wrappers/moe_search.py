"""``moe_search`` and ``moe_des``: verifier-guided search over reasoning steps as an lm-eval model.

This class translates: each ``generate_until`` request becomes a search problem (its prompt, the question a
verifier sees, a seed from the document, the task's stop sequences and answer key), the method
(``lm_eval_moe.search.method``, built from ``SearchSettings``) searches them, and each outcome becomes the
response text (the selected candidate, cut at the stop sequences) with metadata: every final candidate with
its k and score, the cost and per-step expert-count statistics, which the task's ``process_results`` turns
into metrics.

Generation kwargs: ``until`` and ``max_gen_toks`` (the per-candidate token budget, unless ``max_tokens`` is
given) apply; the sampling rule is ``SearchSettings.sampling`` (a greedy request gets the model args'
sampling, said once in the log and recorded in the results).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.utils import postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.generation import SamplingConfig
from lm_eval_moe.model_wrappers.base import MoEHFLMBase, request_seed
from lm_eval_moe.run_record import Generated
from lm_eval_moe.scoring import CHECKERS
from lm_eval_moe.search import Problem
from lm_eval_moe.search.driver import ROUND_BAR
from lm_eval_moe.search.method import SearchMethod
from lm_eval_moe.search.settings import SearchSettings

logger = logging.getLogger(__name__)


class MoESearchLM(MoEHFLMBase):
    """``--model moe_search`` (``strategy=...``) and ``--model moe_des``: see the README for the model args."""

    model_name = "moe_search"
    settings_type = SearchSettings

    def build_method(self) -> None:
        settings: SearchSettings = self.method_settings
        previous: SearchMethod | None = getattr(self, "method", None)  # a sweep keeps the loaded verifier and engine
        vllm = previous.vllm_engine if previous else None
        if settings.backend == "vllm" and vllm is None:
            from lm_eval_moe.generation.vllm_engine import engine_from_settings

            counts = settings.search_config(self.moe.default_k, self.moe.num_experts, 1).expert_counts
            vllm = engine_from_settings(settings, self.checkpoint, max(max(c) for c in counts) if counts
                                        else max(self.moe.current_k), str(self.model.dtype).removeprefix("torch."),
                                        settings.seed)
        self.method = SearchMethod.build(settings, self.model, self.tokenizer, self.moe, self.cost_model, self.eos_ids,
                                         self.device, vllm, verifier=previous.verifier if previous else None)
        self._notes: set[str] = set()
        logger.info("%s: %s", self.model_name, self.method.describe())

    def reported_settings(self) -> dict[str, Any]:
        return {**super().reported_settings(), **self.method_settings.reported_backend(), **self.method.describe()}

    def _note_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._notes:
            self._notes.add(key)
            logger.warning(message, *args)

    def _answer_key(self, task: str, doc: dict[str, Any]) -> Callable[[str], str | None] | None:
        """What the search's votes group candidates by: the task's own answer checker (``moe_answer_key`` of our
        tasks' documents; none for code), or, for a task of another package, the math reading (said once)."""
        name = doc.get("moe_answer_key")
        if name is None:
            self._note_once(f"key:{task}", "%s: task %s names no answer checker: votes read answers as the math "
                            "checker does", self.model_name, task)
            name = "math"
        return CHECKERS[name].key if name else None

    def _problem(self, index: int, request: Instance, repeat: int) -> tuple[Problem, list[str], int, SamplingConfig]:
        context, gen_kwargs = request.args[0], dict(request.args[1])
        until, max_new, kwargs = self.request_kwargs(gen_kwargs)
        settings = self.method_settings
        max_tokens = settings.max_tokens or max_new
        prompt = self.tok_encode(context, left_truncate_len=max(1, self.max_length - max_tokens))
        doc = request.doc if isinstance(request.doc, dict) else {}
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        sampling, from_model_args = settings.sampling(kwargs)
        if from_model_args:
            self._note_once("greedy", "%s: the task asks for greedy decoding; a search samples, at temperature=%s "
                            "top_p=%s top_k=%s (model args)", self.model_name, sampling.temperature, sampling.top_p,
                            sampling.top_k)
        problem = Problem(
            index=index, prompt_ids=tuple(prompt), question=str(doc.get("moe_question") or context),
            seed=request_seed(settings.seed, request, repeat), base_expert_count=tuple(self.moe.current_k),
            stop_strings=tuple(s for s in until if s and s != eos_text), answer_key=self._answer_key(request.task_name, doc),
        )
        return problem, until, max_tokens, sampling

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> Iterator[Generated]:
        prepared = [self._problem(index, request, repeat)
                    for index, (request, repeat) in enumerate(zip(requests, repeats))]
        groups: dict[tuple[int, SamplingConfig], list[int]] = {}
        for index, (_, _, max_tokens, sampling) in enumerate(prepared):
            groups.setdefault((max_tokens, sampling), []).append(index)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                        desc=f"{self.model_name} ({self.method_settings.strategy})", bar_format=ROUND_BAR)
        for (max_tokens, sampling), indices in groups.items():
            effective = {"max_tokens": max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
                         "top_k": sampling.top_k}
            done = 0
            for batch, resources in self.method.run([prepared[i][0] for i in indices], max_tokens, sampling, progress):
                batch_indices, done = indices[done : done + len(batch)], done + len(batch)
                for index, outcome in zip(batch_indices, batch, strict=True):
                    request, until = requests[index], prepared[index][1]
                    selected = outcome.result.selected
                    text = postprocess_generated_text(selected.text if selected else "", until, None)
                    meta = {**outcome.as_meta(self.method_settings.strategy), "resources": resources}
                    self.method.trace(request.task_name, request.doc_id, outcome)
                    yield Generated(index, text, meta, effective)
        progress.close()


class MoEDESLM(MoESearchLM):
    """``--model moe_des``: Dynamic Experts Search (``moe_search`` with ``strategy=des``)."""

    model_name = "moe_des"
    default_model_args = {"strategy": "des"}
