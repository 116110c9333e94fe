"""Adam on the router deltas with a per-(sample, layer) scale on each update.

Section 3.3 of the paper scales each layer's update by its weight w_i (soft selection) or restricts updates
to the selected layers (hard). Scaling the gradient would not do that (Adam normalises it away), so the
scale multiplies the Adam step itself (the rerouter's ``layer_weighting=lr``; ``gradient`` scales the
gradient instead, as Eq. 7 writes it, and passes only a mask of the rows being optimised here). With every scale 1 this is exactly ``torch.optim.Adam`` (tested), weight decay included
(L2 added to the gradient, as torch's Adam does).
"""

from __future__ import annotations

import math

import torch


class ScaledAdam:
    def __init__(
        self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-5,
        weight_decay: float = 1e-8,
    ) -> None:
        self.param, self.lr, self.betas, self.eps, self.weight_decay = param, lr, betas, eps, weight_decay
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self, scale: torch.Tensor | None = None) -> None:
        """One update; ``scale`` (batch, layers) multiplies the step of each (sample, layer) row."""
        grad = self.param.grad
        if grad is None:
            return
        if self.weight_decay:
            grad = grad.add(self.param, alpha=self.weight_decay)
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2 = 1 - beta2**self.steps
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        update = self.exp_avg / denom * (self.lr / bias_correction1)
        if scale is not None:
            update = update * scale.to(update).unsqueeze(-1)
        self.param.sub_(update)
