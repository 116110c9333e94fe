"""One entry per supported transformers MoE family: where its routers are and how they route.

A family is recognised by ``config.model_type`` and its routers by class name (multimodal
wrappers share the text model's router classes). Routing constants are read from each router
instance, which carries them in every family (``top_k``, ``norm_topk_prob``, ``n_group``, ...), so
per-layer differences (HunYuan) are respected. See docs/MOE_FAMILIES.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from lm_eval_moe.moe.routing import RoutingRule
from lm_eval_moe.moe.settings import text_config


def _linear(router: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, router.weight)


def _linear_fp32(router: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden.float(), router.weight.float())


def _linear_with_bias(router: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, router.weight, router.bias)


def _linear_then_fp32(router: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return F.linear(hidden, router.weight).float()


def _hunyuan_logits(router: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    if router.wg.weight.dtype == torch.float32:
        hidden = hidden.float()
    return router.wg(hidden)


def _no_correction(router: nn.Module, args: tuple[Any, ...]) -> torch.Tensor | None:
    return None


def _buffer_correction(router: nn.Module, args: tuple[Any, ...]) -> torch.Tensor | None:
    return router.e_score_correction_bias


def _ernie_correction(router: nn.Module, args: tuple[Any, ...]) -> torch.Tensor | None:
    return router.moe_statics.e_score_correction_bias.squeeze()


def _argument_correction(router: nn.Module, args: tuple[Any, ...]) -> torch.Tensor | None:
    """LFM2 passes its expert bias as the router's second argument (None when unused)."""
    return args[0] if args and router.use_expert_bias else None


def _softmax(renorm_attr: str | None, weights_dtype: str = "logits") -> Callable[[nn.Module], RoutingRule]:
    def rule(router: nn.Module) -> RoutingRule:
        renormalize = True if renorm_attr is None else bool(getattr(router, renorm_attr))
        return RoutingRule("softmax", renormalize=renormalize, weights_dtype=weights_dtype)  # type: ignore[arg-type]

    return rule


def _softmax_no_renorm_input_dtype(router: nn.Module) -> RoutingRule:
    return RoutingRule("softmax", renormalize=False, weights_dtype="input")


def _deepseek_v2_rule(router: nn.Module) -> RoutingRule:
    grouped = router.topk_method == "group_limited_greedy"
    return RoutingRule(
        "softmax",
        renormalize=False,  # DeepSeek-V2 ignores norm_topk_prob in transformers 5.x
        sorted_topk=False,
        grouping="group_max" if grouped else "none",
        num_groups=router.num_group or 1,
        topk_group=router.topk_group or 1,
        group_fill=0.0,
        scaling=router.routed_scaling_factor,
        weights_dtype="fp32",
    )


def _deepseek_v3_rule(router: nn.Module) -> RoutingRule:
    return RoutingRule(
        "sigmoid",
        renormalize=bool(router.norm_topk_prob),
        sorted_topk=False,
        grouping="group_top2_sum",
        num_groups=router.num_group,
        topk_group=router.topk_group,
        uses_correction_bias=True,
        renorm_eps=1e-20,
        scaling=router.routed_scaling_factor,
        weights_dtype="fp32",
    )


def _lfm2_rule(router: nn.Module) -> RoutingRule:
    return RoutingRule(
        "sigmoid",
        renormalize=bool(router.norm_topk_prob),
        uses_correction_bias=bool(router.use_expert_bias),
        renorm_eps=1e-6,
        scaling=router.routed_scaling_factor,
    )


def _ernie_rule(router: nn.Module) -> RoutingRule:
    return RoutingRule(
        "softmax", renormalize=True, uses_correction_bias=True, renorm_min=router.norm_min, weights_dtype="input"
    )


def _topk_softmax(weights_dtype: str) -> Callable[[nn.Module], RoutingRule]:
    def rule(router: nn.Module) -> RoutingRule:
        return RoutingRule("softmax_over_topk", renormalize=True, weights_dtype=weights_dtype)  # type: ignore[arg-type]

    return rule


def _config_shared_experts(config: Any) -> int:
    return int(getattr(config, "n_shared_experts", 0) or 0)


def _one_shared_expert(config: Any) -> int:
    return 1 if getattr(config, "shared_expert_intermediate_size", 0) else 0


def _granite_shared(config: Any) -> int:
    return 1 if getattr(config, "shared_intermediate_size", 0) else 0


def _no_shared(config: Any) -> int:
    return 0


