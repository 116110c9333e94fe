"""``moe_hf``: lm-eval's HF model with a run-time expert count and per-request cost accounting.

Generation goes through ``transformers.generate`` like ``--model hf`` (every generation kwarg works);
what changes is that the routers follow ``expert_count``, that a request may carry its own
``expert_count`` in its ``gen_kwargs``, and that every response carries its cost (tokens,
expert-token products, FLOPs) for the task metrics and the run totals. The method: ``generation/plain.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.utils import Collator, postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.generation.gen_kwargs import LM_EVAL_GEN_KWARGS, SAMPLING_GEN_KWARGS, hf_generate_kwargs
from lm_eval_moe.generation.plain import BatchRouting, PlainGeneration
from lm_eval_moe.generation.settings import PlainSettings
from lm_eval_moe.model_args import ModelArgError, parse_expert_count
from lm_eval_moe.model_wrappers.base import MoEHFLMBase
from lm_eval_moe.run_record import Generated


class MoEHFLM(MoEHFLMBase):
    """``--model moe_hf``: see the module docstring and README for the model args."""

    model_name = "moe_hf"
    settings_type = PlainSettings

    def build_method(self) -> None:
        settings: PlainSettings = self.method_settings
        vllm = getattr(self, "_vllm", None)
        if settings.backend == "vllm":
            if len(set(self.moe.current_k)) != 1:
                raise ModelArgError("backend=vllm runs one k for all layers: give expert_count as a single int")
            if vllm is None:
                from lm_eval_moe.generation.vllm_engine import engine_from_settings

                vllm = self._vllm = engine_from_settings(settings, self.checkpoint, self.moe.current_k[0],
                                                         str(self.model.dtype).removeprefix("torch."), settings.vllm_seed)
                self._vllm_k = list(self.moe.current_k)
            elif list(self.moe.current_k) != self._vllm_k:
                raise ModelArgError("backend=vllm built its engine for one k: a sweep over expert_count needs backend=hf")
        self.method = PlainGeneration(self.moe, self.cost_model, self.eos_ids, vllm, self.batch_routing())

    @classmethod
    def honoured_gen_kwargs(cls, settings: PlainSettings) -> frozenset[str]:
        """backend=hf: what transformers' generate takes per request; vllm: the sampling kwargs; both: a
        request's own ``expert_count``."""
        honoured = hf_generate_kwargs() if settings.backend == "hf" else LM_EVAL_GEN_KWARGS | SAMPLING_GEN_KWARGS
        return honoured | {"expert_count"}

    def batch_routing(self) -> BatchRouting | None:
        """Routing set per generation batch (C3PO's mix); the plain model has none."""
        return None

    def reported_settings(self) -> dict[str, Any]:
        return {**super().reported_settings(), **self.method_settings.reported_backend()}

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> Iterator[Generated]:
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc=f"{self.model_name} generate_until")
        batch_size = self.batch_size if self.batch_size != "auto" else self._detect_batch_size()
        ordered = Collator(
            [(*req.args, index) for index, req in enumerate(requests)],
            sort_fn=lambda item: (-len(self.tok_encode(item[0])), item[0]),
            group_by="gen_kwargs",
            group_fn=lambda item: item[1],
        )
        think_end = self.think_end_token if isinstance(self.think_end_token, str) else None
        for chunk in ordered.get_batched(n=batch_size):
            contexts, all_gen_kwargs, indices = zip(*chunk, strict=True)
            gen_kwargs = dict(all_gen_kwargs[0])
            request_counts = parse_expert_count("expert_count", gen_kwargs.pop("expert_count", None))
            until, max_gen_toks, kwargs = self.request_kwargs(gen_kwargs)
            max_ctx_len = self.max_length - max_gen_toks
            if max_ctx_len <= 0:
                raise ValueError(
                    f"max_gen_toks={max_gen_toks} leaves no room for the prompt in max_length={self.max_length}"
                )
            context_enc, attn_masks = self.tok_batch_encode(
                list(contexts), left_truncate_len=max_ctx_len, truncation=self.truncation
            )
            counts = self.moe.per_layer_k(request_counts) if request_counts is not None else self.moe.current_k
            batch = self.method.generate(context_enc.to(self.device), attn_masks.to(self.device), counts, until,
                                         max_gen_toks, kwargs, self._model_generate, self.tok_decode)
            effective = {"max_gen_toks": max_gen_toks, "expert_count": counts, **kwargs}
            for tokens, cost, index in zip(batch.rows, batch.costs, indices):
                text = postprocess_generated_text(self.tok_decode(tokens), until, think_end)
                meta = {"cost": cost.as_dict(), "expert_count": counts, "resources": batch.resources}
                yield Generated(index, text, meta, effective)
                progress.update(1)
        progress.close()
