"""Tiny random-weight MoE models and a byte-level tokenizer, built offline.

Used by the tests, the benchmarks and the demo-model training script: the Hugging Face hub is not
reachable there, so every model is built from a transformers config of a supported family
(2 layers, hidden 64, 8 routed experts, top-2 unless overridden).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lm_eval_moe.demo.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, byte_tokenizer  # noqa: F401 (re-exported)

#: responses of about n characters in the shapes reasoning models emit when they degenerate at a large
#: max_gen_toks, and ordinary steps (the checkers' linearity test and benchmark)
DEGENERATE_RESPONSES = {
    "nested closed boxes": lambda n: "\\boxed{" * (n // 14) + "1" + "}" * (n // 14),
    "nested unclosed boxes": lambda n: "\\boxed{" * (n // 7) + " 42",
    "'answer: 1 ' runs": lambda n: "answer: 1 " * (n // 10),
    "'the answer is is '": lambda n: "the answer is is " * (n // 17),
    "ordinary steps": lambda n: "We add 12 + 30 = 42, then check it.\n\n" * (n // 37) + "The answer is \\boxed{42}.",
}

#: Per-family config keywords for a tiny model (on top of :data:`COMMON`).
TINY_FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "olmoe": dict(num_experts=8, num_experts_per_tok=2),
    "flex_olmo": dict(num_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64
    ),
    "qwen3_moe": dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True, head_dim=16),
    "qwen3_next": dict(
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32,
        head_dim=16, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
        linear_value_head_dim=16, layer_types=["linear_attention", "full_attention"],
    ),
    "mixtral": dict(num_local_experts=8, num_experts_per_tok=2),
    "minimax": dict(num_local_experts=8, num_experts_per_tok=2, layer_types=["full_attention", "full_attention"]),
    "jamba": dict(
        num_experts=8, num_experts_per_tok=2, expert_layer_period=1, expert_layer_offset=0, attn_layer_period=1,
        attn_layer_offset=0, use_mamba_kernels=False,
    ),
    "hunyuan_v1_moe": dict(num_experts=8, moe_topk=2, head_dim=16),
    "ernie4_5_moe": dict(
        moe_num_experts=8, moe_k=2, moe_intermediate_size=32, moe_layer_start_index=0, moe_num_shared_experts=0
    ),
    "deepseek_v2": dict(  # MLA: as many key/value heads as attention heads, as in the real checkpoints
        num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=16, topk_method="greedy",
    ),
    "deepseek_v3": dict(  # MLA: as many key/value heads as attention heads, as in the real checkpoints
        num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=16, n_group=2, topk_group=1,
    ),
    "glm4_moe": dict(
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=0, head_dim=16, n_group=1, topk_group=1,
    ),
    "glm4_moe_lite": dict(  # MLA: as many key/value heads as attention heads, as in the real checkpoints
        num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8,
        v_head_dim=16, n_group=1, topk_group=1,
    ),
    "dots1": dict(
        n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
        first_k_dense_replace=0, head_dim=16, n_group=1, topk_group=1,
    ),
    "lfm2_moe": dict(
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, num_dense_layers=0,
        layer_types=["conv", "full_attention"],
    ),
    "gpt_oss": dict(
        num_local_experts=8, num_experts_per_tok=2, head_dim=16, layer_types=["sliding_attention", "full_attention"],
        sliding_window=16,
    ),
    "granitemoe": dict(num_local_experts=8, num_experts_per_tok=2),
    "granitemoeshared": dict(num_local_experts=8, num_experts_per_tok=2, shared_intermediate_size=32),
}

COMMON: dict[str, Any] = dict(
    hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=1024,
)

QWEN_PRM_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


#: the verifier formats :func:`save_tiny_prm` builds (every one of lm_eval_moe/verifiers/formats.py)
TINY_VERIFIER_KINDS = ("qwen_prm", "rlhflow_prm", "math_shepherd", "value_head", "token_classification", "outcome",
                       "judge")


def save_tiny_prm(directory: str | Path, kind: str = "qwen_prm", seed: int = 0) -> Path:
    """A tiny random-weight verifier with the special tokens, template and layout of its format: ``qwen_prm``
    (2-label token classifier, ``<extra_0>``, ChatML), ``rlhflow_prm`` (causal LM, Llama-3 style template),
    ``math_shepherd`` (causal LM with the ``ки`` tag as one token), ``value_head`` (a base model and a
    ``v_head.summary`` layer in the same safetensors file), ``token_classification`` (2 labels),
    ``outcome`` (a 1-label sequence classifier) or ``judge`` (a causal LM with a chat template)."""
    from safetensors.torch import load_file, save_file
    from transformers import (
        LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, Qwen2Config, Qwen2ForTokenClassification,
        Qwen2Model,
    )

    directory = Path(directory)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                 eos_token_id=EOS_ID)
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    if kind == "qwen_prm":
        tokenizer = byte_tokenizer(("<extra_0>", "<|im_start|>", "<|im_end|>"))
        tokenizer.chat_template = QWEN_PRM_TEMPLATE
        model = Qwen2ForTokenClassification(Qwen2Config(vocab_size=len(tokenizer), num_labels=2, **shape))
    elif kind == "rlhflow_prm":
        tokenizer = byte_tokenizer(("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
        tokenizer.chat_template = LLAMA3_TEMPLATE
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **shape))
    elif kind == "math_shepherd":
        tokenizer = byte_tokenizer(("ки",))
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **shape))
    elif kind == "value_head":
        model = Qwen2Model(Qwen2Config(vocab_size=len(tokenizer), **shape))
    elif kind == "token_classification":
        model = Qwen2ForTokenClassification(Qwen2Config(vocab_size=len(tokenizer), num_labels=2, **shape))
    elif kind == "outcome":
        model = LlamaForSequenceClassification(LlamaConfig(vocab_size=len(tokenizer), num_labels=1, **shape))
    elif kind == "judge":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **shape))
    else:
        raise ValueError(f"unknown verifier kind {kind!r}: expected one of {', '.join(TINY_VERIFIER_KINDS)}")
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if kind == "value_head":  # trl's / Skywork-o1-Open-PRM's head, stored beside the base weights
        weights = load_file(directory / "model.safetensors")
        head = torch.nn.Linear(shape["hidden_size"], 1)
        weights.update({"v_head.summary.weight": head.weight.detach().clone(),
                        "v_head.summary.bias": head.bias.detach().clone()})
        save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def tiny_config(model_type: str = "olmoe", vocab_size: int | None = None, **overrides: Any):
    from transformers import AutoConfig

    if model_type not in TINY_FAMILY_CONFIGS:
        raise ValueError(f"no tiny config for {model_type!r}; known: {', '.join(sorted(TINY_FAMILY_CONFIGS))}")
    kwargs = dict(COMMON)
    kwargs.update(TINY_FAMILY_CONFIGS[model_type])
    kwargs.update(
        vocab_size=vocab_size or 256 + len(SPECIAL_TOKENS), pad_token_id=PAD_ID, bos_token_id=BOS_ID,
        eos_token_id=EOS_ID, tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_moe(model_type: str = "olmoe", seed: int = 0, experts_implementation: str | None = None, **overrides: Any):
    """A tiny random-weight causal LM of ``model_type`` in eval mode.

    Routers (and score-correction biases) that transformers initialises to zero are re-drawn so that
    routing differs across experts; otherwise every k would pick the same experts by tie-breaking.
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    kwargs = {} if experts_implementation is None else {"experts_implementation": experts_implementation}
    model = AutoModelForCausalLM.from_config(config, **kwargs).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.numel() and param.abs().sum() == 0:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        for name, buffer in model.named_buffers():
            if "correction" in name or "expert_bias" in name:
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
    return model


