"""Plain generation at a chosen k (``moe_hf``'s method, and C3PO's with its routing mix): one batch of
encoded prompts through transformers' ``generate`` (or one vLLM engine), each row's cost counted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lm_eval_moe.cost import Cost, CostLedger, CostModel
from lm_eval_moe.generation.stops import tokens_until_stop
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.resources import Meter

class BatchRouting(Protocol):
    """Routing set for one generation batch (C3PO mixes its references' routing in); extra work is charged to
    ``ledgers`` (one per row)."""

    def __call__(self, context_enc: torch.Tensor, attn_masks: torch.Tensor,
                 ledgers: list[CostLedger]) -> contextlib.AbstractContextManager[None]: ...


@dataclass
class GeneratedBatch:
    rows: list[list[int]]  # the tokens each row generated (finished rows padded until the batch ended)
    costs: list[Cost]
    resources: dict[str, Any]  # each row's share of the batch's wall time and memory


class PlainGeneration:
    def __init__(self, moe: DynamicMoE, cost_model: CostModel, eos_ids: set[int], vllm: Any = None,
                 batch_routing: BatchRouting | None = None) -> None:
        """``vllm``: the loaded engine when ``backend=vllm``; ``batch_routing``: C3PO's per-batch mix."""
        self.moe, self.cost_model, self.eos_ids = moe, cost_model, eos_ids
        self.vllm, self.batch_routing = vllm, batch_routing

    def generate(self, context_enc: torch.Tensor, attn_masks: torch.Tensor, counts: list[int], until: list[str],
                 max_gen_toks: int, kwargs: dict[str, Any], hf_generate: Callable[..., torch.Tensor],
                 decode: Callable[[Sequence[int]], str]) -> GeneratedBatch:
        """The batch at per-layer k ``counts``: ``hf_generate`` is lm-eval's ``_model_generate`` (HF backend),
        ``decode`` the tokenizer's, for counting the tokens each row really generated before its stop."""
        ledgers = [CostLedger(self.cost_model) for _ in range(context_enc.shape[0])]
        meter = Meter()
        if self.vllm is not None:
            rows = self._vllm_generate(context_enc, attn_masks, counts, until, max_gen_toks, kwargs)
        else:
            extra = (self.batch_routing(context_enc, attn_masks, ledgers) if self.batch_routing is not None
                     else contextlib.nullcontext())
            with self.moe.routing(expert_count=counts), extra:
                output = hf_generate(context=context_enc, attention_mask=attn_masks, stop=until,
                                     max_length=context_enc.shape[1] + max_gen_toks, **kwargs)
            rows = output[:, context_enc.shape[1] :].tolist()
        resources = meter.stop().per_sample(len(rows))
        for ledger, prompt_length, tokens in zip(ledgers, attn_masks.sum(dim=1).tolist(), rows):
            ledger.generation(int(prompt_length), tokens_until_stop(tokens, self.eos_ids, until, decode), counts)
        return GeneratedBatch(rows, [ledger.cost for ledger in ledgers], resources)

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
