"""``moe_c3po``: the C3PO kernel-regression baseline (lm_eval_moe/reroute/c3po.py) as an lm-eval model.

Build the reference set once with ``lm-eval-moe c3po-build`` (problems the model solves, from a split
disjoint from the evaluated one), then ``--model moe_c3po --model_args pretrained=...,references=refs.pt,alpha=0.5``.
Generation is ``moe_hf``'s; each batch first embeds its prompts (counted as extra FLOPs) and mixes its
neighbours' routing into the last MoE layers. Before generating, the evaluation is refused when the
reference set holds one of the evaluated problems or was built in another prompt format (chat template or
not).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from lm_eval.api.instance import Instance

from lm_eval_moe.generation.plain import BatchRouting
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.problem_identity import problem_hash
from lm_eval_moe.reroute.c3po import C3PORouting
from lm_eval_moe.reroute.settings import C3POMethodSettings
from lm_eval_moe.run_record import Generated

logger = logging.getLogger(__name__)


class MoEC3POLM(MoEHFLM):
    model_name = "moe_c3po"
    settings_type = C3POMethodSettings

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        self.prompts_use_chat_template = False
        super().__init__(pretrained=pretrained, **model_args)

    def prepare(self, settings: C3POMethodSettings) -> None:
        """The reference set, read and checked for provenance before the policy loads."""
        self.c3po = C3PORouting(settings)

    def batch_routing(self) -> BatchRouting:
        self.c3po.attach(self.model, self.moe)
        return self.c3po

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval calls this while building prompts only under ``--apply_chat_template``."""
        self.prompts_use_chat_template = True
        return super().apply_chat_template(chat_history, add_generation_prompt)

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> Iterator[Generated]:
        checkable = [request.doc for request in requests if isinstance(request.doc, dict) and "moe_question" in request.doc]
        self.c3po.check_evaluation({problem_hash(doc) for doc in checkable}, self.prompts_use_chat_template)
        if len(checkable) < len(requests):
            logger.warning("moe_c3po: %d of %d requests come from documents without moe_question (not an "
                           "lm_eval_moe task): their overlap with the references cannot be checked",
                           len(requests) - len(checkable), len(requests))
        return super()._generate(requests, repeats, disable_tqdm)

    def reported_settings(self) -> dict[str, Any]:
        return {**super().reported_settings(), **self.c3po.report()}
