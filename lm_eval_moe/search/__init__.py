"""Search strategies (pure algorithms driven by :mod:`lm_eval_moe.search.driver`)."""

from lm_eval_moe.search.common import Candidate, Problem, SearchConfig, SearchResult
from lm_eval_moe.search.strategies import STRATEGIES, StrategySpec

__all__ = ["STRATEGIES", "Candidate", "Problem", "SearchConfig", "SearchResult", "StrategySpec"]
