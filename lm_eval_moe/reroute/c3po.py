"""C3PO baseline, kernel-regression variant (Li, Li, Zhou 2025; docs/METHODS.md section 5).

Reference set: problems the model solves, each with the routing distribution of its LAST INPUT TOKEN in
the last ``layers`` MoE layers (full softmax) and a question embedding. At test time the test question's
nearest references (cosine similarity) are averaged with kernel weights and the result is mixed into
the model's own routing of those layers: ``scores <- (1 - alpha) * scores + alpha * neighbours``.

Deviations from the paper (its public code is partial), stated here and in the README:
* the question embedding is the policy's own last hidden state, mean-pooled over the prompt (no separate
  embedding model is downloaded);
* kernel: ``exp(cosine / bandwidth)`` over the top ``neighbours`` (3 by default, as the public code);
* the mix applies to every token the model processes for that request (prompt and generated), in the
  last ``layers`` MoE layers, and the top-k is taken from the mixed scores;
* only the kernel-regression variant is provided (not the optimisation-based ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lm_eval_moe.moe import DynamicMoE


@dataclass
class ReferenceSet:
    embeddings: torch.Tensor  # (references, hidden), unit norm
    routing: torch.Tensor  # (references, layers, experts)
    layers: list[int]  # MoE layer indices the routing belongs to
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        torch.save({"embeddings": self.embeddings, "routing": self.routing, "layers": self.layers,
                    "metadata": self.metadata}, path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceSet:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(data["embeddings"], data["routing"], list(data["layers"]), dict(data["metadata"]))

    def neighbour_routing(self, embeddings: torch.Tensor, neighbours: int = 3, bandwidth: float = 0.1) -> torch.Tensor:
        """(batch, layers, experts): kernel-weighted average routing of each query's nearest references."""
        similarity = F.normalize(embeddings.float(), dim=-1) @ self.embeddings.float().T
        count = min(neighbours, similarity.shape[1])
        top = similarity.topk(count, dim=-1)
        kernel = torch.softmax(top.values / bandwidth, dim=-1)
        return torch.einsum("bn,bnle->ble", kernel, self.routing.float()[top.indices])


def last_layers(moe: DynamicMoE, count: int) -> list[int]:
    return list(range(max(0, moe.num_layers - count), moe.num_layers))


def prompt_features(model: torch.nn.Module, moe: DynamicMoE, ids: torch.Tensor, mask: torch.Tensor,
                    layers: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (batch, hidden), last-input-token routing (batch, layers, experts)) of left-padded prompts."""
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad(), moe.record(full_probs=True) as recorder:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    hidden = out.hidden_states[-1].float()
    weights = mask.unsqueeze(-1).float()
    embeddings = F.normalize((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1), dim=-1)
    batch = ids.shape[0]
    routing = torch.stack(
        [next(c for c in recorder.calls if c.layer == layer).full_probs.view(batch, ids.shape[1], -1)[:, -1]
         for layer in layers], dim=1)
    return embeddings.cpu(), routing.cpu()
