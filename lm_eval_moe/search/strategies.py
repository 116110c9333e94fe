"""The search strategies, one record each: its algorithm, its default final rule, whether a verifier scores
its paths, and the settings it takes beyond the common ones (a setting given to a strategy that does not
use it is refused, never ignored: ``search/settings.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_moe.search import beam, best_of_n, des, des_adaptive, dvts
from lm_eval_moe.search.common import FinalRule, SearchAlgorithm

#: the settings of strategies that grow paths step by step
STEPWISE = frozenset({"keep", "beam_width", "max_steps", "max_step_tokens"})


@dataclass(frozen=True)
class StrategySpec:
    algorithm: SearchAlgorithm
    final: FinalRule  # default final rule
    needs_scores: bool  # the verifier scores candidates (False: a verifier-free vote)
    uses: frozenset[str]  # search settings beyond the common ones that apply

    @property
    def stepwise(self) -> bool:
        """Whether the strategy expands paths one reasoning step per round (else one round of whole samples)."""
        return "max_steps" in self.uses


STRATEGIES: dict[str, StrategySpec] = {
    "des": StrategySpec(des.run, "prm_best", True,
                        STEPWISE | {"expert_counts", "rounding", "refill", "finished_compete", "inherit"}),
    # our construction (search/des_adaptive.py): each k's share of N follows its paths' scores so far
    "des_adaptive": StrategySpec(des_adaptive.run, "prm_best", True, STEPWISE | {"expert_counts", "finished_compete"}),
    "beam": StrategySpec(beam.run, "prm_best", True, STEPWISE | {"rounding", "refill"}),
    "dvts": StrategySpec(dvts.run, "prm_best", True, STEPWISE),
    "best_of_n": StrategySpec(best_of_n.run, "prm_best", True, frozenset()),
    "weighted_best_of_n": StrategySpec(best_of_n.run, "weighted", True, frozenset()),
    "self_consistency": StrategySpec(best_of_n.run, "majority", False, frozenset()),
}
#: settings that only some strategies use (the rest apply to all)
STRATEGY_SPECIFIC = frozenset().union(*(spec.uses for spec in STRATEGIES.values()))
