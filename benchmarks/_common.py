"""The random-weight policy the search and rerouting benchmarks share (hidden 256, 32 experts, top-8, 4 layers)."""

from __future__ import annotations

from lm_eval_moe.cost import CostModel
from lm_eval_moe.moe import attach
from lm_eval_moe.testing import byte_tokenizer, tiny_moe


def benchmark_policy():
    """(model, Dynamic MoE handle, byte tokenizer, cost model)."""
    model = tiny_moe("olmoe", seed=0, hidden_size=256, intermediate_size=256, num_experts=32, num_experts_per_tok=8,
                     num_hidden_layers=4)
    moe = attach(model)
    return model, moe, byte_tokenizer(), CostModel.from_model(model, moe)
