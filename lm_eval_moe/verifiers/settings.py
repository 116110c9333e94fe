"""Which verifier scores the search's paths, and where it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import (
    ModelArgError, ModelArgSettings, arg, choice, optional_text, parse_bool, positive_int,
)

VERIFIER_TYPES = ("qwen_prm", "rlhflow_prm")
VERIFIER_FREE = ("majority", "likelihood")


def _verifier_type(name: str, value: object) -> str | None:
    return None if value is None else choice(*VERIFIER_TYPES)(name, value)


@dataclass(frozen=True)
class VerifierSettings(ModelArgSettings):
    """All load-time: the verifier is loaded with the policy (a sweep keeps it)."""

    verifier: str | None = arg(None, optional_text, "PRM path or hub id, majority, or likelihood", load_time=True)
    verifier_type: str | None = arg(None, _verifier_type, "qwen_prm or rlhflow_prm (default: guessed)", load_time=True)
    verifier_device: str | None = arg(None, optional_text, "device of the PRM (default: the policy's)",
                                      load_time=True)
    verifier_dtype: str | None = arg(None, optional_text, "dtype of the PRM (default: auto)", load_time=True)
    verifier_batch_size: int = arg(8, positive_int, "PRM batch size", load_time=True)
    verifier_trust_remote_code: bool = arg(False, parse_bool, "run the PRM's own modelling code", load_time=True)

    def loaded_files(self) -> dict[str, Any]:
        from lm_eval_moe.checkpoints import resolve_checkpoint

        if self.verifier in (None, *VERIFIER_FREE):
            return {}
        return {"verifier": resolve_checkpoint(self.verifier, "verifier")}

    def __post_init__(self) -> None:
        if self.verifier in VERIFIER_FREE and (self.verifier_type or self.verifier_device or self.verifier_dtype):
            raise ModelArgError(f"verifier={self.verifier} is not a model: verifier_type, verifier_device and "
                                "verifier_dtype do not apply")
