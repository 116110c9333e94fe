"""``moe_c3po``: the C3PO kernel-regression baseline (lm_eval_moe/reroute/c3po.py) as an lm-eval model.

Build the reference set once with ``lm-eval-moe c3po-build`` (problems the model solves), then
``--model moe_c3po --model_args pretrained=...,references=refs.pt,alpha=0.5``. Generation is ``moe_hf``'s;
each batch first embeds its prompts (counted as extra FLOPs) and mixes its neighbours' routing into the
last MoE layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from lm_eval_moe.cost import Cost
from lm_eval_moe.model_wrappers.args import ModelArgError, parse_int
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.reroute.c3po import ReferenceSet, prompt_features


class MoEC3POLM(MoEHFLM):
    model_name = "moe_c3po"

    def __init__(self, pretrained: Any, references: str | None = None, alpha: Any = 0.5, neighbours: Any = 3,
                 bandwidth: Any = 0.1, **kwargs: Any) -> None:
        if not references:
            raise ModelArgError("moe_c3po needs references=<file built by `lm-eval-moe c3po-build`>")
        super().__init__(pretrained=pretrained, **kwargs)
        self.references = ReferenceSet.load(references)
        self.alpha = float(alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ModelArgError(f"model arg alpha={alpha}: expected a mixing weight in [0, 1]")
        self.neighbours = parse_int("neighbours", neighbours)
        self.bandwidth = float(bandwidth)
        if self.references.routing.shape[-1] != self.moe.num_experts or max(self.references.layers) >= self.moe.num_layers:
            raise ModelArgError(f"references {references} were built for another model "
                                f"({self.references.metadata.get('model', 'unknown')})")

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "references": self.references.metadata, "alpha": self.alpha,
                "neighbours": self.neighbours, "bandwidth": self.bandwidth, "mixed_layers": self.references.layers}

    @contextlib.contextmanager
    def batch_routing(self, context_enc: torch.Tensor, attn_masks: torch.Tensor, costs: list[Cost]) -> Iterator[None]:
        embeddings, _ = prompt_features(self.model, self.moe, context_enc, attn_masks, self.references.layers)
        for row, cost in enumerate(costs):
            tokens = int(attn_masks[row].sum())
            cost.extra_forward_tokens += tokens
            cost.extra_flops += self.cost_model.forward_flops(tokens, 0, self.moe.expert_counts)
        target = self.references.neighbour_routing(embeddings, self.neighbours, self.bandwidth).to(context_enc.device)
        targets = {layer: target[:, i] for i, layer in enumerate(self.references.layers)}
        with self.moe.settings(expert_count=self.moe.expert_counts, mix=(self.alpha, targets)):
            yield
