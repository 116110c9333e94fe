"""Search cost on a tiny random MoE (CPU), three comparisons measured in one run:

(a) one DES expansion round over mixed-k beams in ONE batch vs the same beams grouped by k (one batch
    per k, each continuing its own cached prefixes);
(b) a whole DES search continuing from cached prefixes vs re-reading every prefix each step;
(c) DES vs Best-of-N at the same budget N and a comparable number of generated tokens;
(d) each strategy's generated tokens per second next to plain sampling's (transformers' ``generate`` of the same
    N samples of the same length from the same prompt: the ceiling a search can reach).

Steps have a fixed length (a delimiter the random policy never emits, ``max_step_tokens`` cap) and no token
ends a path (the engine is given no EOS id), so that every variant generates the same tokens; a tiny random
PRM scores the candidates.

    python benchmarks/bench_search.py [--budget 16 --steps 4 --step-tokens 24 --problems 2]
    python benchmarks/bench_search.py --policy olmoe-1b-7b --device cuda --dtype bfloat16   # a GPU, real size
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import torch

from lm_eval_moe.generation import Expansion, SamplingConfig, StepEngine, root_node
from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
from lm_eval_moe.search.driver import run_search
from lm_eval_moe.testing import save_tiny_prm
from lm_eval_moe.verifiers import load_verifier

from _common import (
    NEVER_DELIMITER, add_policy_arguments, benchmark_policy, describe, interleaved_medians, plain_sampling, synchronize,
)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=24)
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    add_policy_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, moe, tok, cost_model = benchmark_policy(args.policy, args.device, args.dtype)
    layers = moe.num_layers
    counts = [(k,) * layers for k in (2, 4, 6, 8)]

    def engine(mode: str = "reuse") -> StepEngine:
        return StepEngine(model, tok, moe, SamplingConfig(temperature=0.8), delimiter=NEVER_DELIMITER, cache_mode=mode,
                          eos_ids=set())

    def context(count: int = 1) -> BatchContext:
        return BatchContext.for_problems(range(count), cost_model)

    prompt = tuple(tok.encode("Solve step by step: a train leaves at 3pm at 60 km/h; when does it arrive 150 km away?"))

    # (a) one expansion round: mixed k in one batch vs one batch per k group
    per_k = args.budget // len(counts)

    def first_round(eng: StepEngine, group: list[tuple[int, ...]]):
        root = root_node(0, prompt, group[0])
        return eng.expand([Expansion(root, s, args.step_tokens, expert_count=k) for s, k in enumerate(
            [k for k in group for _ in range(per_k)])], context())

    def timed_second_round(groups: list[list[tuple[int, ...]]]) -> float:
        engines = [engine() for _ in groups]
        frontiers = [first_round(e, g) for e, g in zip(engines, groups)]
        synchronize()
        start = time.perf_counter()
        for eng, frontier in zip(engines, frontiers):
            eng.expand([Expansion(node, 1000 + i, args.step_tokens) for i, node in enumerate(frontier)], context())
        synchronize()
        return time.perf_counter() - start

    mixed = statistics.median(timed_second_round([counts]) for _ in range(args.repeats))
    grouped = statistics.median(timed_second_round([[k] for k in counts]) for _ in range(args.repeats))

    # (b) and (c): whole searches
    prm_dir = tempfile.mkdtemp(prefix="bench_search_prm_")
    verifier = load_verifier(str(save_tiny_prm(prm_dir, "qwen_prm")), device=args.device)
    shutil.rmtree(prm_dir)  # loaded: the files are no longer needed
    problems = [Problem(i, prompt + tuple(tok.encode(f" #{i}")), f"problem {i}", seed=i, base_expert_count=(8,) * layers)
                for i in range(args.problems)]
    config = SearchConfig(budget=args.budget, keep=max(1, args.budget // 4), max_steps=args.steps,
                          expert_counts=tuple(counts), max_step_tokens=args.step_tokens,
                          max_tokens=args.steps * args.step_tokens)
    outcome = {}

    def search(name: str, mode: str, cfg: SearchConfig):
        def go():
            outcome[(name, mode)] = run_search(STRATEGIES[name].algorithm, problems, cfg, engine(mode), verifier,
                                               context(len(problems)))
        return go

    seconds = interleaved_medians({
        "des": search("des", "reuse", config), "des_reread": search("des", "reread", config),
        "best_of_n": search("best_of_n", "reuse", config), "beam": search("beam", "reuse", config),
        "dvts": search("dvts", "reuse", config),
        "plain": lambda: plain_sampling(model, [p.prompt_ids for p in problems], args.budget,
                                        args.steps * args.step_tokens, tok.pad_token_id, args.device),
    }, args.repeats)
    reuse, reread, bon, plain = seconds["des"], seconds["des_reread"], seconds["best_of_n"], seconds["plain"]

    def tokens(key):
        return sum(o.cost.generated_tokens for o in outcome[key]), sum(o.cost.reprocessed_tokens for o in outcome[key])

    strategies = {name: (seconds[name], tokens((name, "reuse"))[0]) for name in ("beam", "dvts")}
    plain_tokens = args.problems * args.budget * args.steps * args.step_tokens
    des_gen, _ = tokens(("des", "reuse"))
    _, reread_tokens = tokens(("des", "reread"))
    bon_gen, _ = tokens(("best_of_n", "reuse"))
    print(f"model: {describe(model)}; N={args.budget}, K={{2,4,6,8}}, T={args.steps}, "
          f"{args.step_tokens} tokens/step, {args.problems} problems, {args.threads} thread(s); whole searches: "
          f"medians of {args.repeats}, run round robin")
    print(f"(a) DES round, {args.budget} beams: mixed-k batch {mixed:.2f} s, per-k groups {grouped:.2f} s "
          f"-> groups / mixed = {grouped / mixed:.2f}x")
    print(f"(b) DES search: prefix reuse {reuse:.2f} s, re-reading {reread:.2f} s ({reread_tokens} tokens re-read) "
          f"-> re-read / reuse = {reread / reuse:.2f}x")
    print(f"(c) DES {reuse:.2f} s ({des_gen} generated tokens) vs Best-of-N {bon:.2f} s ({bon_gen} generated tokens)"
          f" -> DES / BoN = {reuse / bon:.2f}x time, {des_gen / bon_gen:.2f}x tokens, "
          f"{(reuse / des_gen) / (bon / bon_gen):.2f}x time per token")
    strategies = {"des": (reuse, des_gen), "best_of_n": (bon, bon_gen), **strategies}
    print(f"(d) plain sampling (transformers' generate): {plain_tokens / plain:.0f} generated tokens/s ({plain:.2f} s)")
    for name, (elapsed, generated) in strategies.items():
        print(f"    {name}: {generated / elapsed:.0f} generated tokens/s ({elapsed:.2f} s, {generated} tokens) -> "
              f"{generated / elapsed / (plain_tokens / plain):.2f}x plain sampling's rate")


if __name__ == "__main__":
    main()
