"""The verifier formats, one record each: how a checkpoint of the format is recognised, loaded and aggregated.

``verifier_format=<name>`` chooses one; without it :func:`detect_format` reads the checkpoint's config (and, for
a value head, its weight names), in the order of :data:`FORMATS`. A generative judge is never guessed: any
causal LM could be one, so it is chosen by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_eval_moe.verifiers.prm import QWEN_STEP_TOKEN


@dataclass(frozen=True)
class VerifierFormat:
    name: str
    detected_when: str  # the detection rule, as the README's verifier table states it
    default_aggregation: str  # the format's published rule (or the search's default where none is published)
    matches: Callable[[Any, Any, set[str]], bool]  # (config, tokenizer, weight names) -> this format?
    step_tag: str | None = None  # the default marker after each step (verifier_step_tag overrides it)


def _architectures(config: Any) -> str:
    return " ".join(getattr(config, "architectures", None) or [])


def _name(config: Any) -> str:
    return str(getattr(config, "_name_or_path", "") or "").lower()


#: in detection order
FORMATS: dict[str, VerifierFormat] = {f.name: f for f in (
    VerifierFormat("qwen_prm", "architecture *ProcessRewardModel, or a token classifier whose tokenizer has <extra_0>",
                   "last", lambda config, tokenizer, weights: "ProcessRewardModel" in _architectures(config) or (
                       "TokenClassification" in _architectures(config) and QWEN_STEP_TOKEN in tokenizer.get_vocab())),
    VerifierFormat("value_head", "weights named v_head.* beside a base model", "last",
                   lambda config, tokenizer, weights: any(name.startswith("v_head.") for name in weights), "\n"),
    VerifierFormat("token_classification", "architecture *ForTokenClassification", "last",
                   lambda config, tokenizer, weights: "TokenClassification" in _architectures(config), "\n"),
    VerifierFormat("outcome", "architecture *ForSequenceClassification", "last",
                   lambda config, tokenizer, weights: "SequenceClassification" in _architectures(config)),
    VerifierFormat("math_shepherd", "a causal LM whose name holds 'shepherd'", "min",
                   lambda config, tokenizer, weights: "CausalLM" in _architectures(config) and "shepherd" in _name(config),
                   "ки"),
    VerifierFormat("rlhflow_prm", "any other causal LM", "last",
                   lambda config, tokenizer, weights: "CausalLM" in _architectures(config)),
    VerifierFormat("judge", "never guessed: verifier_format=judge", "last", lambda config, tokenizer, weights: False),
)}
VERIFIER_FORMATS = tuple(FORMATS)


def checkpoint_file(spec: str, filename: str) -> Path | None:
    """A file of a checkpoint (a local folder, or a hub id from the cache the model's own loading fills), or None."""
    local = Path(spec) / filename
    if local.is_file():
        return local
    if Path(spec).is_dir():
        return None
    from transformers.utils import cached_file

    found = cached_file(spec, filename, _raise_exceptions_for_missing_entries=False)
    return Path(found) if found else None


def weight_files(spec: str) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, from the checkpoint's index or its single file's header."""
    from safetensors import safe_open

    index = checkpoint_file(spec, "model.safetensors.index.json")
    if index is not None:
        return {name: index.parent / file for name, file in json.loads(index.read_text()).get("weight_map", {}).items()}
    single = checkpoint_file(spec, "model.safetensors")
    if single is None:
        return {}
    with safe_open(str(single), framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single)


def detect_format(spec: str, config: Any, tokenizer: Any) -> str | None:
    weights = set(weight_files(spec))
    return next((f.name for f in FORMATS.values() if f.matches(config, tokenizer, weights)), None)
