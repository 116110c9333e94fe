"""Dynamic MoE: run-time expert count, router bias and routing records for transformers MoE models."""

from lm_eval_moe.moe.dynamic import DynamicMoE, ExpertCountError, MoELayer, attach
from lm_eval_moe.moe.families import FAMILIES, UNSUPPORTED, UnsupportedModelError, supported_model_types
from lm_eval_moe.moe.records import LayerRouting, RoutingRecorder

__all__ = [
    "FAMILIES",
    "UNSUPPORTED",
    "DynamicMoE",
    "ExpertCountError",
    "LayerRouting",
    "MoELayer",
    "RoutingRecorder",
    "UnsupportedModelError",
    "attach",
    "supported_model_types",
]
