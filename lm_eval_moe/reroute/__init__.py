"""Online test-time rerouting: router deltas optimised on the context while generating; the C3PO baseline."""

from lm_eval_moe.reroute.adam import ScaledAdam
from lm_eval_moe.reroute.confidence import layer_confidence, layer_weights
from lm_eval_moe.reroute.rerouter import RerouteOutcome, Rerouter
from lm_eval_moe.reroute.settings import C3POSettings, RerouteSettings

__all__ = ["C3POSettings", "RerouteOutcome", "RerouteSettings", "Rerouter", "ScaledAdam", "layer_confidence",
           "layer_weights"]
