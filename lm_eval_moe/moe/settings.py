"""Dynamic MoE settings every model class takes, and the checks a model's config allows before its weights load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import ExpertCount, ModelArgError, arg, parse_expert_count, parse_renormalize

#: config attributes holding the number of routed experts, across the supported families
ROUTED_EXPERT_ATTRIBUTES = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class RoutingSettings:
    expert_count: ExpertCount | None = arg(
        None, parse_expert_count, "routed experts per token (k): an int, per layer 4:4:6:6, a JSON list, or default")
    renormalize: bool | None = arg(
        None, parse_renormalize, "renormalise the top-k weights after changing k: model (the family's rule), true, false")


def routed_experts(config: Any) -> int | None:
    """Routed experts per MoE layer, read from a transformers config (None if the config does not say)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ROUTED_EXPERT_ATTRIBUTES:
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_expert_counts(config: Any, counts: list[ExpertCount], name: str) -> None:
    """Every k of ``counts`` is within 1..routed experts of the model the config describes (the per-layer
    length is checked once the MoE layers are found)."""
    maximum = routed_experts(config)
    if maximum is None:
        return
    for count in counts:
        for k in (count,) if isinstance(count, int) else count:
            if not 1 <= k <= maximum:
                raise ModelArgError(f"model arg {name}: expert count {k} is out of range for this model: allowed "
                                    f"1..{maximum} routed experts (shared experts are always on)")
