"""``moe_hf``: lm-eval's HF model with a run-time expert count and per-request cost accounting.

Generation goes through ``transformers.generate`` like ``--model hf`` (every generation kwarg works);
what changes is that the routers follow ``expert_count``, that a request may carry its own
``expert_count`` in its ``gen_kwargs``, and that every response carries its cost (tokens,
expert-token products, FLOPs) for the task metrics and the run totals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.utils import Collator, postprocess_generated_text
from tqdm import tqdm

from lm_eval_moe.cost import CostLedger
from lm_eval_moe.generation.settings import PlainSettings
from lm_eval_moe.model_args import ModelArgError, parse_expert_count
from lm_eval_moe.model_wrappers.base import MoEHFLMBase
from lm_eval_moe.resources import Meter

#: what backend=vllm honours of a request's generation kwargs
VLLM_GEN_KWARGS = frozenset({"do_sample", "temperature", "top_p", "top_k"})


def count_generated_tokens(
    tokens: Sequence[int], eos_ids: set[int], stops: Sequence[str], decode: Callable[[Sequence[int]], str]
) -> int:
    """Tokens a row really generated before it finished: through its first EOS, or through the token
    that completed a stop string (``generate`` pads finished rows until the whole batch is done)."""
    end = len(tokens)
    for position, token in enumerate(tokens):
        if token in eos_ids:
            end = position + 1
            break
    stops = [s for s in stops if s]
    if not stops or not any(s in decode(tokens[:end]) for s in stops):
        return end
    low, high = 1, end  # smallest prefix whose text contains a stop string (containment is monotone)
    while low < high:
        middle = (low + high) // 2
        if any(s in decode(tokens[:middle]) for s in stops):
            high = middle
        else:
            low = middle + 1
    return low


class MoEHFLM(MoEHFLMBase):
    """``--model moe_hf``: see the module docstring and README for the model args."""

    model_name = "moe_hf"
    settings_type = PlainSettings

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        super().__init__(pretrained=pretrained, **model_args)
        settings: PlainSettings = self.method_settings
        self.vllm = None
        if settings.backend == "vllm":
            if len(set(self.moe.expert_counts)) != 1:
                raise ModelArgError("backend=vllm runs one k for all layers: give expert_count as a single int")
            from lm_eval_moe.generation.vllm_engine import engine_from_settings

            self.vllm = engine_from_settings(settings, self.checkpoint, self.moe.expert_counts[0],
                                             str(self.model.dtype).removeprefix("torch."), settings.vllm_seed)
            self.supported_gen_kwargs = VLLM_GEN_KWARGS

    @classmethod
    def settings_from(cls, args: dict[str, Any]) -> Any:
        settings = super().settings_from(args)
        if settings.backend == "vllm" and cls.batch_routing is not MoEHFLM.batch_routing:
            raise ModelArgError(f"{cls.model_name} changes routing per batch, which backend=vllm cannot: use backend=hf")
        return settings

    def apply_settings(self) -> None:
        loaded = list(self.moe.expert_counts)
        super().apply_settings()
        if self.vllm is not None and list(self.moe.expert_counts) != loaded:
            self.moe.set_expert_count(loaded)
            raise ModelArgError("backend=vllm built its engine for one k: a sweep over expert_count needs backend=hf")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "backend": self.method_settings.backend}

    @contextlib.contextmanager
    def batch_routing(self, context_enc: torch.Tensor, attn_masks: torch.Tensor,
                      ledgers: list[CostLedger]) -> Iterator[None]:
        """Routing settings for one generation batch (subclasses: C3PO's re-mixing); extra work is charged
        to ``ledgers`` (one per row)."""
        yield

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> list[str]:
        results: list[Any] = [None] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="moe_hf generate_until")
        batch_size = self.batch_size if self.batch_size != "auto" else self._detect_batch_size()
        ordered = Collator(
            [(*req.args, index) for index, req in enumerate(requests)],
            sort_fn=lambda item: (-len(self.tok_encode(item[0])), item[0]),
            group_by="gen_kwargs",
            group_fn=lambda item: item[1],
        )
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
            context_enc = context_enc.to(self.device)
            attn_masks = attn_masks.to(self.device)
            counts = self.moe.per_layer_counts(request_counts) if request_counts is not None else self.moe.expert_counts
            effective = {"max_gen_toks": max_gen_toks, "expert_count": counts, **kwargs}
            ledgers = [CostLedger(self.cost_model) for _ in contexts]
            meter = Meter()
            if self.vllm is not None:
                generated_rows = self._vllm_generate(context_enc, attn_masks, counts, until, max_gen_toks, kwargs)
            else:
                with self.moe.settings(expert_count=counts), self.batch_routing(context_enc, attn_masks, ledgers):
                    output = self._model_generate(
                        context=context_enc,
                        attention_mask=attn_masks,
                        stop=until,
                        max_length=context_enc.shape[1] + max_gen_toks,
                        **kwargs,
                    )
                generated_rows = output[:, context_enc.shape[1] :].tolist()
            prompt_lengths = attn_masks.sum(dim=1).tolist()
            usage = self.measured(meter, len(generated_rows))
            for row, (tokens, context, index) in enumerate(zip(generated_rows, contexts, indices)):
                ledger = ledgers[row]
                ledger.generation(int(prompt_lengths[row]), count_generated_tokens(tokens, self.eos_ids, until,
                                                                                   self.tok_decode), counts)
                think_end = self.think_end_token if isinstance(self.think_end_token, str) else None
                text = postprocess_generated_text(self.tok_decode(tokens), until, think_end)
                meta = {"cost": ledger.cost.as_dict(), "expert_count": counts}
                response = self.finished(index, text, meta, effective, usage)
                results[index] = response
                self.cache_hook.add_partial("generate_until", (context, all_gen_kwargs[0]), response)
                progress.update(1)
        progress.close()
        return results

    def _vllm_generate(self, context_enc: torch.Tensor, attn_masks: torch.Tensor, counts: list[int],
                       until: list[str], max_gen_toks: int, kwargs: dict[str, Any]) -> list[list[int]]:
        """The batch's prompts (left padding removed) in one vLLM call at this batch's k. Greedy unless
        ``do_sample``; sampled outputs come from vLLM's generator, not torch's."""
        if len(set(counts)) != 1:
            raise ModelArgError(f"backend=vllm runs one k for all layers, got per-layer {counts}")
        sampled = bool(kwargs.get("do_sample", False))
        prompts = [row[mask.bool()].tolist() for row, mask in zip(context_enc.cpu(), attn_masks.cpu())]
        completions = self.vllm.generate(
            prompts, [counts[0]] * len(prompts), max_tokens=max_gen_toks,
            temperature=float(kwargs.get("temperature", 1.0)) if sampled else 0.0,
            top_p=float(kwargs.get("top_p", 1.0)), top_k=int(kwargs.get("top_k", 0) or 0),
            stops=[until] * len(prompts), stop_token_ids=sorted(self.eos_ids),
        )
        return [list(completion.token_ids) for completion in completions]
