"""Verifiers: process reward models and outcome reward models in the formats of ``formats.py``, a generative
judge, the policy's likelihood, majority voting."""

from lm_eval_moe.verifiers.base import AGGREGATIONS, StepScores, Verifier, aggregate, split_steps
from lm_eval_moe.verifiers.formats import FORMATS, VERIFIER_FORMATS, detect_format
from lm_eval_moe.verifiers.likelihood import LikelihoodVerifier, MajorityVerifier
from lm_eval_moe.verifiers.loading import VerifierLoadError, load_verifier
from lm_eval_moe.verifiers.prm import PRMFormatError, QwenPRM, RLHFlowPRM
from lm_eval_moe.verifiers.tagged import MathShepherdPRM, TokenClassificationPRM, ValueHeadPRM
from lm_eval_moe.verifiers.whole import JudgeVerifier, OutcomeRM

__all__ = [
    "AGGREGATIONS",
    "FORMATS",
    "VERIFIER_FORMATS",
    "JudgeVerifier",
    "LikelihoodVerifier",
    "MajorityVerifier",
    "MathShepherdPRM",
    "OutcomeRM",
    "PRMFormatError",
    "QwenPRM",
    "RLHFlowPRM",
    "StepScores",
    "TokenClassificationPRM",
    "ValueHeadPRM",
    "Verifier",
    "VerifierLoadError",
    "aggregate",
    "detect_format",
    "load_verifier",
    "split_steps",
]
