"""Carrying cached prefixes vs re-reading them, by prompt length: a whole DES search (N paths, M kept, T steps)
on a random MoE, both ways in one run, at each prompt length.

Steps have a fixed length (a delimiter the random policy never emits, ``--step-tokens`` cap), so both ways do
the same generation work; the verifier is the policy's likelihood (no PRM forward to dilute the comparison).

    python benchmarks/bench_prefixes.py [--lengths 64,512,2048 --steps 8 --budget 8 --keep 2]
    python benchmarks/bench_prefixes.py --policy olmoe-1b-7b --device cuda --dtype bfloat16   # a GPU, real size
"""

from __future__ import annotations

import argparse

import torch

from lm_eval_moe.generation import SamplingConfig, StepEngine
from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
from lm_eval_moe.search.driver import run_search
from lm_eval_moe.verifiers import LikelihoodVerifier

from _common import NEVER_DELIMITER, add_policy_arguments, benchmark_policy, describe, interleaved_medians

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="64,512,2048", help="prompt lengths in tokens")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--keep", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--step-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    add_policy_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, moe, tok, cost_model = benchmark_policy(args.policy, args.device, args.dtype)
    layers = moe.num_layers
    counts = tuple((k,) * layers for k in (2, 4, 6, 8))
    config = SearchConfig(budget=args.budget, keep=args.keep, max_steps=args.steps, expert_counts=counts,
                          max_step_tokens=args.step_tokens, max_tokens=args.steps * args.step_tokens)
    generator = torch.Generator().manual_seed(0)
    print(f"model: {describe(model)}; DES N={args.budget}, M={args.keep}, K={{2,4,6,8}}, T={args.steps} steps of "
          f"{args.step_tokens} tokens, {args.threads} thread(s); medians of {args.repeats}, both ways round robin")
    print("| prompt tokens | cached prefixes | re-read prefixes | re-read tokens | re-read / cached |")
    print("|---|---|---|---|---|")
    def search(problem: Problem, mode: str, reread_tokens: list[int]):
        def run():
            engine = StepEngine(model, tok, moe, SamplingConfig(temperature=0.8), delimiter=NEVER_DELIMITER, cache_mode=mode)
            outcomes = run_search(STRATEGIES["des"].algorithm, [problem], config, engine, LikelihoodVerifier(),
                                  BatchContext.for_problems([0], cost_model))
            reread_tokens.append(outcomes[0].cost.reprocessed_tokens)
        return run

    for length in (int(part) for part in args.lengths.split(",")):
        prompt = tuple(torch.randint(3, 200, (length,), generator=generator).tolist())
        problem = Problem(0, prompt, "question", seed=1, base_expert_count=(8,) * layers)
        reread: list[int] = []
        seconds = interleaved_medians({"reuse": search(problem, "reuse", []), "reread": search(problem, "reread", reread)},
                                      args.repeats)
        print(f"| {length} | {seconds['reuse']:.2f} s | {seconds['reread']:.2f} s | {reread[-1]} | "
              f"{seconds['reread'] / seconds['reuse']:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
