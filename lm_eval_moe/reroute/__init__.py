"""Online test-time rerouting: router deltas optimised on the context while generating."""

from lm_eval_moe.reroute.adam import ScaledAdam
from lm_eval_moe.reroute.confidence import layer_confidence, layer_weights
from lm_eval_moe.reroute.rerouter import RerouteConfig, RerouteOutcome, Rerouter

__all__ = ["RerouteConfig", "RerouteOutcome", "Rerouter", "ScaledAdam", "layer_confidence", "layer_weights"]
