"""Shared base of our lm-eval model classes: an HFLM whose MoE routing is under run-time control.

Subclassing lm-eval's ``HFLM`` keeps everything users rely on (chat templates, batching, dtype,
``device_map``/``parallelize``, data parallel under ``accelerate launch``, ``trust_remote_code``,
peft). This base adds the Dynamic MoE handle, the cost model, run totals in ``get_model_info()``
and a guard against lm-eval's request cache, which ignores model args (docs/LM_EVAL.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from lm_eval_moe.cost import CostModel, RunTotals
from lm_eval_moe.demo import resolve_model_name
from lm_eval_moe.generation import eos_token_ids
from lm_eval_moe.moe import attach
from lm_eval_moe.response import PADDING, MoEResponse
from lm_eval_moe.model_wrappers.args import ModelArgError, parse_bool, parse_expert_count, parse_int, parse_renormalize

logger = logging.getLogger(__name__)


def request_seed(seed: int, request: Instance, repeat: int) -> int:
    """Seed of a request, derived from the document (task, doc id, repeat, prompt), never from its position
    or rank: the same document gets the same randomness under any batching or data-parallel split."""
    key = f"{seed}/{request.task_name}/{request.doc_id}/{repeat}/{request.args[0]}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF


def repeat_indices(requests: list[Instance]) -> list[int]:
    """Which repeat of its request each entry is: lm-eval passes a request with ``repeats: n`` as the same
    Instance object n times in a row (0, 1, .., n-1)."""
    seen: Counter[int] = Counter()
    indices = []
    for request in requests:
        indices.append(seen[id(request)])
        seen[id(request)] += 1
    return indices


def padding_mask(requests: list[Instance]) -> list[bool]:
    """Which requests are lm-eval's data-parallel padding: copies of a rank's last request beyond its
    ``repeats`` (set by lm-eval's evaluator; requests built elsewhere have none), added so that ranks run
    equal request counts. Their responses would be appended to that request's own and counted as extra
    candidates; they are not generated (no collectives run inside generation, so ranks need not stay in
    step) and are answered by marked empty responses."""
    return [request.repeats is not None and repeat >= request.repeats
            for request, repeat in zip(requests, repeat_indices(requests))]


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
        if "tokenizer" in kwargs:
            kwargs["tokenizer"] = resolve_model_name(kwargs["tokenizer"])
        super().__init__(pretrained=resolve_model_name(pretrained), **kwargs)
        self._enable_data_parallel()
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

    def _vllm_engine(self, pretrained: Any, max_expert_count: int, seed: int, max_model_len: Any,
                     gpu_memory_utilization: Any, tensor_parallel_size: Any):
        """``backend=vllm``: one persistent vLLM engine loaded at ``max_expert_count`` (requests pick any k up
        to it); the HF model stays loaded for the cost model and lm-eval's tokenizer handling."""
        from lm_eval_moe.generation.vllm_engine import VLLMExpertEngine

        return VLLMExpertEngine(
            resolve_model_name(pretrained), max_expert_count, dtype=str(self.model.dtype).removeprefix("torch."),
            seed=seed, tensor_parallel_size=parse_int("vllm_tensor_parallel_size", tensor_parallel_size),
            max_model_len=parse_int("vllm_max_model_len", max_model_len) if max_model_len is not None else None,
            gpu_memory_utilization=float(gpu_memory_utilization) if gpu_memory_utilization is not None else None,
        )

    def _eos_ids(self) -> set[int]:
        return eos_token_ids(self.eot_token_id, self.model.generation_config)

    def _enable_data_parallel(self) -> None:
        """HFLM shards requests over ``accelerate launch`` processes only when the machine has more than
        one GPU; on CPU (``accelerate launch --cpu``) or with several processes on one GPU every process
        would evaluate every document. Here each process takes its share whenever accelerate started
        several (the model is never wrapped in DDP: only requests are split)."""
        accelerator = getattr(self, "accelerator", None)
        if accelerator is None or accelerator.num_processes <= 1 or self._world_size > 1:
            return
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        logger.info("%s: data parallel, rank %d of %d on %s", self.model_name, self._rank, self._world_size,
                    accelerator.device)

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

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Subclasses generate in :meth:`_generate`; afterwards the run totals are summed over the ranks
        of a data-parallel run (each rank calls this once per lm-eval run, after its own generation, so
        ranks that ran different numbers of search rounds never wait on each other mid-generation)."""
        mask = padding_mask(requests)
        real = [request for request, padding in zip(requests, mask) if not padding]
        generated = iter(self._generate(real, disable_tqdm) if real else [])
        self._gather_totals()
        return [MoEResponse("", {PADDING: True}) if padding else next(generated) for padding in mask]

    def _generate(self, requests: list[Instance], disable_tqdm: bool) -> list[str]:
        raise NotImplementedError

    def _gather_totals(self) -> None:
        import torch.distributed as dist

        if self.world_size <= 1 or not dist.is_available() or not dist.is_initialized():
            self.run_totals = self.totals.as_dict()
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, self.totals.as_dict())
        self.run_totals = {key: sum(part[key] for part in gathered) for key in gathered[0]}
        self.run_totals["ranks"] = self.world_size

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
            "totals": getattr(self, "run_totals", None) or self.totals.as_dict(),
        }
        return info
