"""What the benchmarks share: the random-weight policy of the search and rerouting benchmarks (hidden 256,
32 experts, top-8, 4 layers) and the benchmark data folder."""

from __future__ import annotations

import os
from pathlib import Path

from lm_eval_moe.cost import CostModel
from lm_eval_moe.moe import attach
from lm_eval_moe.testing import byte_tokenizer, tiny_moe


def benchmark_policy():
    """(model, Dynamic MoE handle, byte tokenizer, cost model)."""
    model = tiny_moe("olmoe", seed=0, hidden_size=256, intermediate_size=256, num_experts=32, num_experts_per_tok=8,
                     num_hidden_layers=4)
    moe = attach(model)
    return model, moe, byte_tokenizer(), CostModel.from_model(model, moe)


def benchmark_data_dir() -> Path:
    """``LM_EVAL_MOE_DATA_DIR`` if set, else the public benchmark files shipped with the tests."""
    return Path(os.environ.get("LM_EVAL_MOE_DATA_DIR") or Path(__file__).resolve().parents[1] / "tests" / "data")
