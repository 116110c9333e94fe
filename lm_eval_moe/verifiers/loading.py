"""Build a verifier from a model arg: a PRM path or hub id, ``majority`` or ``likelihood``."""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.verifiers.likelihood import LikelihoodVerifier, MajorityVerifier
from lm_eval_moe.verifiers.prm import QWEN_STEP_TOKEN, QwenPRM, RLHFlowPRM

logger = logging.getLogger(__name__)

VerifierType = Literal["qwen_prm", "rlhflow_prm"]
VERIFIER_TYPES = ("qwen_prm", "rlhflow_prm")


class VerifierLoadError(ValueError):
    """The verifier argument cannot be turned into a verifier."""


def guess_verifier_type(config: Any, tokenizer: Any) -> VerifierType:
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "ProcessRewardModel" in architectures or "TokenClassification" in architectures:
        return "qwen_prm"
    if QWEN_STEP_TOKEN in tokenizer.get_vocab():
        return "qwen_prm"
    if "CausalLM" in architectures:
        return "rlhflow_prm"
    raise VerifierLoadError(
        f"cannot tell the PRM format of a checkpoint with architectures {architectures or 'unknown'!r}: "
        f"pass verifier_type={' or '.join(VERIFIER_TYPES)}"
    )


def load_verifier(
    spec: str,
    verifier_type: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    batch_size: int = 8,
    trust_remote_code: bool = False,
):
    """``spec``: ``majority``, ``likelihood``, or a PRM checkpoint (local path or hub id)."""
    if spec in ("majority", "likelihood"):
        return MajorityVerifier() if spec == "majority" else LikelihoodVerifier()
    spec = resolve_checkpoint(spec)
    if verifier_type is not None and verifier_type not in VERIFIER_TYPES:
        raise VerifierLoadError(f"verifier_type={verifier_type!r}: expected one of {', '.join(VERIFIER_TYPES)}")
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
    kind = verifier_type or guess_verifier_type(config, tokenizer)
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
    if kind == "qwen_prm":
        loader = AutoModel if remote else AutoModelForTokenClassification
        model = loader.from_pretrained(spec, **kwargs)
        verifier = QwenPRM(model, tokenizer, batch_size=batch_size, name=f"qwen_prm:{spec}")
    else:
        model = AutoModelForCausalLM.from_pretrained(spec, **kwargs)
        verifier = RLHFlowPRM(model, tokenizer, batch_size=batch_size, name=f"rlhflow_prm:{spec}")
    if device is not None:
        verifier.model.to(device)
        verifier.device = torch.device(device)
    logger.info("verifier: %s (%s format) on %s", spec, kind, verifier.device)
    return verifier
