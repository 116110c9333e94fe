"""``moe_c3po``: the C3PO kernel-regression baseline (lm_eval_moe/reroute/c3po.py) as an lm-eval model.

Build the reference set once with ``lm-eval-moe c3po-build`` (problems the model solves), then
``--model moe_c3po --model_args pretrained=...,references=refs.pt,alpha=0.5``. Generation is ``moe_hf``'s;
each batch first embeds its prompts (counted as extra FLOPs) and mixes its neighbours' routing into the
last MoE layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from lm_eval_moe.cost import CostLedger
from lm_eval_moe.generation.settings import PlainSettings
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.reroute.c3po import ReferenceSet, prompt_features
from lm_eval_moe.reroute.settings import C3POSettings


@dataclass(frozen=True)
class C3POMethodSettings(PlainSettings, C3POSettings):
    """``moe_c3po``: plain generation with the references' routing mixed in."""


class MoEC3POLM(MoEHFLM):
    model_name = "moe_c3po"
    settings_type = C3POMethodSettings

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        super().__init__(pretrained=pretrained, **model_args)
        settings: C3POSettings = self.method_settings
        self.references = ReferenceSet.load(settings.references)
        if self.references.routing.shape[-1] != self.moe.num_experts or max(self.references.layers) >= self.moe.num_layers:
            raise ModelArgError(f"references {settings.references} were built for another model "
                                f"({self.references.metadata.get('model', 'unknown')})")

    def settings(self) -> dict[str, Any]:
        settings: C3POSettings = self.method_settings
        return {**super().settings(), "references": self.references.metadata, "alpha": settings.alpha,
                "neighbours": settings.neighbours, "bandwidth": settings.bandwidth, "mixed_layers": self.references.layers}

    @contextlib.contextmanager
    def batch_routing(self, context_enc: torch.Tensor, attn_masks: torch.Tensor,
                      ledgers: list[CostLedger]) -> Iterator[None]:
        settings: C3POSettings = self.method_settings
        embeddings, _ = prompt_features(self.model, self.moe, context_enc, attn_masks, self.references.layers)
        for row, ledger in enumerate(ledgers):
            ledger.extra_forward(int(attn_masks[row].sum()), self.moe.expert_counts)
        target = self.references.neighbour_routing(embeddings, settings.neighbours, settings.bandwidth).to(context_enc.device)
        targets = {layer: target[:, i] for i, layer in enumerate(self.references.layers)}
        with self.moe.settings(expert_count=self.moe.expert_counts, mix=(settings.alpha, targets)):
            yield
