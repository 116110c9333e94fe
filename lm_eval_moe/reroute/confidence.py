"""Router confidence and layer selection (docs/METHODS.md section 5).

Confidence of MoE layer i over a sample's tokens, as the paper writes it:
``C_i = mean_n( -(1/k) sum_{j<=k} log p_{i,j} )`` with p the top-k routing probabilities. NOTE: a larger C_i
means LOWER top-k probabilities (less decisive routing) although the paper calls it higher confidence.
``order="paper"`` uses the formula literally; ``order="inverse"`` flips the ordering (hard: the r fraction
with the smallest C; soft: weights proportional to 1/C_i).

Ablation selections (the rerouting paper's Table 2; how many layers they take is our choice): ``all`` (every
layer, weight 1), ``last`` (the last ``fraction`` of MoE layers), ``random`` (a random ``fraction`` of the
layers, drawn once per sample from its seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from lm_eval_moe.moe.records import LayerRouting

Selection = Literal["soft", "hard", "all", "last", "random"]
SELECTIONS = ("soft", "hard", "all", "last", "random")
Order = Literal["paper", "inverse"]


def layer_confidence(calls: Sequence[LayerRouting], num_layers: int, token_mask: torch.Tensor) -> torch.Tensor:
    """(batch, layers) confidence from the routing records of ONE forward over ``token_mask`` (batch, seq)
    (1 = a real token); padding tokens and masked ranks do not count."""
    batch = token_mask.shape[0]
    confidence = torch.zeros(batch, num_layers)
    real = token_mask.reshape(-1).bool().cpu()
    for call in calls:
        probs = call.expert_prob.detach().float().cpu()
        active = call.active.cpu()
        per_token = -(torch.log(probs.clamp_min(1e-30)) * active).sum(dim=-1) / active.sum(dim=-1).clamp_min(1)
        per_token = torch.where(real, per_token, torch.zeros_like(per_token)).view(batch, -1)
        counts = real.view(batch, -1).sum(dim=-1).clamp_min(1)
        confidence[:, call.layer] = per_token.sum(dim=-1) / counts
    return confidence


def layer_weights(confidence: torch.Tensor, selection: Selection, fraction: float, order: Order,
                  random_rank: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, layers) update scales: soft = C_i / sum_j C_j (or 1/C normalised for ``inverse``); hard = 1 for
    the top ``fraction`` of layers by C (bottom for ``inverse``), 0 elsewhere; ``all``, ``last`` and ``random``
    (the top ``fraction`` of ``random_rank``) as in the module docstring."""
    if selection not in SELECTIONS:
        raise ValueError(f"layer_selection={selection!r}: expected one of {', '.join(SELECTIONS)}")
    if order not in ("paper", "inverse"):
        raise ValueError(f"confidence_order={order!r}: expected paper or inverse")
    if selection == "soft":
        values = confidence if order == "paper" else 1.0 / confidence.clamp_min(1e-12)
        return values / values.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    if selection == "all":
        return torch.ones_like(confidence)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"layer_fraction={fraction}: must be in (0, 1]")
    count = max(1, round(fraction * confidence.shape[-1]))
    if selection == "last":
        weights = torch.zeros_like(confidence)
        weights[:, -count:] = 1.0
        return weights
    if selection == "random":
        if random_rank is None:
            raise ValueError("layer_selection=random needs a per-sample random ranking (seeded)")
        ranked = random_rank
    else:
        ranked = confidence if order == "paper" else -confidence
    chosen = torch.topk(ranked, count, dim=-1).indices
    return torch.zeros_like(confidence).scatter(-1, chosen, 1.0)


def random_layer_rank(seeds: Sequence[int], num_layers: int) -> torch.Tensor:
    """(batch, layers) random scores for ``random`` selection: one fixed draw per sample seed."""
    return torch.stack([torch.rand(num_layers, generator=torch.Generator().manual_seed(seed ^ 0x1A7E5)) for seed in seeds])
