"""``moe_c3po``: the C3PO kernel-regression baseline (lm_eval_moe/reroute/c3po.py) as an lm-eval model.

Build the reference set once with ``lm-eval-moe c3po-build`` (problems the model solves, from a split
disjoint from the evaluated one), then ``--model moe_c3po --model_args pretrained=...,references=refs.pt,alpha=0.5``.
Generation is ``moe_hf``'s; each batch first embeds its prompts (counted as extra FLOPs) and mixes its
neighbours' routing into the last MoE layers. Before generating, the evaluation is refused when the
reference set holds one of the evaluated problems or was built in another prompt format (chat template or
not).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lm_eval.api.instance import Instance

from lm_eval_moe.cost import CostLedger
from lm_eval_moe.generation.settings import PlainSettings
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.problems import problem_hash
from lm_eval_moe.reroute.c3po import ReferenceSet, ReferenceSetError, prompt_features
from lm_eval_moe.reroute.settings import C3POSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class C3POMethodSettings(PlainSettings, C3POSettings):
    """``moe_c3po``: plain generation with the references' routing mixed in."""


class MoEC3POLM(MoEHFLM):
    model_name = "moe_c3po"
    settings_type = C3POMethodSettings

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        self.prompts_use_chat_template = False
        super().__init__(pretrained=pretrained, **model_args)
        settings: C3POSettings = self.method_settings
        if self.references.routing.shape[-1] != self.moe.num_experts or max(self.references.layers) >= self.moe.num_layers:
            raise ModelArgError(f"references {settings.references} were built for another model "
                                f"({self.references.metadata.get('model', 'unknown')})")

    def _take_settings(self, args: dict[str, Any]) -> Any:
        """Settings, and the reference set read and checked for provenance before the model loads."""
        settings = super()._take_settings(args)
        try:
            self.references = ReferenceSet.load(settings.references)
            self.references.check_provenance(f"references={settings.references}")
        except (OSError, ReferenceSetError) as error:
            raise ModelArgError(f"model arg references={settings.references}: {error}") from None
        return settings

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval calls this while building prompts only under ``--apply_chat_template``."""
        self.prompts_use_chat_template = True
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> list[str]:
        source = f"the reference set {self.method_settings.references}"
        self.references.check_prompt_format(self.prompts_use_chat_template, source)
        checkable = [request.doc for request in requests if isinstance(request.doc, dict) and "moe_question" in request.doc]
        self.references.check_disjoint({problem_hash(doc) for doc in checkable}, source)
        if len(checkable) < len(requests):
            logger.warning("moe_c3po: %d of %d requests come from documents without moe_question (not an "
                           "lm_eval_moe task): their overlap with the references cannot be checked",
                           len(requests) - len(checkable), len(requests))
        return super()._generate(requests, repeats, disable_tqdm)

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
