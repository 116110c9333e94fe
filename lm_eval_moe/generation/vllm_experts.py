"""Worker side of the vLLM backend: a per-request expert count inside one vLLM batch.

vLLM has no per-request top-k (docs/ENGINES.md). The engine is loaded at the largest k of the run; each
request names its k in ``SamplingParams.extra_args["moe_k"]``. :class:`ExpertCountProcessor` is a V1
logits processor only so that it runs inside the worker: vLLM calls its ``update_state`` after the
persistent batch is final for the coming forward (added, removed, moved and reordered rows), so it keeps
``row -> k``. Its constructor installs :func:`_select_experts_with_row_counts` on vLLM's router base
class: after the normal top-k_max routing it keeps, for every token, the weights of its request's k
highest-scoring experts and zeroes the rest (renormalising over the kept ones where the model
renormalises), which is exactly routing with that k. Every token still pays k_max expert compute.

It touches vLLM internals (``BaseRouter._select_experts``, the forward context's attention metadata):
the engine side checks the vLLM version at start-up, and the CPU test compares against transformers.
"""

from __future__ import annotations

from typing import Any

import torch

EXTRA_ARG = "moe_k"

# worker-process state shared by the processor (writes) and the router patch (reads)
_ROW_COUNTS: list[int] = []
_MAX_COUNT: list[int] = [0]


class UnsupportedRouterError(RuntimeError):
    pass


def _row_counts_per_token(num_tokens: int, device: torch.device) -> torch.Tensor | None:
    """k of the request each token belongs to, or None outside a real batch (profiling, warm-up)."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available() or not _ROW_COUNTS:
        return None
    metadata = get_forward_context().attn_metadata
    if isinstance(metadata, list):  # micro-batches: not used with per-request counts
        raise UnsupportedRouterError("per-request expert counts do not support micro-batching (ubatches)")
    if not metadata:
        return None
    start_loc = next(iter(metadata.values())).query_start_loc.to("cpu")
    requests = start_loc.numel() - 1
    if requests > len(_ROW_COUNTS):
        return None
    per_token = torch.repeat_interleave(torch.tensor(_ROW_COUNTS[:requests]), start_loc.diff())
    if per_token.numel() < num_tokens:  # padded tail rows: any k, their outputs are discarded
        per_token = torch.cat([per_token, per_token.new_full((num_tokens - per_token.numel(),), _MAX_COUNT[0])])
    return per_token[:num_tokens].to(device)


def keep_top_counts(weights: torch.Tensor, counts: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """Zero each row's weights beyond its ``counts`` largest; rescale the kept ones to the row's former
    sum where the router renormalises (so routed scaling factors survive)."""
    order = weights.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    kept = torch.where(ranks < counts[:, None], weights, torch.zeros_like(weights))
    if renormalize:
        kept = kept * (weights.sum(-1, keepdim=True) / kept.sum(-1, keepdim=True))
    return kept


def _check_router(router: Any) -> None:
    """Only plain top-k routers order their weights like their selection scores."""
    unsupported = [
        name for name in ("e_score_correction_bias", "num_expert_group", "custom_routing_function")
        if getattr(router, name, None) is not None
    ]
    scoring = getattr(router, "scoring_func", "softmax")
    if unsupported or scoring != "softmax":
        raise UnsupportedRouterError(
            f"{type(router).__name__} uses {', '.join(unsupported) or 'scoring_func=' + scoring}: per-request expert "
            "counts support plain softmax top-k routers (OLMoE, Qwen2/Qwen3-MoE, Mixtral); use backend=hf for this model"
        )


def _select_experts_with_row_counts(self, hidden_states: torch.Tensor, router_logits: torch.Tensor, *args, **kwargs):
    weights, ids = _ORIGINAL_SELECT[0](self, hidden_states, router_logits, *args, **kwargs)
    counts = _row_counts_per_token(weights.shape[0], weights.device)
    if counts is None or bool((counts >= self.top_k).all()):
        return weights, ids
    _check_router(self)
    return keep_top_counts(weights, counts, bool(getattr(self, "renormalize", False))).to(weights.dtype), ids


_ORIGINAL_SELECT: list[Any] = []


def install_router_patch() -> None:
    from vllm.model_executor.layers.fused_moe.router.base_router import BaseRouter

    if not _ORIGINAL_SELECT:
        _ORIGINAL_SELECT.append(BaseRouter._select_experts)
        BaseRouter._select_experts = _select_experts_with_row_counts


def _logits_processor_base():
    from vllm.v1.sample.logits_processor import LogitsProcessor

    return LogitsProcessor


class ExpertCountProcessor(_logits_processor_base()):  # type: ignore[misc]
    """Tracks each batch row's ``moe_k``; never changes logits."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        install_router_patch()
        _MAX_COUNT[0] = int(vllm_config.model_config.hf_config.num_experts_per_tok)
        _ROW_COUNTS.clear()

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        value = (sampling_params.extra_args or {}).get(EXTRA_ARG)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"extra_args[{EXTRA_ARG!r}]={value!r}: expected a positive int")

    def is_argmax_invariant(self) -> bool:
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            if index < len(_ROW_COUNTS):
                _ROW_COUNTS[index] = _MAX_COUNT[0]
        for index, params, _, _ in batch_update.added:
            while len(_ROW_COUNTS) <= index:
                _ROW_COUNTS.append(_MAX_COUNT[0])
            count = (params.extra_args or {}).get(EXTRA_ARG, _MAX_COUNT[0]) if params is not None else _MAX_COUNT[0]
            if count > _MAX_COUNT[0]:
                raise ValueError(f"moe_k={count} exceeds the engine's loaded k={_MAX_COUNT[0]} (load at the largest k)")
            _ROW_COUNTS[index] = count
        for source, target, direction in batch_update.moved:
            while len(_ROW_COUNTS) <= max(source, target):
                _ROW_COUNTS.append(_MAX_COUNT[0])
            if direction.name == "SWAP":
                _ROW_COUNTS[source], _ROW_COUNTS[target] = _ROW_COUNTS[target], _ROW_COUNTS[source]
            else:
                _ROW_COUNTS[target] = _ROW_COUNTS[source]
        del _ROW_COUNTS[batch_update.batch_size :]
