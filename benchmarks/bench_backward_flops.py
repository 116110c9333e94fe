"""Rerouting's Phase 1 backward, frozen weights: FLOPs counted by ``torch.utils.flop_counter`` on real
forward and backward passes against the cost model's formula (lm_eval_moe/cost.py), and the wall time of
the backward relative to the forward.

For each policy and context length: one forward of the rerouting objective (next-token loss with router
deltas as the only trainable tensor) and its backward, counted apart; the formula's forward and backward for
the same tokens; the measured backward / forward ratio, against the 2x the project charged before. The
policies run with eager experts and eager attention for the count: the flop counter does not see
``_grouped_mm`` or CPU flash attention, and would report only the dense layers (0.77x on the random policy).

    python benchmarks/bench_backward_flops.py [--lengths 64 256 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from transformers import AutoModelForCausalLM

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.cost import CostModel
from lm_eval_moe.moe import attach
from lm_eval_moe.testing import tiny_moe


def _policies():
    random_policy = tiny_moe("olmoe", seed=0, experts_implementation="eager", hidden_size=256, intermediate_size=256,
                             num_experts=32, num_experts_per_tok=8, num_hidden_layers=4)
    demo = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe"), dtype=torch.float32,
                                                experts_implementation="eager").eval()
    for name, model in (("random olmoe (hidden 256, 32 experts, top-8, 4 layers)", random_policy),
                        ("tiny-arith-moe (demo policy)", demo)):
        model.set_attn_implementation("eager")
        moe = attach(model)
        yield name, model, moe, CostModel.from_model(model, moe)


def _objective(model, moe, ids: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    with moe.routing(bias=deltas):
        logits = model(input_ids=ids).logits
    return torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])


def measure(model, moe, cost: CostModel, length: int, repeats: int) -> dict:
    for param in model.parameters():
        param.requires_grad_(False)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length))
    deltas = torch.zeros(1, moe.num_layers, moe.num_experts, requires_grad=True)
    with torch.enable_grad():
        with FlopCounterMode(display=False) as forward_counter:
            loss = _objective(model, moe, ids, deltas)
        with FlopCounterMode(display=False) as backward_counter:
            loss.backward()
    forward_times, backward_times = [], []
    with torch.enable_grad():
        for _ in range(repeats):
            deltas.grad = None
            start = time.perf_counter()
            loss = _objective(model, moe, ids, deltas)
            middle = time.perf_counter()
            loss.backward()
            forward_times.append(middle - start)
            backward_times.append(time.perf_counter() - middle)
    counts = moe.current_k
    return {
        "measured_forward": forward_counter.get_total_flops(),
        "measured_backward": backward_counter.get_total_flops(),
        "formula_forward": cost.forward_flops(length, 0, counts),
        "formula_backward": cost.frozen_backward_flops(length, 0, counts),
        "time_ratio": statistics.median(backward_times) / statistics.median(forward_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| policy | tokens | measured bwd/fwd FLOPs | formula bwd/fwd | formula / measured (fwd, bwd) | bwd/fwd wall time |")
    print("|---|---|---|---|---|---|")
    for name, model, moe, cost in _policies():
        for length in args.lengths:
            r = measure(model, moe, cost, length, args.repeats)
            print(f"| {name} | {length} | {r['measured_backward'] / r['measured_forward']:.2f}x "
                  f"| {r['formula_backward'] / r['formula_forward']:.2f}x "
                  f"| {r['formula_forward'] / r['measured_forward']:.2f}, {r['formula_backward'] / r['measured_backward']:.2f} "
                  f"| {r['time_ratio']:.2f}x |")


if __name__ == "__main__":
    main()
