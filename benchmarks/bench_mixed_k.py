"""Forward time of one batch with mixed per-sequence k vs uniform k vs one forward per k group.

DES keeps beams with different k; per-sequence k lets them share a forward pass. This measures what
that costs against (a) the same batch at one uniform k (k_max: what a single engine without per-row
k would pay, and the mean k: the same expert work spread evenly, interpolated between the two integer k
around a fractional mean) and (b) running each k group separately. The mixed batch runs both ways the
package has: the experts handed only the selected (token, expert) pairs (what blocks of at least
PAIRS_MIN_TOKENS tokens do) and one call at k_max with the extra ranks masked (what smaller blocks do).
Both prefill (64-token prompts) and a decode step (1 token over a 64-token KV cache) are measured; for the
decode step at k_max it also reports the bytes the step cannot avoid reading and the bandwidth that implies
(on a GPU, as a share of its datasheet bandwidth: how close decode is to the memory-bandwidth bound).
Timings are interleaved across variants (round robin) and the median is reported, so the ratios come
from one run under the same machine load.

    python benchmarks/bench_mixed_k.py [--hidden 256 --experts 32 --layers 4 --repeats 30]
    python benchmarks/bench_mixed_k.py --policy olmoe-1b-7b --device cuda --dtype bfloat16   # a GPU, real size
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from lm_eval_moe.kv_cache import cache_argument, returned_cache
from lm_eval_moe.moe import dynamic

from _common import add_policy_arguments, benchmark_policy, describe, interleaved_medians


#: HBM bandwidth of the GPUs this project has been lent, GB/s (vendor datasheets); --peak-gbs overrides
PEAK_GBS = (("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("A100-SXM4-80GB", 2039.0))


def _peak_bandwidth(given: float | None, device: str) -> tuple[float | None, str]:
    if given:
        return given, "--peak-gbs"
    if not device.startswith("cuda"):
        return None, ""
    name = torch.cuda.get_device_name(torch.device(device))
    return next(((gbs, f"{name} datasheet") for key, gbs in PEAK_GBS if key in name), (None, ""))


def _decode_bytes(model, moe, prefix, decode_step, batch: int) -> int:
    """Bytes one decode step cannot avoid reading: every parameter but the routed experts' and the input
    embedding, the embedding rows of the batch's tokens, the weights of each layer's distinct selected experts
    (recorded in one step) and the KV cache it attends over."""
    def size(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)

    embedding = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embedding  # then the output projection reads it whole
    expert_bytes = [size(layer.experts.parameters()) / moe.num_experts for layer in moe.layers]
    other = size(model.parameters()) - (0 if tied else size([embedding])) - sum(e * moe.num_experts for e in expert_bytes)
    with moe.record() as recorder:
        decode_step()
    selected = sum(expert_bytes[call.layer] * call.expert_index[call.active].unique().numel() for call in recorder.calls)
    cache = size(t for layer in prefix.layers for t in (layer.keys, layer.values))
    return int(other + batch * embedding[0].numel() * embedding.element_size() + selected + cache)


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
    parser.add_argument("--peak-gbs", type=float, default=None,
                        help="the device's memory bandwidth in GB/s (default: a datasheet value for known GPUs)")
    add_policy_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shape = {"hidden_size": args.hidden, "intermediate_size": args.hidden, "num_experts": args.experts,
             "num_hidden_layers": args.layers, "experts_implementation": args.implementation}
    model, moe, _, _ = benchmark_policy(args.policy, args.device, args.dtype, **(shape if args.policy == "small" else {}))
    print(describe(model))
    counts = [1 + (i * 8 // args.batch) for i in range(args.batch)]  # k = 1..8 spread over the rows
    k_max, k_mean = max(counts), sum(counts) / len(counts)
    k_low, k_high = int(k_mean), min(int(k_mean) + 1, k_max)
    ids = torch.randint(4, 260, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0)).to(args.device)
    groups = {k: [i for i, c in enumerate(counts) if c == k] for k in sorted(set(counts))}

    def forward(batch_ids, past=None, pairs=True, **settings):
        dynamic.PAIRS_MIN_TOKENS = 0 if pairs else 1 << 62
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
            "mixed_k_selected_pairs": lambda: run(None, row_expert_counts=counts),
            "mixed_k_masked": lambda: run(None, pairs=False, row_expert_counts=counts),
            f"uniform_k{k_max}": lambda: run(None, expert_count=k_max),
            f"uniform_k{k_low}": lambda: run(None, expert_count=k_low),
            f"uniform_k{k_high}": lambda: run(None, expert_count=k_high),
            "per_k_groups": lambda: [run(rows, expert_count=k) for k, rows in groups.items()],
        }
        if phase == "decode":
            variants["cache_copy_only"] = lambda: copy.deepcopy(prefix)
        results[phase] = {name: seconds * 1000
                          for name, seconds in interleaved_medians(variants, args.repeats, warm_up=True).items()}
        if phase == "decode":  # report the forward alone
            copy_ms = results[phase].pop("cache_copy_only")
            results[phase] = {name: ms - copy_ms for name, ms in results[phase].items()}

    bytes_read = _decode_bytes(model, moe, prefix, lambda: decode(None, expert_count=k_max), args.batch)
    bandwidth = bytes_read / (results["decode"][f"uniform_k{k_max}"] / 1000) / 1e9
    peak, peak_source = _peak_bandwidth(args.peak_gbs, args.device)
    of_peak = f", {bandwidth / peak:.1%} of {peak:.0f} GB/s ({peak_source})" if peak else ""
    print(f"decode at uniform k{k_max}: at least {bytes_read / 1e9:.3f} GB read per step (weights of the experts the "
          f"batch selects, every other weight but the embedding rows not read, the KV cache) -> {bandwidth:.1f} GB/s"
          + of_peak)

    config = vars(args) if args.policy == "small" else {  # --hidden/--experts/--layers size only the small one
        key: value for key, value in vars(args).items() if key not in ("hidden", "experts", "layers")}
    print(json.dumps({"config": config, "model": describe(model), "row_expert_counts": counts,
                      "median_ms": results}, indent=2))
    share = k_mean - k_low
    for phase, times in results.items():
        same_work = (1 - share) * times[f"uniform_k{k_low}"] + share * times[f"uniform_k{k_high}"]
        for name in ("mixed_k_selected_pairs", "mixed_k_masked"):
            mixed = times[name]
            print(f"{phase}, {name}: {mixed:.2f} ms | vs uniform k{k_max} {mixed / times[f'uniform_k{k_max}']:.2f}x | "
                  f"vs uniform mean k {k_mean:g} ({same_work:.2f} ms) {mixed / same_work:.2f}x | "
                  f"per-k groups / mixed {times['per_k_groups'] / mixed:.2f}x")


if __name__ == "__main__":
    main()
