"""Wall time of rerouted generation over plain generation, one run (CPU, tiny random MoE).

512 new tokens, T = 5 Adam steps every m = 128 tokens (the paper's setting; its ratio is 1.88x on GPU for
HumanEval). Plain generation is the same decode loop with T = 0. The rerouted run is broken down into
Phase 1 (forward + backward over the context), the cache recomputation after each update, and decoding.

    python benchmarks/bench_reroute.py [--new-tokens 512 --interval 128 --steps 5 --batch 1]
    python benchmarks/bench_reroute.py --policy olmoe-1b-7b --device cuda --dtype bfloat16   # a GPU, real size
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from lm_eval_moe.generation import SamplingConfig
from lm_eval_moe.reroute import RerouteSettings, Rerouter

from _common import add_policy_arguments, benchmark_policy, describe, synchronize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--interval", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    add_policy_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, moe, tok, cost_model = benchmark_policy(args.policy, args.device, args.dtype)
    prompt = tok.encode("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")
    prompts = [prompt] * args.batch
    eos = {-1}  # never stop early: every run generates exactly --new-tokens

    def run(steps: int):
        rerouter = Rerouter(model, tok, moe, cost_model, RerouteSettings(steps=steps, interval=args.interval))
        spent: dict[str, float] = defaultdict(float)
        for name in ("optimise", "_decode_block"):
            original = getattr(rerouter, name)

            def timed(*a, _original=original, _name=name, **k):
                synchronize()
                start = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    synchronize()
                    spent[_name] += time.perf_counter() - start

            setattr(rerouter, name, timed)
        synchronize()
        start = time.perf_counter()
        outcomes = rerouter.generate(prompts, args.new_tokens, SamplingConfig(temperature=0.0), list(range(args.batch)),
                                     eos_ids=eos)
        synchronize()
        total = time.perf_counter() - start
        spent["prefill"] = total - spent["optimise"] - spent["_decode_block"]
        return total, spent, outcomes

    run(0)  # warm-up
    plain, _, plain_out = run(0)
    rerouted, spent, rerouted_out = run(args.steps)
    tokens = sum(len(o.tokens) for o in rerouted_out)
    print(f"model: {describe(model)}; prompt {len(prompt)} tokens, {args.new_tokens} new tokens, "
          f"T={args.steps}, m={args.interval}, batch {args.batch}, {args.threads} thread(s)")
    print(f"plain generation: {plain:.2f} s; rerouted: {rerouted:.2f} s -> ratio {rerouted / plain:.2f}x "
          f"({tokens} tokens, {len(rerouted_out[0].phases)} Phase-1 rounds)")
    print("rerouted time: " + ", ".join(
        f"{label} {spent[key]:.2f} s ({100 * spent[key] / rerouted:.0f}%)"
        for key, label in (("optimise", "Phase 1 fwd+bwd"), ("prefill", "cache recomputation"), ("_decode_block", "decoding"))))
    cost = rerouted_out[0].cost
    print(f"FLOPs per sample: generation {cost.flops:.3e}, extra (optimisation + re-prefill) {cost.extra_flops:.3e} "
          f"-> {(cost.flops + cost.extra_flops) / plain_out[0].cost.flops:.2f}x the plain FLOPs")


if __name__ == "__main__":
    main()
