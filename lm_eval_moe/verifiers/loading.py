"""Build a verifier from a model arg: a checkpoint of one of :data:`~lm_eval_moe.verifiers.formats.FORMATS`
(chosen by ``verifier_format`` or detected), ``majority`` or ``likelihood``."""

from __future__ import annotations

import logging
from typing import Any

import torch

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.verifiers.formats import FORMATS, VERIFIER_FORMATS, detect_format, weight_files
from lm_eval_moe.verifiers.likelihood import LikelihoodVerifier, MajorityVerifier
from lm_eval_moe.verifiers.prm import QwenPRM, RLHFlowPRM
from lm_eval_moe.verifiers.tagged import MathShepherdPRM, TokenClassificationPRM, ValueHeadPRM
from lm_eval_moe.verifiers.whole import JudgeVerifier, OutcomeRM

logger = logging.getLogger(__name__)


class VerifierLoadError(ValueError):
    """The verifier argument cannot be turned into a verifier."""


def _value_head(spec: str, hidden_size: int, dtype: torch.dtype | None) -> torch.nn.Linear:
    """The ``v_head.summary`` linear layer stored beside the base model's weights."""
    from safetensors import safe_open

    tensors = {}
    for name, file in weight_files(spec).items():
        if name.startswith("v_head."):
            with safe_open(str(file), framework="pt") as handle:
                tensors[name] = handle.get_tensor(name)
    weight = tensors.get("v_head.summary.weight")
    if weight is None or tuple(weight.shape) != (1, hidden_size):
        found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()) or "none"
        raise VerifierLoadError(f"verifier {spec!r}: a value head needs v_head.summary.weight of shape (1, {hidden_size}) "
                                f"(found: {found})")
    head = torch.nn.Linear(hidden_size, 1, bias="v_head.summary.bias" in tensors)
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(tensors["v_head.summary.bias"].reshape(1))
    return head.to(dtype) if dtype is not None else head


def _loaded(loader: Any, spec: str, kwargs: dict[str, Any]) -> Any:
    """The model, refusing a checkpoint whose weights did not all load (a wrong format would run on random
    weights otherwise)."""
    model, info = loader.from_pretrained(spec, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys", []))
    if missing:
        raise VerifierLoadError(f"verifier {spec!r} as {loader.__name__}: {len(missing)} weight(s) not in the checkpoint "
                                f"(e.g. {missing[0]}): is verifier_format right?")
    return model


def load_verifier(
    spec: str,
    verifier_format: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    trust_remote_code: bool = False,
    step_tag: str | None = None,
):
    """``spec``: ``majority``, ``likelihood``, or a verifier checkpoint (local path or hub id)."""
    if spec in ("majority", "likelihood"):
        return MajorityVerifier() if spec == "majority" else LikelihoodVerifier()
    spec = resolve_checkpoint(spec)
    if verifier_format is not None and verifier_format not in FORMATS:
        raise VerifierLoadError(f"verifier_format={verifier_format!r}: expected one of {', '.join(VERIFIER_FORMATS)}")
    from transformers import (
        AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
        AutoTokenizer,
    )

    config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    kind = verifier_format or detect_format(spec, config, tokenizer)
    if kind is None:
        raise VerifierLoadError(
            f"cannot tell the verifier format of {spec!r} (architectures "
            f"{getattr(config, 'architectures', None) or 'unknown'}): pass verifier_format={' or '.join(VERIFIER_FORMATS)}")
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    remote = bool(getattr(config, "auto_map", None))
    if remote and not trust_remote_code:
        raise VerifierLoadError(
            f"verifier {spec!r} ships its own modelling code (auto_map); loading it runs that code: pass "
            "verifier_trust_remote_code=true if you trust it (Qwen2.5-Math-PRM needs this)"
        )
    tag = step_tag if step_tag is not None else FORMATS[kind].step_tag
    name = f"{kind}:{spec}"
    if kind == "qwen_prm":
        model = (AutoModel if remote else AutoModelForTokenClassification).from_pretrained(spec, **kwargs)
        verifier = QwenPRM(model, tokenizer, batch_size=batch_size, name=name)
    elif kind == "value_head":
        model = _loaded(AutoModel, spec, kwargs)
        head = _value_head(spec, model.config.hidden_size, torch_dtype)
        verifier = ValueHeadPRM(model, head, tokenizer, batch_size=batch_size, name=name, separator=tag)
    elif kind == "token_classification":
        model = _loaded(AutoModelForTokenClassification, spec, kwargs)
        verifier = TokenClassificationPRM(model, tokenizer, batch_size=batch_size, name=name, separator=tag)
    elif kind == "outcome":
        model = _loaded(AutoModelForSequenceClassification, spec, kwargs)
        verifier = OutcomeRM(model, tokenizer, batch_size=batch_size, name=name)
    else:
        model = _loaded(AutoModelForCausalLM, spec, kwargs)
        if kind == "math_shepherd":
            verifier = MathShepherdPRM(model, tokenizer, batch_size=batch_size, name=name, tag=tag)
        elif kind == "judge":
            verifier = JudgeVerifier(model, tokenizer, batch_size=batch_size, name=name)
        else:
            verifier = RLHFlowPRM(model, tokenizer, batch_size=batch_size, name=name)
    verifier.default_aggregation = FORMATS[kind].default_aggregation
    if device is not None:
        verifier.model.to(device)
        if kind == "value_head":
            verifier.head.to(device)
        verifier.device = torch.device(device)
    logger.info("verifier: %s (%s format%s, step scores aggregated by %s unless aggregation= says otherwise) on %s",
                spec, kind, " given" if verifier_format else " detected", verifier.default_aggregation, verifier.device)
    return verifier
