"""Search strategies (pure algorithms driven by :mod:`lm_eval_moe.search.driver`)."""

from lm_eval_moe.search import beam, best_of_n, des, des_adaptive, dvts
from lm_eval_moe.search.common import Candidate, Problem, SearchConfig, SearchResult

STRATEGIES = {
    "des": des.run,
    "des_adaptive": des_adaptive.run,
    "best_of_n": best_of_n.run,
    "weighted_best_of_n": best_of_n.run,
    "self_consistency": best_of_n.run,
    "beam": beam.run,
    "dvts": dvts.run,
}

__all__ = ["STRATEGIES", "Candidate", "Problem", "SearchConfig", "SearchResult"]
