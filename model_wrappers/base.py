"""Shared base of our lm-eval model classes: an HFLM whose MoE routing is under run-time control.

Subclassing lm-eval's ``HFLM`` keeps everything users rely on (chat templates, batching, dtype,
``device_map``/``parallelize``, data parallel under ``accelerate launch``, ``trust_remote_code``, peft).
Before any checkpoint opens, the class's settings object reads its model args (``settings_type``: it owns
their names, parsing, validation and k; ``lm_eval_moe/model_args.py``), the rest go to HFLM, and the model's
config (not its weights) is checked. Each class then builds its method's run object and only translates:
lm-eval requests into the method's inputs, its :class:`~lm_eval_moe.run_record.Generated` records into
responses. The run's totals, generation settings and response cache are its :class:`RunRecord`.
"""

from __future__ import annotations

import atexit
import inspect
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation import eos_token_ids
from lm_eval_moe.generation.gen_kwargs import LM_EVAL_GEN_KWARGS, SAMPLING_GEN_KWARGS, refuse_unhonoured
from lm_eval_moe.generation.sampling import derived_seed
from lm_eval_moe.logs import follow_lm_eval
from lm_eval_moe.model_args import ModelArgError, expert_count_label, refuse_unknown
from lm_eval_moe.moe import attach
from lm_eval_moe.moe.families import check_checkpoint_config
from lm_eval_moe.moe.settings import RoutingSettings
from lm_eval_moe.provenance import provenance
from lm_eval_moe.run_identity import digest, model_identity
from lm_eval_moe.response import PADDING, MoEResponse
from lm_eval_moe.response_cache import ResponseCache, ResponseCacheError
from lm_eval_moe.run_record import Generated, RunRecord

logger = logging.getLogger(__name__)

#: arguments HFLM passes on to ``from_pretrained`` that users set through --model_args
FROM_PRETRAINED_ARGS = (
    "attn_implementation", "experts_implementation", "low_cpu_mem_usage", "use_safetensors", "variant",
    "cache_dir", "local_files_only", "token", "device_map", "max_memory", "quantization_config", "load_in_4bit",
    "load_in_8bit", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
)
HFLM_ARGS = tuple(name for name in inspect.signature(HFLM.__init__).parameters if name not in ("self", "kwargs"))
#: model args of the run itself, not of the method
RUN_ARGS = ("response_cache",)


