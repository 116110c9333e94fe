"""What the benchmarks share: the random-weight policies of the search, rerouting and mixed-k benchmarks
(``small``: hidden 256, 32 experts, top-8, 4 layers, for CPU; ``olmoe-1b-7b``: OLMoE-1B-7B's shape, 6.9B
parameters, and ``qwen3-30b-a3b``: Qwen3-30B-A3B's shape, 30.5B parameters, for a GPU), timing that waits
for the GPU, and the benchmark data folder."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lm_eval_moe.cost import CostModel
from lm_eval_moe.moe import attach
from lm_eval_moe.testing import byte_tokenizer, tiny_config, tiny_moe


#: OLMoE-1B-7B-0924's shape (allenai/OLMoE-1B-7B-0924 config.json): 16 layers, 64 experts, top-8
OLMOE_1B_7B = {"hidden_size": 2048, "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8,
               "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 50304,
               "max_position_embeddings": 4096}
#: Qwen3-30B-A3B's shape (Qwen/Qwen3-30B-A3B config.json): 48 layers, 128 experts, top-8, every layer sparse
QWEN3_30B_A3B = {"hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
                 "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_attention_heads": 32,
                 "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 40960,
                 "norm_topk_prob": True}
#: the real-size policies: family and shape
REAL_SIZE = {"olmoe-1b-7b": ("olmoe", OLMOE_1B_7B), "qwen3-30b-a3b": ("qwen3_moe", QWEN3_30B_A3B)}
POLICIES = ("small", *REAL_SIZE)


#: the small policy's shape (CPU); bench_mixed_k.py overrides it from its --hidden/--experts/--layers
SMALL = {"hidden_size": 256, "intermediate_size": 256, "num_experts": 32, "num_experts_per_tok": 8,
         "num_hidden_layers": 4}


def benchmark_policy(policy: str = "small", device: str = "cpu", dtype: str = "float32", **small: Any):
    """(model, Dynamic MoE handle, byte tokenizer, cost model) of a random-weight policy on ``device``;
    ``small``: overrides of the small policy's shape (and ``experts_implementation``)."""
    if small and policy != "small":
        raise SystemExit(f"--policy {policy}: the shape options apply to --policy small only")
    if policy == "small":
        model = tiny_moe("olmoe", seed=0, **{**SMALL, **small}).to(device=device, dtype=getattr(torch, dtype))
    elif policy in REAL_SIZE:
        from transformers import AutoModelForCausalLM

        family, shape = REAL_SIZE[policy]
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it runs: 6.9B / 30.5B parameters
            model = AutoModelForCausalLM.from_config(tiny_config(family, **shape), dtype=getattr(torch, dtype)).eval()
            with torch.no_grad():  # routers initialised to zero would route every token alike
                for param in model.parameters():
                    if param.numel() and not bool(param.any()):
                        param.normal_(0.0, 0.02)
    else:
        raise SystemExit(f"--policy {policy!r}: expected one of {', '.join(POLICIES)}")
    moe = attach(model)
    return model, moe, byte_tokenizer(), CostModel.from_model(model, moe)


def describe(model) -> str:
    config = model.config
    return (f"{config.model_type} shape, hidden {config.hidden_size}, {config.num_experts} experts (top-{config.num_experts_per_tok}), "
            f"{config.num_hidden_layers} layers, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, "
            f"{next(model.parameters()).dtype} on {device_name(next(model.parameters()).device)}")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def synchronize() -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


#: a step delimiter the random policies never emit: steps end at their token cap, so every variant does the same work
NEVER_DELIMITER = "\x00\x01never"


def plain_sampling(model, prompts, samples: int, length: int, pad_id: int, device: str) -> None:
    """transformers' ``generate`` of ``samples`` continuations of exactly ``length`` tokens per prompt (temperature
    0.8): the plain-sampling rate a search is compared with."""
    for prompt in prompts:
        ids = torch.tensor([prompt] * samples, device=device)
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.8, top_k=0,
                           max_new_tokens=length, min_new_tokens=length, pad_token_id=pad_id)


def interleaved_medians(variants: dict[Any, Callable[[], object]], repeats: int, warm_up: bool = False
                        ) -> dict[Any, float]:
    """Median seconds of each variant, run round robin so that every variant sees the same machine load (this
    machine is shared); ``warm_up``: one untimed round first."""
    samples: dict[Any, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats + warm_up):
        for name, run in variants.items():
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            if round_ >= warm_up:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def add_policy_arguments(parser) -> None:
    parser.add_argument("--policy", default="small", choices=POLICIES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def benchmark_data_dir() -> Path:
    """``LM_EVAL_MOE_DATA_DIR`` if set, else the public benchmark files shipped with the tests."""
    return Path(os.environ.get("LM_EVAL_MOE_DATA_DIR") or Path(__file__).resolve().parents[1] / "tests" / "data")
