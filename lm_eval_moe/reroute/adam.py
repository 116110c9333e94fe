"""Adam on the router deltas with a per-(sample, layer) scale on each update.

Section 3.3 of the paper scales each layer's update by its weight w_i (soft selection) or restricts updates
to the selected layers (hard). Scaling the gradient would not do that (Adam normalises it away), so the
scale multiplies the Adam step itself (the rerouter's ``layer_weighting=lr``). ``gradient`` scales the gradient
instead, as Eq. 7 writes it, and passes ``frozen``: the (sample, layer) rows not selected in this phase, which
Eq. 7 leaves unchanged: neither their deltas nor their Adam state move (torch's Adam would keep moving them on
the momentum of an earlier phase). Step counts, and so bias corrections, are kept per row. With every scale 1
and nothing frozen this is exactly ``torch.optim.Adam`` (tested), weight decay included (L2 added to the
gradient, as torch's Adam does).
"""

from __future__ import annotations

import torch


class ScaledAdam:
    def __init__(
        self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-5,
        weight_decay: float = 1e-8,
    ) -> None:
        self.param, self.lr, self.betas, self.eps, self.weight_decay = param, lr, betas, eps, weight_decay
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = torch.zeros(param.shape[:-1], dtype=torch.float64, device=param.device)  # per row

    @torch.no_grad()
    def step(self, scale: torch.Tensor | None = None, frozen: torch.Tensor | None = None) -> None:
        """One update; ``scale`` (batch, layers) multiplies the step of each (sample, layer) row; rows where
        ``frozen`` (batch, layers) is true are left entirely unchanged (deltas and Adam state)."""
        grad = self.param.grad
        if grad is None:
            return
        if self.weight_decay:
            grad = grad.add(self.param, alpha=self.weight_decay)
        moving = torch.ones_like(self.steps, dtype=torch.bool) if frozen is None else ~frozen.to(self.steps.device)
        beta1, beta2 = self.betas
        self.steps += moving.to(self.steps.dtype)
        keep = moving.unsqueeze(-1).to(grad)
        self.exp_avg.copy_(torch.lerp(self.exp_avg, grad, (1 - beta1) * keep))
        self.exp_avg_sq.copy_(self.exp_avg_sq * (1 - (1 - beta2) * keep) + (1 - beta2) * keep * grad * grad)
        steps = self.steps.clamp(min=1).unsqueeze(-1)
        bias_correction1 = (1 - beta1**steps).to(grad)
        bias_correction2 = (1 - beta2**steps).to(grad)
        denom = (self.exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(self.eps)
        update = self.exp_avg / denom * (self.lr / bias_correction1) * keep
        if scale is not None:
            update = update * scale.to(update).unsqueeze(-1)
        self.param.sub_(update)