def request_seed(seed: int, request: Instance, repeat: int) -> int:
    """Seed of a request, derived from the document (task, doc id, repeat, prompt), never from its position
    or rank: the same document gets the same randomness under any batching or data-parallel split."""
    return derived_seed(seed, request.task_name, request.doc_id, repeat, request.args[0])


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
    """HFLM + Dynamic MoE; subclasses name their settings, build their method and generate in :meth:`_generate`."""

    model_name = "moe_hf"
    settings_type: type[RoutingSettings] = RoutingSettings
    #: model args a class gives its settings unless the user does (moe_des: strategy=des)
    default_model_args: dict[str, Any] = {}

    def __init__(self, pretrained: Any, **model_args: Any) -> None:
        follow_lm_eval()
        args = {**self.default_model_args, **model_args}
        refuse_unknown(args, self.accepted_model_args(), self.model_name)
        self._response_cache_folder = str(args.pop("response_cache", "") or "")
        self.model_args = dict(args)  # what the responses depend on (part of the response cache's key)
        self._loaded_model_args = dict(args)  # a sweep point's settings override these, never another point's
        self.method_settings = self.settings_type.from_model_args(args)
        pretrained = self.checkpoint = resolve_checkpoint(pretrained)
        if "tokenizer" in args:
            args["tokenizer"] = resolve_checkpoint(args["tokenizer"], "tokenizer")
        self.prepare(self.method_settings)
        check_checkpoint_config(pretrained, args, self.method_settings)
        # no device given (a sweep, a notebook): the GPU if there is one, else the CPU, as lm_eval's CLI picks;
        # HFLM's own default, "cuda", fails on a CPU-only machine
        args["device"] = args.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        super().__init__(pretrained=pretrained, **args)
        self._enable_data_parallel()
        self.moe = attach(self.model, renormalize=self.method_settings.renormalize)
        self.moe.set_expert_count(self.method_settings.expert_count)
        self.cost_model = CostModel.from_model(self.model, self.moe)
        self.eos_ids = eos_token_ids(self.eot_token_id, self.model.generation_config)
        self.run_record = RunRecord()
        self.build_method()
        logger.info("%s: %s, expert_count=%s (model default %s), renormalize=%s", self.model_name,
                    self.moe.family.name, expert_count_label(self.moe.current_k), expert_count_label(self.moe.default_k),
                    "model rule" if self.method_settings.renormalize is None else self.method_settings.renormalize)

    @classmethod
    def honoured_gen_kwargs(cls, settings: Any) -> frozenset[str]:
        """The generation kwargs the method honours under ``settings`` (lm_eval_moe/generation/gen_kwargs.py)."""
        return LM_EVAL_GEN_KWARGS | SAMPLING_GEN_KWARGS

    @classmethod
    def settings_from(cls, model_args: dict[str, Any]) -> Any:
        """The method's settings of ``model_args``, every arg checked (unknown names refused), nothing loaded."""
        args = {**cls.default_model_args, **model_args}
        refuse_unknown(args, cls.accepted_model_args(), cls.model_name)
        names = set(cls.settings_type.arg_names())
        return cls.settings_type.from_model_args({name: value for name, value in args.items() if name in names})

    @classmethod
    def check_gen_kwargs(cls, gen_kwargs: dict[str, Any], model_args: dict[str, Any]) -> None:
        """Refuse, before anything loads, generation kwargs the method would not honour under these model args
        (which are checked on the way)."""
        refuse_unhonoured(gen_kwargs, cls.honoured_gen_kwargs(cls.settings_from(model_args)), cls.model_name)

    @classmethod
    def accepted_model_args(cls) -> list[str]:
        return [*cls.settings_type.arg_names(), *RUN_ARGS, *HFLM_ARGS, *FROM_PRETRAINED_ARGS]

    def prepare(self, settings: Any) -> None:
        """What the method reads before the policy loads (C3PO: its reference set)."""

    def build_method(self) -> None:
        """Build the method's run object from ``self.method_settings`` and the loaded policy."""

    # ---------------------------------------------------------------- sweeps: new settings, same weights
    def reconfigure(self, overrides: dict[str, Any], response_cache: str = "") -> None:
        """Run the next evaluation with ``overrides`` of the method's settings on the loaded model (over the
        settings it was LOADED with, not the previous evaluation's; parsed and validated as at load; every k
        checked against the model), with a fresh run record and its own ``response_cache`` folder."""
        settings_type = self.settings_type
        fixed = sorted(set(overrides) - settings_type.sweepable_args())
        if fixed:
            raise ModelArgError(f"a sweep varies the method's settings on one loaded model; {', '.join(fixed)} "
                                f"need their own load (settings it can vary: {', '.join(sorted(settings_type.sweepable_args()))})")
        names = set(settings_type.arg_names())
        loaded = {name: value for name, value in self._loaded_model_args.items() if name in names}
        args = {**loaded, **{name: str(value) for name, value in overrides.items()}}
        settings = settings_type.from_model_args(dict(args))
        self.prepare(settings)
        settings.check_against(self.model.config)
        self.method_settings = settings
        self.model_args = {**self._loaded_model_args, **args}
        self._response_cache_folder = response_cache
        self.moe.set_expert_count(settings.expert_count)
        self.build_method()
        self.run_record = RunRecord()
        self.run_totals = self._run_identity = None
        logger.info("%s: settings now %s", self.model_name, ", ".join(f"{k}={v}" for k, v in sorted(args.items())))

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

    def set_cache_hook(self, cache_hook: Any) -> None:
        """Refuse lm-eval's ``--use_cache``: its key is (prompt, gen_kwargs) alone, blind to the model args, the
        checkpoint's weights and the code, so it would return another setting's responses as this one's (a
        rerun at expert_count=1 returned the k=2 answers, with zero cost). ``response_cache`` is the cache that
        keys on all of it."""
        if getattr(cache_hook, "dbdict", None) is not None:
            raise ModelArgError(
                "lm-eval's --use_cache keys responses on (prompt, gen_kwargs) only, not on the model args, the "
                "checkpoint's weights or the code, so it would return responses another setting produced. Resume "
                "runs with the model arg response_cache=<folder> instead: it keys every response on the run's "
                "identity (lm_eval_moe/run_identity.py)."
            )
        super().set_cache_hook(cache_hook)

    def request_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], int, dict[str, Any]]:
        """(stop sequences, max new tokens, the other generation kwargs) of a request, with lm-eval's own
        normalisation; a kwarg this class cannot honour is refused, naming it."""
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        eos_text = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
        max_new = int(kwargs.pop("max_gen_toks"))
        refuse_unhonoured(kwargs, self.honoured_gen_kwargs(self.method_settings), self.model_name)
        return until, max_new, kwargs

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Subclasses generate in :meth:`_generate`, which yields each response's record as it completes; the
        run record counts it and, with ``response_cache``, writes it to disk at once, so requests finished by
        an earlier run of the same settings are read back instead of generated. Afterwards the run totals are
        summed over the ranks of a data-parallel run (each rank calls this once per lm-eval run, after its own
        generation, so ranks that ran different numbers of search rounds never wait on each other)."""
        mask, repeats = padding_mask(requests), repeat_indices(requests)
        real = [(request, repeat) for request, repeat, padding in zip(requests, repeats, mask) if not padding]
        self.run_record.cache = self._open_response_cache()
        cache = self.run_record.cache
        keys = [cache.key(r.task_name, r.doc_id, repeat, r.args) if cache else "" for r, repeat in real]
        responses: list[MoEResponse | None] = [self.run_record.stored(key) if cache else None for key in keys]
        todo = [position for position, response in enumerate(responses) if response is None]
        if cache is not None:
            logger.info("%s: %d of %d responses read from the response cache %s (finished by an earlier run), "
                        "%d to generate", self.model_name, len(real) - len(todo), len(real), cache.folder, len(todo))
        try:
            if todo:
                for generated in self._generate([real[p][0] for p in todo], [real[p][1] for p in todo], disable_tqdm):
                    position = todo[generated.index]
                    responses[position] = self.run_record.finish(keys[position], generated)
                    self.cache_hook.add_partial("generate_until", real[position][0].args, responses[position])
        finally:
            self.run_record.close()
        missing = sum(response is None for response in responses)
        if missing:
            raise RuntimeError(f"{self.model_name} answered {len(todo) - missing} of {len(todo)} requests")
        self.run_totals = self.run_record.report(self.world_size)
        answered = iter(responses)
        return [MoEResponse("", {PADDING: True}) if padding else next(answered) for padding in mask]

    def _generate(self, requests: list[Instance], repeats: list[int], disable_tqdm: bool) -> Iterator[Generated]:
        """A record per request (``repeats``: which repeat of its request each is), yielded as it completes;
        each record's ``index`` is its request's position in ``requests``."""
        raise NotImplementedError

    @property
    def run_identity(self) -> dict[str, Any]:
        """What produces this model's responses (``lm_eval_moe/run_identity.py``), computed once per load or
        sweep point; keys the response cache and goes into the results."""
        if getattr(self, "_run_identity", None) is None:
            settings = self.method_settings
            self._run_identity = model_identity(
                self.model_name, self.model_args, settings, self.checkpoint, self.model_args.get("revision"),
                self.model_args.get("tokenizer"), {role: resolve_checkpoint(name, role)
                                                  for role, name in settings.loaded_files().items()})
        return self._run_identity

    def _open_response_cache(self) -> ResponseCache | None:
        if not self._response_cache_folder:
            return None
        try:
            return ResponseCache(self._response_cache_folder, self.run_identity, self.rank)
        except (OSError, ResponseCacheError) as error:
            raise ModelArgError(f"model arg response_cache={self._response_cache_folder}: {error}") from None

    def reported_settings(self) -> dict[str, Any]:
        """The routing settings of this run and what the method adds (reported with the results)."""
        return {
            "model_class": self.model_name,
            "family": self.moe.family.name,
            "moe_layers": self.moe.num_layers,
            "routed_experts": self.moe.num_experts,
            "shared_experts": self.moe.shared_experts,
            "default_expert_count": self.moe.default_k,
            "expert_count": self.moe.current_k,
            "renormalize": "model" if self.moe.renormalize is None else self.moe.renormalize,
            "generation": self.run_record.generation,
        }

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["lm_eval_moe"] = {
            **self.reported_settings(),
            "cost_model": {
                "dense_params": self.cost_model.dense_params,
                "expert_params": list(self.cost_model.expert_params),
                "attention_layers": self.cost_model.attention_layers,
            },
            "totals": getattr(self, "run_totals", None) or self.run_record.report(),
            "run_identity": {**self.run_identity, "digest": digest(self.run_identity)},
            "provenance": provenance(),
        }
        return info
