"""Routing records: which experts each token used, with what probability, per MoE layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerRouting:
    """One router call over ``tokens`` rows (batch-major: sequence 0's tokens first), ``k_max`` ranks."""

    layer: int  # index among the model's MoE layers
    expert_index: torch.Tensor  # (tokens, k_max) long; -1 at masked ranks
    expert_prob: torch.Tensor  # (tokens, k_max) float32 routing probability; 0 at masked ranks
    full_probs: torch.Tensor | None = None  # (tokens, experts) float32, when asked for
    entropy: torch.Tensor | None = None  # (tokens,) routing entropy (softmax routers)

    @property
    def active(self) -> torch.Tensor:
        return self.expert_index >= 0

    def experts_per_row(self, batch: int) -> torch.Tensor:
        """Number of (token, expert) pairs executed per sequence, for a call over ``batch`` sequences."""
        return self.active.sum(dim=-1).view(batch, -1).sum(dim=-1)


@dataclass
class RoutingRecorder:
    """Collects :class:`LayerRouting` entries in call order while a recording is active."""

    full_probs: bool = False
    calls: list[LayerRouting] = field(default_factory=list)

    def add(self, entry: LayerRouting) -> None:
        self.calls.append(entry)

    def experts_executed(self) -> int:
        """Total (token, layer, expert) activations recorded."""
        return int(sum(int(c.active.sum()) for c in self.calls))
