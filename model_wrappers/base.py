"""Shared base of our lm-eval model classes: an HFLM whose MoE routing is under run-time control.

Subclassing lm-eval's ``HFLM`` keeps everything users rely on (chat templates, batching, dtype,
``device_map``/``parallelize``, data parallel under ``accelerate launch``, ``trust_remote_code``, peft).
Before any checkpoint is opened, the model args are split into the method's settings object (each class
names its ``settings_type``; parsed and validated by the method's own module) and HFLM's own arguments;
an unknown arg, a bad value or a misspelt shipped checkpoint name stops here, naming what is allowed.
Then the model's config (not its weights) is checked: a supported MoE family, every k in range. This
base then adds the Dynamic MoE handle, the cost model, the EOS rule, run totals in ``get_model_info()`` and
a guard against lm-eval's request cache, which ignores model args (docs/LM_EVAL.md).
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import inspect
import logging
from collections import Counter
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.cost import Cost, CostModel, RunTotals
from lm_eval_moe.generation import eos_token_ids
from lm_eval_moe.logs import follow_lm_eval
from lm_eval_moe.model_args import ModelArgError, arg_names, parse_bool, refuse_unknown
from lm_eval_moe.moe import attach
from lm_eval_moe.moe.settings import RoutingSettings, check_expert_counts
from lm_eval_moe.provenance import provenance, software
from lm_eval_moe.response import PADDING, MoEResponse
from lm_eval_moe.resources import Meter, RunUsage
from lm_eval_moe.response_cache import ResponseCache, ResponseCacheError, as_stored

logger = logging.getLogger(__name__)

#: arguments HFLM passes on to ``from_pretrained`` that users set through --model_args
FROM_PRETRAINED_ARGS = (
    "attn_implementation", "experts_implementation", "low_cpu_mem_usage", "use_safetensors", "variant",
    "cache_dir", "local_files_only", "token", "device_map", "max_memory", "quantization_config", "load_in_4bit",
    "load_in_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
)
HFLM_ARGS = tuple(name for name in inspect.signature(HFLM.__init__).parameters if name not in ("self", "kwargs"))


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


def _close_process_group() -> None:
    """Destroy the process group accelerate opened, at exit: lm-eval never does, and torch tearing down a live
    gloo group during interpreter shutdown now and then aborts a finished rank ("terminate called without an
    active exception", SIGABRT; seen in a CI run of the two-process tests), failing a run whose results were
    already complete."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class MoEHFLMBase(HFLM):
    """HFLM + Dynamic MoE; subclasses name their settings object and generate in :meth:`_generate`."""

    model_name = "moe_hf"
    settings_type: type = RoutingSettings
    #: generation kwargs a class honours beyond until / max_gen_toks (None: everything transformers takes)
    supported_gen_kwargs: frozenset[str] | None = None

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        follow_lm_eval()
        args = dict(model_args)
        refuse_unknown(args, self.accepted_model_args(), self.model_name)
        self._allow_request_cache = parse_bool("allow_request_cache", args.pop("allow_request_cache", False))
        self._response_cache_folder = str(args.pop("response_cache", "") or "")
        self.model_args = dict(args)  # what the responses depend on (part of the response cache's key)
        self._loaded_model_args = dict(args)  # a sweep point's settings override these, never another point's
        self.method_settings = self._take_settings(args)
        pretrained = self.checkpoint = resolve_checkpoint(pretrained)
        if "tokenizer" in args:
            args["tokenizer"] = resolve_checkpoint(args["tokenizer"], "tokenizer")
        self.check_config(pretrained, args, self.method_settings)
        super().__init__(pretrained=pretrained, **args)
        self._enable_data_parallel()
        routing: RoutingSettings = self.method_settings
        self.moe = attach(self.model, renormalize=routing.renormalize)
        self.moe.set_expert_count(routing.expert_count)
        self.cost_model = CostModel.from_model(self.model, self.moe)
        self.eos_ids = eos_token_ids(self.eot_token_id, self.model.generation_config)
        self.totals = RunTotals()
        self.run_usage = RunUsage()
        self._pending: tuple[ResponseCache | None, list[str]] = (None, [])  # the open cache, keys of _generate's requests
        self.generation_settings: list[dict[str, Any]] = []  # the effective sampling of each kwargs group
        logger.info("%s: %s, expert_count=%s (model default %s), renormalize=%s", self.model_name,
                    self.moe.family.name, self._describe_counts(self.moe.expert_counts),
                    self._describe_counts(self.moe.default_expert_counts),
                    "model rule" if routing.renormalize is None else routing.renormalize)

    # ---------------------------------------------------------------- model args, before loading
    @classmethod
    def settings_from(cls, args: dict[str, Any]) -> Any:
        """The class's settings object from the model args (its keys removed from ``args``), validated."""
        from lm_eval_moe.model_args import take_settings

        return take_settings(cls.settings_type, args)

    def _take_settings(self, args: dict[str, Any]) -> Any:
        """:meth:`settings_from`, plus what an instance reads with them (C3PO: its reference set)."""
        return type(self).settings_from(args)

    @classmethod
    def accepted_model_args(cls) -> list[str]:
        return [*cls.settings_arg_names(), "allow_request_cache", "response_cache", *HFLM_ARGS, *FROM_PRETRAINED_ARGS]

    @classmethod
    def settings_arg_names(cls) -> list[str]:
        return arg_names(cls.settings_type)

    @classmethod
    def sweepable_settings(cls) -> set[str]:
        """The settings a sweep may vary on one loaded model: all but :meth:`load_time_settings`."""
        return set(cls.settings_arg_names()) - set(cls.load_time_settings())

    @classmethod
    def load_time_settings(cls) -> list[str]:
        """Settings fixed by what was loaded (the routing rule attached to the model, the backend): a sweep
        cannot vary them on one loaded model."""
        return [name for name in cls.settings_arg_names()
                if name in ("renormalize", "backend") or name.startswith("vllm_")]

    # ---------------------------------------------------------------- sweeps: new settings, same weights
    def reconfigure(self, overrides: dict[str, Any], response_cache: str = "") -> None:
        """Run the next evaluation with ``overrides`` of the method's settings on the loaded model (over the
        settings it was LOADED with, not the previous evaluation's; parsed and validated as at load; every k
        checked against the model), with fresh run totals and its own ``response_cache`` folder."""
        runtime = self.sweepable_settings()
        fixed = sorted(set(overrides) - runtime)
        if fixed:
            raise ModelArgError(f"a sweep varies the method's settings on one loaded model; {', '.join(fixed)} "
                                f"need their own load (settings it can vary: {', '.join(sorted(runtime))})")
        loaded = {name: value for name, value in self._loaded_model_args.items() if name in self.settings_arg_names()}
        args = {**loaded, **{name: str(value) for name, value in overrides.items()}}
        settings = self._take_settings(dict(args))
        for name, counts in self.expert_counts_to_check(settings):
            check_expert_counts(self.model.config, counts, name)  # already checked before loading by sweeps
        self.method_settings = settings
        self.model_args = {**self._loaded_model_args, **args}
        self._response_cache_folder = response_cache
        self.apply_settings()
        self.totals, self.run_usage, self.generation_settings = RunTotals(), RunUsage(), []
        self.run_totals = None
        logger.info("%s: settings now %s", self.model_name, ", ".join(f"{k}={v}" for k, v in sorted(args.items())))

    def apply_settings(self) -> None:
        """Make the loaded model follow ``self.method_settings`` (subclasses: their method's state too)."""
        self.moe.set_expert_count(self.method_settings.expert_count)

    @classmethod
    def expert_counts_to_check(cls, settings: Any) -> list[tuple[str, list[Any]]]:
        """(model arg, its expert counts) to check against the model's config (before loading)."""
        count = settings.expert_count
        return [("expert_count", [count])] if count is not None else []

    @classmethod
    def check_config(cls, pretrained: Any, args: dict[str, Any], settings: Any) -> None:
        """A supported MoE family and every k in range, read from the config alone (no weights yet)."""
        if not isinstance(pretrained, str):
            return
        from transformers import AutoConfig

        from lm_eval_moe.moe.dynamic import config_family

        config = AutoConfig.from_pretrained(pretrained, revision=args.get("revision", "main"),
                                            trust_remote_code=bool(args.get("trust_remote_code", False)),
                                            subfolder=args.get("subfolder") or "")
        config_family(config)
        for name, counts in cls.expert_counts_to_check(settings):
            check_expert_counts(config, counts, name)

    # ---------------------------------------------------------------- lm-eval plumbing
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
        atexit.register(_close_process_group)
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
                "silently. To resume runs use the model arg response_cache=<folder> (keyed on every setting and "
                "the package version); or use one --use_cache path per setting and pass allow_request_cache=true."
            )
        super().set_cache_hook(cache_hook)

    def request_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], int, dict[str, Any]]:
        """(stop sequences, max new tokens, the other generation kwargs) of a request, with lm-eval's own
        normalisation; a kwarg this class cannot honour is refused, naming it."""
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
        max_new = int(kwargs.pop("max_gen_toks"))
        if self.supported_gen_kwargs is not None:
            unsupported = sorted(set(kwargs) - self.supported_gen_kwargs)
            if unsupported:
                raise ModelArgError(f"generation kwargs {unsupported} are not supported by {self.model_name} "
                                    f"(supported: until, max_gen_toks, {', '.join(sorted(self.supported_gen_kwargs))})")
        return until, max_new, kwargs

    def record_generation(self, effective: dict[str, Any]) -> None:
        """Note an effective generation setting once (reported in ``results["config"]["lm_eval_moe"]``)."""
        if effective not in self.generation_settings:
            self.generation_settings.append(effective)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Subclasses generate in :meth:`_generate` and hand each response to :meth:`finished` as it
        completes. With ``response_cache`` set, requests finished by an earlier run of the same settings are
        read back instead of generated. Afterwards the run totals are summed over the ranks of a
        data-parallel run (each rank calls this once per lm-eval run, after its own generation, so ranks
        that ran different numbers of search rounds never wait on each other mid-generation)."""
        mask, repeats = padding_mask(requests), repeat_indices(requests)
        real = [(request, repeat) for request, repeat, padding in zip(requests, repeats, mask) if not padding]
        cache = self._open_response_cache()
        keys = [cache.key(r.task_name, r.doc_id, repeat, r.args) if cache else "" for r, repeat in real]
        responses: list[Any] = [None] * len(real)
        for position, key in enumerate(keys):
            stored = cache.get(key) if cache else None
            if stored is not None:
                responses[position] = stored[0]
                self._account(stored[0], stored[1])
        todo = [position for position, response in enumerate(responses) if response is None]
        if cache is not None:
            logger.info("%s: %d of %d responses read from the response cache %s (finished by an earlier run), "
                        "%d to generate", self.model_name, len(real) - len(todo), len(real), cache.folder, len(todo))
        self._pending = (cache, [keys[position] for position in todo])
        try:
            generated = self._generate([real[p][0] for p in todo], [real[p][1] for p in todo], disable_tqdm) if todo else []
        finally:
            self._pending = (None, [])
            if cache is not None:
                cache.close()
        if len(generated) != len(todo) or any(response is None for response in generated):
            raise RuntimeError(f"{self.model_name} answered {sum(r is not None for r in generated)} of {len(todo)} requests")
        for position, response in zip(todo, generated):
            responses[position] = response
        self._gather_totals()
        answered = iter(responses)
        return [MoEResponse("", {PADDING: True}) if padding else next(answered) for padding in mask]

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> list[str]:
        """Responses to ``requests`` (``repeats``: which repeat of its request each is), each built by
        :meth:`finished`."""
        raise NotImplementedError

    def measured(self, meter: Meter, samples: int) -> dict[str, Any]:
        """A batch's wall time and peak memory: added to the run's, and what each of its ``samples`` reports."""
        usage = meter.stop()
        self.run_usage.add(usage)
        return usage.per_sample(samples)

    def finished(self, index: int, text: str, meta: dict[str, Any], generation: dict[str, Any],
                 resources: dict[str, Any]) -> MoEResponse:
        """The response to the ``index``-th request of :meth:`_generate`, the moment it is complete: counted
        in the run totals, its effective generation settings recorded, its share of the batch's time and
        memory attached, and written to the response cache."""
        cache, keys = self._pending
        meta = {**meta, "resources": resources}
        response = as_stored(text, meta) if cache is not None else MoEResponse(text, meta)
        if cache is not None:
            cache.put(keys[index], response, generation)
        self._account(response, generation)
        return response

    def _account(self, response: MoEResponse, generation: dict[str, Any]) -> None:
        self.totals.add(Cost(**response.meta["cost"]))
        self.record_generation(generation)

    def _open_response_cache(self) -> ResponseCache | None:
        if not self._response_cache_folder:
            return None
        identity = {"model_class": self.model_name, "checkpoint": str(self.checkpoint), "model_args": self.model_args,
                    "settings": dataclasses.asdict(self.method_settings), "lm_eval_moe": software()}
        try:
            return ResponseCache(self._response_cache_folder, identity, self.rank)
        except (OSError, ResponseCacheError) as error:
            raise ModelArgError(f"model arg response_cache={self._response_cache_folder}: {error}") from None

    def _gather_totals(self) -> None:
        import torch.distributed as dist

        usage = self.run_usage.as_dict()
        if self.world_size <= 1 or not dist.is_available() or not dist.is_initialized():
            self.run_totals = {**self.totals.as_dict(), **usage}
            return
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, (self.totals.as_dict(), usage))
        self.run_totals = {key: sum(part[0][key] for part in gathered) for key in gathered[0][0]}
        # ranks run side by side: the run's wall time and peaks are the largest rank's
        self.run_totals.update({key: max(part[1][key] for part in gathered) for key in usage})
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
            "generation": self.generation_settings,
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
            "totals": getattr(self, "run_totals", None) or {**self.totals.as_dict(), **self.run_usage.as_dict()},
            "provenance": provenance(),
        }
        return info