def save_tiny_moe(directory: str | Path, model_type: str = "olmoe", seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny model and the byte tokenizer to ``directory`` (loadable by ``pretrained=``)."""
    directory = Path(directory)
    model = tiny_moe(model_type, seed=seed, **overrides)
    model.generation_config.pad_token_id = PAD_ID
    model.save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


def reproducible_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A logged lm-eval sample without what is measured rather than computed (each response's ``resources``
    and the per-sample time and memory metrics), so that two runs of the same settings compare equal."""
    from lm_eval_moe.response import RECORDS_KEY, RESOURCE_METRICS

    records = [dict(record) for record in sample[RECORDS_KEY]]
    for record in records:
        record.pop("resources", None)
    metrics = {key: value for key, value in sample.items() if isinstance(value, float) and key not in RESOURCE_METRICS}
    return {"doc_id": sample["doc_id"], "filtered_resps": sample["filtered_resps"], "records": records, **metrics}


def reproducible_metrics(task_results: dict[str, Any]) -> dict[str, Any]:
    """A task's aggregated results (``results[task]``) without the measured time and memory and their
    standard errors, so that two runs of the same settings compare equal."""
    from lm_eval_moe.response import RESOURCE_METRICS

    return {key: value for key, value in task_results.items()
            if key.split(",")[0].removesuffix("_stderr") not in RESOURCE_METRICS}