@dataclass(frozen=True)
class FamilySpec:
    """Where a family keeps its routers and how to reproduce their routing."""

    name: str
    model_types: tuple[str, ...]
    router_classes: tuple[str, ...]
    rule: Callable[[nn.Module], RoutingRule]
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _linear
    correction_bias: Callable[[nn.Module, tuple[Any, ...]], torch.Tensor | None] = _no_correction
    shared_experts: Callable[[Any], int] = _no_shared
    # GPT-OSS's eager experts one-hot the ids over num_experts classes and reject the skip id
    eager_skips_masked_id: bool = True


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("OLMoE", ("olmoe",), ("OlmoeTopKRouter",), _softmax("norm_topk_prob")),
    FamilySpec("FlexOlmo", ("flex_olmo",), ("FlexOlmoTopKRouter",), _softmax("norm_topk_prob")),
    FamilySpec(
        "Qwen2-MoE (Qwen1.5-MoE)", ("qwen2_moe",), ("Qwen2MoeTopKRouter",), _softmax("norm_topk_prob"),
        shared_experts=_one_shared_expert,
    ),
    FamilySpec("Qwen3-MoE", ("qwen3_moe",), ("Qwen3MoeTopKRouter",), _softmax("norm_topk_prob")),
    FamilySpec(
        "Qwen3-Next", ("qwen3_next",), ("Qwen3NextTopKRouter",), _softmax("norm_topk_prob"),
        shared_experts=_one_shared_expert,
    ),
    FamilySpec("Mixtral", ("mixtral",), ("MixtralTopKRouter",), _softmax(None, "fp32")),
    FamilySpec("MiniMax", ("minimax",), ("MiniMaxTopKRouter",), _softmax(None, "fp32")),
    FamilySpec("Jamba", ("jamba",), ("JambaTopKRouter",), _softmax_no_renorm_input_dtype),
    FamilySpec("HunYuan-V1-MoE", ("hunyuan_v1_moe",), ("HunYuanMoEV1Gate",), _softmax(None), logits=_hunyuan_logits),
    FamilySpec(
        "ERNIE-4.5-MoE", ("ernie4_5_moe",), ("Ernie4_5_MoeTopKRouter",), _ernie_rule, logits=_linear_fp32,
        correction_bias=_ernie_correction,
    ),
    FamilySpec(
        "DeepSeek-V2", ("deepseek_v2",), ("DeepseekV2TopkRouter",), _deepseek_v2_rule, logits=_linear_fp32,
        shared_experts=_config_shared_experts,
    ),
    FamilySpec(
        "DeepSeek-V3", ("deepseek_v3",), ("DeepseekV3TopkRouter",), _deepseek_v3_rule, logits=_linear_fp32,
        correction_bias=_buffer_correction, shared_experts=_config_shared_experts,
    ),
    FamilySpec(
        "GLM-4-MoE", ("glm4_moe",), ("Glm4MoeTopkRouter",), _deepseek_v3_rule, logits=_linear_fp32,
        correction_bias=_buffer_correction, shared_experts=_config_shared_experts,
    ),
    FamilySpec(
        "GLM-4-MoE-Lite", ("glm4_moe_lite",), ("Glm4MoeLiteTopkRouter",), _deepseek_v3_rule, logits=_linear_fp32,
        correction_bias=_buffer_correction, shared_experts=_config_shared_experts,
    ),
    FamilySpec(
        "dots1", ("dots1",), ("Dots1TopkRouter",), _deepseek_v3_rule, logits=_linear_fp32,
        correction_bias=_buffer_correction, shared_experts=_config_shared_experts,
    ),
    FamilySpec(
        "LFM2-MoE", ("lfm2_moe",), ("Lfm2MoeTopKRouter",), _lfm2_rule, correction_bias=_argument_correction,
    ),
    FamilySpec(
        "GPT-OSS", ("gpt_oss",), ("GptOssTopKRouter",), _topk_softmax("logits"), logits=_linear_with_bias,
        eager_skips_masked_id=False,
    ),
    FamilySpec(
        "Granite-MoE", ("granitemoe",), ("GraniteMoeTopKRouter",), _topk_softmax("input"), logits=_linear_then_fp32,
    ),
    FamilySpec(
        "Granite-MoE-Shared", ("granitemoeshared",), ("GraniteMoeSharedTopKRouter",), _topk_softmax("input"),
        logits=_linear_then_fp32, shared_experts=_granite_shared,
    ),
)

#: Known MoE families that the adapter interface cannot serve, and why (shown in errors and README).
UNSUPPORTED: dict[str, str] = {
    "phimoe": "its sparsemixer router is hard-wired to top-2, so the expert count cannot change",
    "dbrx": "its router returns only logits and the block selects experts itself (no (logits, weights, index) router)",
    "jetmoe": "its router also routes attention experts and returns batch-grouped indices, not per-token top-k",
    "llama4": "every expert is computed for every token regardless of k (sigmoid gate over all experts)",
}

_BY_MODEL_TYPE: dict[str, FamilySpec] = {t: f for f in FAMILIES for t in f.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(model_type: str) -> FamilySpec | None:
    return _BY_MODEL_TYPE.get(model_type)


class UnsupportedModelError(ValueError):
    """The model is dense, or its MoE family cannot be served by the adapter interface."""


def config_family(config: Any, model_type: str | None = None) -> FamilySpec:
    """The supported family a transformers config belongs to (its own or its text model's type), or an error
    naming the supported ones; needs no weights."""
    model_type = model_type or str(getattr(config, "model_type", type(config).__name__))
    family = family_for(model_type)
    if family is None:
        text_type = getattr(text_config(config), "model_type", None)
        family = family_for(text_type) if text_type else None
    if family is not None:
        return family
    supported = ", ".join(supported_model_types())
    if model_type in UNSUPPORTED:
        raise UnsupportedModelError(
            f"model type {model_type!r} is a MoE family lm_eval_moe cannot drive: {UNSUPPORTED[model_type]}. "
            f"Supported model types: {supported}"
        )
    raise UnsupportedModelError(
        f"model type {model_type!r} is not a supported Mixture-of-Experts family (a dense model has no router "
        f"to change). Supported model types: {supported}"
    )


def check_checkpoint_config(pretrained: Any, hf_args: dict[str, Any], settings: Any) -> None:
    """Before any weight loads: the checkpoint's config names a supported MoE family and fits every k the
    ``settings`` give (``RoutingSettings.check_against``). ``hf_args``: the HF loading args (revision,
    subfolder, trust_remote_code)."""
    if not isinstance(pretrained, str):
        return
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(pretrained, revision=hf_args.get("revision", "main"),
                                        trust_remote_code=bool(hf_args.get("trust_remote_code", False)),
                                        subfolder=hf_args.get("subfolder") or "")
    config_family(config)
    settings.check_against(config)
