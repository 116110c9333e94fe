"""Verifiers: process reward models (two formats), policy likelihood, majority voting."""

from lm_eval_moe.verifiers.base import AGGREGATIONS, StepScores, Verifier, aggregate, split_steps
from lm_eval_moe.verifiers.likelihood import LikelihoodVerifier, MajorityVerifier
from lm_eval_moe.verifiers.loading import VERIFIER_TYPES, VerifierLoadError, guess_verifier_type, load_verifier
from lm_eval_moe.verifiers.prm import PRMFormatError, QwenPRM, RLHFlowPRM

__all__ = [
    "AGGREGATIONS",
    "VERIFIER_TYPES",
    "LikelihoodVerifier",
    "MajorityVerifier",
    "PRMFormatError",
    "QwenPRM",
    "RLHFlowPRM",
    "StepScores",
    "Verifier",
    "VerifierLoadError",
    "aggregate",
    "guess_verifier_type",
    "load_verifier",
    "split_steps",
]
