"""The routing math shared by every supported family, with the knobs lm_eval_moe adds.

Each transformers MoE router computes ``(router_logits, top_k_weights, top_k_index)`` in one of a few
ways (softmax then top-k; sigmoid with a score-correction bias and grouped selection; top-k of the
logits then a softmax over the selected ones). :class:`RoutingRule` names the variant and its
constants, and :func:`route` reproduces the stock result operation for operation, so that with the
model's own k and no bias the output is bitwise identical, while adding

* an expert count per call (global or per layer) and per row of the batch (docs/METHODS.md section 1:
  take the top ``k_max``, mask ranks ``>= k`` of each row, renormalise only if the family does);
* an additive bias on the router logits, added in float32 (a bf16 router rounds a 0.01 bias away);
* the top-k probabilities under the full routing distribution, for routing records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Scoring = Literal["softmax", "sigmoid", "softmax_over_topk"]
Grouping = Literal["none", "group_max", "group_top2_sum"]
WeightsDtype = Literal["logits", "input", "fp32"]


@dataclass(frozen=True)
class RoutingRule:
    """How one router turns logits into expert choices and weights.

    scoring: ``softmax`` (over all experts, top-k of the probabilities), ``sigmoid`` (independent
        scores), or ``softmax_over_topk`` (top-k of the logits, softmax over the selected ones; this
        is a renormalised softmax by construction).
    renormalize: divide the selected weights by their sum (the family's ``norm_topk_prob`` and friends,
        or the user's ``renormalize`` override). For ``softmax_over_topk``, ``False`` means the
        selected experts' probabilities under the full softmax.
    grouping: DeepSeek group-limited selection; ``group_max`` (DeepSeek-V2 ``group_limited_greedy``)
        or ``group_top2_sum`` (DeepSeek-V3 style), keeping ``topk_group`` of ``num_groups`` groups.
    uses_correction_bias: add the router's score-correction bias for SELECTION only (weights use the
        uncorrected scores), as DeepSeek-V3, GLM4-MoE, ERNIE-4.5 and LFM2 do.
    """

    scoring: Scoring
    renormalize: bool
    sorted_topk: bool = True
    grouping: Grouping = "none"
    num_groups: int = 1
    topk_group: int = 1
    group_fill: float = float("-inf")
    uses_correction_bias: bool = False
    renorm_eps: float = 0.0
    renorm_min: float | None = None
    scaling: float = 1.0
    weights_dtype: WeightsDtype = "logits"


@dataclass
class RoutingResult:
    logits: torch.Tensor  # what the stock router returns as router_logits (biased if a bias was given)
    weights: torch.Tensor  # (tokens, k_sel) routing weights, zero at masked ranks
    index: torch.Tensor  # (tokens, k_sel) expert ids, ``masked_index`` at masked ranks
    active: torch.Tensor | None  # (tokens, k_sel) bool, None when every rank is used
    selected_probs: torch.Tensor | None  # (tokens, k_sel) full-distribution probabilities, if asked
    full_probs: torch.Tensor | None  # (tokens, experts), if asked
    entropy: torch.Tensor | None  # (tokens,) entropy of the routing distribution, if asked


def routing_probabilities(rule: RoutingRule, logits: torch.Tensor) -> torch.Tensor:
    """The router's distribution over experts (sigmoid scores for sigmoid routers), in float32."""
    if rule.scoring == "sigmoid":
        return logits.float().sigmoid()
    return F.softmax(logits, dim=-1, dtype=torch.float32)


