"""Shared base of our lm-eval model classes: an HFLM whose MoE routing is under run-time control.

Subclassing lm-eval's ``HFLM`` keeps everything users rely on (chat templates, batching, dtype,
``device_map``/``parallelize``, data parallel under ``accelerate launch``, ``trust_remote_code``,
peft). This base adds the Dynamic MoE handle, the cost model, run totals in ``get_model_info()``
and a guard against lm-eval's request cache, which ignores model args (LM_EVAL.md).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from lm_eval_moe.cost import CostModel, RunTotals
from lm_eval_moe.moe import attach
from lm_eval_moe.model_wrappers.args import ModelArgError, parse_bool, parse_expert_count, parse_renormalize

logger = logging.getLogger(__name__)


def request_seed(seed: int, request: Instance, repeat: int) -> int:
    """Seed of a request, derived from the document (task, doc id, repeat, prompt), never from its position
    or rank: the same document gets the same randomness under any batching or data-parallel split."""
    key = f"{seed}/{request.task_name}/{request.doc_id}/{repeat}/{request.args[0]}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


class MoEHFLMBase(HFLM):
    """HFLM + Dynamic MoE. Model args: ``expert_count`` (int, per-layer ``4:4:6:6`` or JSON list;
    default: the model's k), ``renormalize`` (model|true|false), ``allow_request_cache`` (false)."""

    model_name = "moe_hf"

    def __init__(
        self,
        pretrained: Any,
        expert_count: Any = None,
        renormalize: Any = "model",
        allow_request_cache: Any = False,
        **kwargs: Any,
    ) -> None:
        expert_count = parse_expert_count(expert_count)
        renormalize_setting = parse_renormalize(renormalize)
        self._allow_request_cache = parse_bool("allow_request_cache", allow_request_cache)
        super().__init__(pretrained=pretrained, **kwargs)
        self.moe = attach(self.model, renormalize=renormalize_setting)
        self.moe.set_expert_count(expert_count)
        self.cost_model = CostModel.from_model(self.model, self.moe)
        self.totals = RunTotals()
        logger.info(
            "%s: %s, expert_count=%s (model default %s), renormalize=%s",
            self.model_name,
            self.moe.family.name,
            self._describe_counts(self.moe.expert_counts),
            self._describe_counts(self.moe.default_expert_counts),
            "model rule" if renormalize_setting is None else renormalize_setting,
        )

    @staticmethod
    def _describe_counts(counts: list[int]) -> str:
        return str(counts[0]) if len(set(counts)) == 1 else ":".join(map(str, counts))

    def set_cache_hook(self, cache_hook: Any) -> None:
        """Refuse lm-eval's ``--use_cache`` unless asked: its key ignores model args, so a run with
        another expert_count or search setting would silently reuse stale outputs."""
        if getattr(cache_hook, "dbdict", None) is not None and not self._allow_request_cache:
            raise ModelArgError(
                "lm-eval's --use_cache keys responses on (prompt, gen_kwargs) only, not on model args such as "
                "expert_count or search settings, so a cache written under other settings would be reused "
                "silently. Use one cache path per setting and pass allow_request_cache=true, or drop --use_cache."
            )
        super().set_cache_hook(cache_hook)

    def settings(self) -> dict[str, Any]:
        """The routing settings of this run (reported with the results)."""
        return {
            "model_class": self.model_name,
            "family": self.moe.family.name,
            "moe_layers": self.moe.num_layers,
            "routed_experts": self.moe.num_experts,
            "shared_experts": self.moe.shared_experts,
            "default_expert_count": self.moe.default_expert_counts,
            "expert_count": self.moe.expert_counts,
            "renormalize": "model" if self.moe.renormalize is None else self.moe.renormalize,
        }

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["lm_eval_moe"] = {
            **self.settings(),
            "cost_model": {
                "dense_params": self.cost_model.dense_params,
                "expert_params": list(self.cost_model.expert_params),
                "attention_layers": self.cost_model.attention_layers,
            },
            "totals": self.totals.as_dict(),
        }
        return info
