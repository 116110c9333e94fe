"""Which verifier scores the search's paths, and where it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import (
    ModelArgError, ModelArgSettings, arg, choice, optional_text, parse_bool, positive_int,
)

#: the verifier formats (lm_eval_moe/verifiers/formats.py; named here so that parsing imports no model code)
VERIFIER_FORMATS = ("qwen_prm", "value_head", "token_classification", "outcome", "math_shepherd", "rlhflow_prm", "judge")
VERIFIER_FREE = ("majority", "likelihood")
#: the formats that read a score at a marker after each step
TAGGED_FORMATS = ("math_shepherd", "value_head", "token_classification")


def _verifier_format(name: str, value: object) -> str | None:
    return None if value is None else choice(*VERIFIER_FORMATS)(name, value)


@dataclass(frozen=True)
class VerifierSettings(ModelArgSettings):
    """All load-time: the verifier is loaded with the policy (a sweep keeps it)."""

    verifier: str | None = arg(None, optional_text, "PRM path or hub id, majority, or likelihood", load_time=True)
    verifier_format: str | None = arg(None, _verifier_format, f"{', '.join(VERIFIER_FORMATS)} (default: detected "
                                      "from the checkpoint; judge is never guessed)", load_time=True)
    verifier_step_tag: str | None = arg(None, optional_text, "the marker after each step of math_shepherd (ки), "
                                        "value_head and token_classification (a newline)", load_time=True)
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
        if self.verifier in VERIFIER_FREE and (self.verifier_format or self.verifier_device or self.verifier_dtype
                                               or self.verifier_step_tag):
            raise ModelArgError(f"verifier={self.verifier} is not a model: verifier_format, verifier_step_tag, "
                                "verifier_device and verifier_dtype do not apply")
        if self.verifier_step_tag is not None and self.verifier_format not in (None, *TAGGED_FORMATS):
            raise ModelArgError(f"verifier_step_tag applies to {', '.join(TAGGED_FORMATS)}, not to "
                                f"verifier_format={self.verifier_format}")