def _group_mask(rule: RoutingRule, choice: torch.Tensor) -> torch.Tensor:
    grouped = choice.view(-1, rule.num_groups, choice.shape[-1] // rule.num_groups)
    if rule.grouping == "group_max":
        group_scores = grouped.max(dim=-1).values
    else:
        group_scores = grouped.topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=rule.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    return (
        group_mask.unsqueeze(-1)
        .expand(-1, rule.num_groups, choice.shape[-1] // rule.num_groups)
        .reshape(-1, choice.shape[-1])
        .bool()
    )


def route(
    rule: RoutingRule,
    logits: torch.Tensor,
    *,
    input_dtype: torch.dtype,
    expert_count: int,
    token_expert_count: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    correction_bias: torch.Tensor | None = None,
    masked_index: int | None = None,
    mix: tuple[float, torch.Tensor] | None = None,
    want_probs: bool = False,
    want_full_probs: bool = False,
) -> RoutingResult:
    """Route ``logits`` (tokens, experts).

    expert_count: k for every token; with ``token_expert_count`` (tokens,) it must be the maximum and
        ranks ``>= token_expert_count`` are masked: weight 0 and index ``masked_index`` (an id the
        experts module skips), or the row's top expert when ``masked_index`` is None.
    bias: (experts,) or (tokens, experts), added to the logits in float32.
    mix: (alpha, target) with target (experts,) or (tokens, experts): the routing scores become
        (1 - alpha) * scores + alpha * target before selection (C3PO's kernel-regression re-mixing).
    """
    z = logits if bias is None else logits.float() + bias
    if rule.scoring == "softmax":
        scores = F.softmax(z, dim=-1, dtype=torch.float32)
    elif rule.scoring == "sigmoid":
        scores = z.sigmoid()
    else:
        scores = z
    if mix is not None:
        alpha, target = mix
        if rule.scoring == "softmax_over_topk":  # mix in probability space, select on its logarithm
            scores = torch.log((1 - alpha) * F.softmax(z, dim=-1, dtype=torch.float32) + alpha * target + 1e-12)
        else:
            scores = (1 - alpha) * scores + alpha * target.to(scores.dtype)
    choice = scores if correction_bias is None else scores + correction_bias
    if rule.grouping != "none":
        choice = choice.masked_fill(~_group_mask(rule, choice), rule.group_fill)

    masked = token_expert_count is not None
    index = torch.topk(choice, k=expert_count, dim=-1, sorted=True if masked else rule.sorted_topk)[1]
    active = None
    if masked:
        ranks = torch.arange(expert_count, device=index.device)
        active = ranks.unsqueeze(0) < token_expert_count.to(index.device).unsqueeze(1)

    if rule.scoring == "softmax_over_topk":
        if rule.renormalize:
            top = scores.gather(1, index)
            if active is not None:
                top = top.masked_fill(~active, float("-inf"))
            weights = F.softmax(top, dim=-1, dtype=top.dtype)
        else:
            weights = F.softmax(z, dim=-1, dtype=torch.float32).gather(1, index)
            if active is not None:
                weights = weights.masked_fill(~active, 0.0)
    else:
        weights = scores.gather(1, index)
        if active is not None:
            weights = weights.masked_fill(~active, 0.0)
        if rule.renormalize:
            denominator = weights.sum(dim=-1, keepdim=True)
            if rule.renorm_eps:
                denominator = denominator + rule.renorm_eps
            if rule.renorm_min is not None:
                denominator = torch.clamp(denominator, min=rule.renorm_min)
            weights = weights / denominator
    if rule.scaling != 1.0:
        weights = weights * rule.scaling
    if rule.weights_dtype == "logits":
        weights = weights.to(logits.dtype)
    elif rule.weights_dtype == "input":
        weights = weights.to(input_dtype)

    selected_probs = full_probs = entropy = None
    if want_probs or want_full_probs:
        probs = routing_probabilities(rule, z.detach())
        selected_probs = probs.gather(1, index)
        if active is not None:
            selected_probs = selected_probs.masked_fill(~active, 0.0)
        full_probs = probs if want_full_probs else None
        if rule.scoring != "sigmoid":  # independent sigmoid scores have no distribution entropy
            entropy = -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1)

    if active is not None:
        filler = index[:, :1].expand_as(index) if masked_index is None else torch.full_like(index, masked_index)
        index = torch.where(active, index, filler)
    out_logits = logits if bias is None else z.to(logits.dtype)
    return RoutingResult(out_logits, weights, index, active, selected_probs, full_probs, entropy)
