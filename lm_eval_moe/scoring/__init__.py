"""Answer checking: math answers, multiple choice, and (in ``code/``) sandboxed code execution."""

from lm_eval_moe.scoring.checkers import (
    CHECKERS, Verdict, check_aime, check_math, check_numeric, choice_checker, majority_key,
)
from lm_eval_moe.scoring.metrics import majority_index, sample_metrics

__all__ = [
    "CHECKERS",
    "Verdict",
    "check_aime",
    "check_math",
    "check_numeric",
    "choice_checker",
    "majority_key",
    "majority_index",
    "sample_metrics",
]
