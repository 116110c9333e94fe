"""Dynamic MoE settings every model class takes, and the checks a model's config allows before its weights load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import (
    ExpertCount, ModelArgSettings, arg, check_expert_count_range, parse_expert_count, parse_renormalize,
)

#: config attributes holding the number of routed experts, across the supported families
ROUTED_EXPERT_ATTRIBUTES = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class RoutingSettings(ModelArgSettings):
    expert_count: ExpertCount | None = arg(
        None, parse_expert_count, "routed experts per token (k): an int, per layer 4:4:6:6, a JSON list, or default",
        expert_counts="k")
    renormalize: bool | None = arg(
        None, parse_renormalize, "renormalise the top-k weights after changing k: model (the family's rule), true, false",
        load_time=True)

    def check_against(self, config: Any) -> None:
        """Every k these settings give is within the routed experts of the model ``config`` describes (read
        from the config alone, before any weight loads; the per-layer length is checked once the MoE layers
        are found)."""
        maximum = routed_experts(config)
        if maximum is not None:
            for name, counts in self.expert_count_args():
                check_expert_count_range(counts, maximum, name)


def text_config(config: Any) -> Any:
    """The config of the text model (a multimodal wrapper's), or the config itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


#: config attributes holding the model's own k, across the supported families
TOP_K_ATTRIBUTES = ("num_experts_per_tok", "num_experts_per_token", "moe_k", "moe_topk", "top_k")


def default_top_k(config: Any) -> int | None:
    """The model's own k (the smallest, if the config lists one per layer), read from a transformers config."""
    text = text_config(config)
    for name in TOP_K_ATTRIBUTES:
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            return min(value)
    return None


def routed_experts(config: Any) -> int | None:
    """Routed experts per MoE layer, read from a transformers config (None if the config does not say)."""
    text = text_config(config)
    for name in ROUTED_EXPERT_ATTRIBUTES:
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None

