"""Batched step-wise generation with per-sequence expert counts and KV-cache reuse."""

from lm_eval_moe.generation.engine import StepEngine
from lm_eval_moe.generation.special_tokens import eos_token_ids, pad_token_id
from lm_eval_moe.generation.nodes import Expansion, Node, root_node
from lm_eval_moe.generation.sampling import SamplingConfig

__all__ = ["Expansion", "Node", "SamplingConfig", "StepEngine", "eos_token_ids", "pad_token_id", "root_node"]
