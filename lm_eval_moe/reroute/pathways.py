"""Expert pathways before and after rerouting (Rewiring Experts on the Fly, appendix B.2) and router confidence.

A token's expert pathway is the set of experts it is routed to at each MoE layer. After a rerouted
generation, the finished text (prompt + generated tokens) is read twice: under the base router ("before")
and under the sample's final deltas ("after"). Reported over the GENERATED tokens:

* ``edit_distance``: expert substitutions that turn one pathway into the other (per layer, the experts of
  "after" missing from "before", summed over layers), averaged over tokens; ``changed_fraction`` divides it
  by the pathway's length (layers x k);
* ``confidence_before`` / ``confidence_after``: per layer, the mean over tokens of the router's top-1
  probability (its confidence), without and with the deltas.

A diagnostic (``pathway_stats=true``): two extra forward passes per batch, not counted in the method's cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.reroute.rerouter import left_padded


def _routing(model: torch.nn.Module, moe: DynamicMoE, ids: torch.Tensor, mask: torch.Tensor,
             positions: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(expert index (rows, tokens, layers, k_max), -1 at masked ranks; top-1 probability (rows, tokens, layers))."""
    rows, width = ids.shape
    with torch.no_grad(), moe.routing(bias=bias), moe.record(full_probs=True) as recorder:
        model(input_ids=ids, attention_mask=mask, position_ids=positions)
    calls = sorted(recorder.calls, key=lambda call: call.layer)
    index = torch.stack([call.expert_index.view(rows, width, -1) for call in calls], dim=2)
    top = torch.stack([call.full_probs.view(rows, width, -1).max(dim=-1).values for call in calls], dim=2)
    return index.cpu(), top.float().cpu()


def substitutions(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Per token and layer, the experts of ``after`` (..., k) missing from ``before`` (..., k); -1 ranks ignored."""
    present = (after.unsqueeze(-1) == before.unsqueeze(-2)).any(dim=-1)
    return ((after >= 0) & ~present).sum(dim=-1)


def pathway_stats(model: torch.nn.Module, moe: DynamicMoE, pad_id: int, prompts: Sequence[Sequence[int]],
                  generated: Sequence[Sequence[int]], deltas: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """One report per row (see the module docstring); empty for a row that generated nothing."""
    texts = [list(prompt) + list(tokens) for prompt, tokens in zip(prompts, generated)]
    ids, mask, positions = left_padded(texts, pad_id, next(model.parameters()).device)  # generated tokens end every row
    width = ids.shape[1]
    before, top_before = _routing(model, moe, ids, mask, positions, None)
    after, top_after = _routing(model, moe, ids, mask, positions, torch.stack(list(deltas)).to(ids.device))
    reports = []
    for row, tokens in enumerate(generated):
        if not tokens:
            reports.append({})
            continue
        span = slice(width - len(tokens), width)
        changed = substitutions(before[row, span], after[row, span]).sum(dim=-1).float()  # per token
        length = int((after[row, span] >= 0).sum(dim=(-1, -2))[0])  # layers x k of the pathway
        reports.append({"edit_distance": float(changed.mean()), "changed_fraction": float(changed.mean() / length),
                        "confidence_before": top_before[row, span].mean(dim=0).tolist(),
                        "confidence_after": top_after[row, span].mean(dim=0).tolist()})
    return reports
