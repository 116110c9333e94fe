"""Which generation kwargs (a task's ``generation_kwargs``, lm-eval's ``--gen_kwargs``) each method honours.

A kwarg a method would not honour is refused, naming it and the closest honoured one: silently ignoring
``temprature=0.6`` would report a run at the wrong temperature. The model classes check ``--gen_kwargs``
before anything loads (``lm_eval_moe/_lm_eval_hook.py`` wraps ``simple_evaluate``) and every request's
kwargs again when it is generated (a task's own ``generation_kwargs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from lm_eval_moe.model_args import ModelArgError, near_misses

#: what lm-eval itself reads from generation kwargs (``lm_eval.models.utils.normalize_gen_kwargs``)
LM_EVAL_GEN_KWARGS = frozenset({
    "until", "max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens", "do_sample", "temperature",
})
#: sampling kwargs of our own samplers (search, rerouting) and of backend=vllm
SAMPLING_GEN_KWARGS = frozenset({"do_sample", "temperature", "top_p", "top_k"})
#: transformers' GenerationConfig fields a request may not set under backend=hf: lm-eval sets them (max_length,
#: the special token ids), they change what generate returns (several sequences per prompt, dict outputs),
#: or they are not generation settings (bookkeeping, objects a command line cannot give)
HF_FIELDS_NOT_PER_REQUEST = frozenset({
    "max_length", "num_return_sequences", "return_dict_in_generate", "output_scores", "output_logits",
    "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id", "eos_token_id",
    "decoder_start_token_id", "_from_model_config", "transformers_version", "is_assistant", "constraints",
    "cache_config", "compile_config", "watermarking_config", "continuous_batching_config",
})


@cache
def hf_generate_kwargs() -> frozenset[str]:
    """What ``transformers.generate`` honours per request under backend=hf."""
    from transformers import GenerationConfig

    return LM_EVAL_GEN_KWARGS | (frozenset(GenerationConfig().to_dict()) - HF_FIELDS_NOT_PER_REQUEST)


def refuse_unhonoured(given: Iterable[str], honoured: frozenset[str], model_name: str) -> None:
    """Refuse generation kwargs ``model_name`` would not honour, naming near misses and what it honours."""
    unknown = sorted(set(given) - honoured)
    if unknown:
        listed = ", ".join(sorted(honoured)) if len(honoured) <= 20 else (
            f"{len(honoured)} names: lm-eval's own and transformers' GenerationConfig fields")
        raise ModelArgError(f"generation kwarg(s) {near_misses(unknown, honoured)} are not honoured by {model_name} "
                            f"(it honours {listed})")
