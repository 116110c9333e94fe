"""Forward time of one batch with mixed per-sequence k vs uniform k vs one forward per k group.

DES keeps beams with different k; per-sequence k lets them share a forward pass. This measures what
that costs against (a) the same batch at one uniform k (k_max: what a single engine without per-row
k would pay, and k_mean: the same expert work spread evenly) and (b) running each k group separately.
Both prefill (64-token prompts) and a decode step (1 token over a 64-token KV cache) are measured.
Timings are interleaved across variants (round robin) and the median is reported, so the ratios come
from one run under the same machine load.

    python benchmarks/bench_mixed_k.py [--hidden 256 --experts 32 --layers 4 --repeats 30]
    python benchmarks/bench_mixed_k.py --policy olmoe-1b-7b --device cuda --dtype bfloat16   # a GPU, real size
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from lm_eval_moe.kv_cache import cache_argument, returned_cache

from _common import add_policy_arguments, benchmark_policy, describe, synchronize


def _timed(repeats: int, variants: dict[str, callable]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for name, variant in variants.items():  # warm-up
        variant()
    for _ in range(repeats):
        for name, variant in variants.items():
            synchronize()
            start = time.perf_counter()
            variant()
            synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--implementation", default="grouped_mm", choices=["eager", "grouped_mm", "batched_mm"])
    add_policy_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shape = {"hidden_size": args.hidden, "intermediate_size": args.hidden, "num_experts": args.experts,
             "num_hidden_layers": args.layers, "experts_implementation": args.implementation}
    model, moe, _, _ = benchmark_policy(args.policy, args.device, args.dtype, **(shape if args.policy == "small" else {}))
    print(describe(model))
    counts = [1 + (i * 8 // args.batch) for i in range(args.batch)]  # k = 1..8 spread over the rows
    k_max, k_mean = max(counts), round(sum(counts) / len(counts))
    ids = torch.randint(4, 260, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0)).to(args.device)
    groups = {k: [i for i, c in enumerate(counts) if c == k] for k in sorted(set(counts))}

    def forward(batch_ids, past=None, **settings):
        with torch.no_grad(), moe.routing(**settings):
            return model(batch_ids, **cache_argument(past), use_cache=True)

    with torch.no_grad():
        prefix = returned_cache(model(ids, use_cache=True))
    step = torch.randint(4, 260, (args.batch, 1), generator=torch.Generator().manual_seed(1)).to(args.device)

    def decode(rows, **settings):
        past = copy.deepcopy(prefix)  # a decode step extends the cache in place: start from a copy
        if rows is not None:
            past.batch_select_indices(torch.tensor(rows, device=args.device))
        return forward(step if rows is None else step[rows], past, **settings)

    results = {}
    for phase, run in (
        ("prefill", lambda rows, **s: forward(ids if rows is None else ids[rows], **s)),
        ("decode", decode),
    ):
        variants = {
            "mixed_k_one_batch": lambda: run(None, row_expert_counts=counts),
            f"uniform_k{k_max}": lambda: run(None, expert_count=k_max),
            f"uniform_k{k_mean}": lambda: run(None, expert_count=k_mean),
            "per_k_groups": lambda: [run(rows, expert_count=k) for k, rows in groups.items()],
        }
        if phase == "decode":
            variants["cache_copy_only"] = lambda: copy.deepcopy(prefix)
        results[phase] = _timed(args.repeats, variants)
        if phase == "decode":  # report the forward alone
            copy_ms = results[phase].pop("cache_copy_only")
            results[phase] = {name: ms - copy_ms for name, ms in results[phase].items()}

    config = vars(args) if args.policy == "small" else {  # --hidden/--experts/--layers size only the small one
        key: value for key, value in vars(args).items() if key not in ("hidden", "experts", "layers")}
    print(json.dumps({"config": config, "model": describe(model), "row_expert_counts": counts,
                      "median_ms": results}, indent=2))
    for phase, times in results.items():
        mixed = times["mixed_k_one_batch"]
        print(
            f"{phase}: mixed {mixed:.2f} ms | vs uniform k{k_max} {mixed / times[f'uniform_k{k_max}']:.2f}x | "
            f"vs uniform k{k_mean} {mixed / times[f'uniform_k{k_mean}']:.2f}x | "
            f"per-k groups / mixed {times['per_k_groups'] / mixed:.2f}x"
        )


if __name__ == "__main__":
    main()
