"""Settings of verifier-guided search (``moe_des``, ``moe_search``), parsed and checked before any model loads.

What each strategy is lives here: its default final rule, whether it needs verifier scores, and which
settings apply to it. A setting given to a strategy that does not use it is refused, never ignored.
M (``keep``) is taken as given by every strategy that keeps states, so DES with one k is beam search for
every N and M; ``beam_width`` is another way to give M (N / width) and must divide N, as must M for DVTS
(its M subtrees each expand N / M candidates).
"""

from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass
from typing import Any

from lm_eval_moe.generation.settings import BackendSettings
from lm_eval_moe.model_args import (
    ExpertCount, ModelArgError, arg, choice, given, optional_positive_int, optional_text, parse_bool, parse_expert_count_set,
    parse_float, parse_int, per_layer, positive_int, take_settings,
)
from lm_eval_moe.moe.settings import RoutingSettings
from lm_eval_moe.reroute.settings import RerouteSettings
from lm_eval_moe.search.common import FINAL_RULES, SearchConfig
from lm_eval_moe.verifiers.base import AGGREGATIONS
from lm_eval_moe.verifiers.settings import VERIFIER_FREE, VerifierSettings


@dataclass(frozen=True)
class Strategy:
    final: str  # default final rule
    needs_scores: bool  # the verifier scores candidates (False: a verifier-free vote)
    uses: frozenset[str]  # search settings beyond the common ones that apply


_STEPWISE = frozenset({"keep", "beam_width", "max_steps", "max_step_tokens"})
STRATEGIES: dict[str, Strategy] = {
    "des": Strategy("prm_best", True, _STEPWISE | {"expert_counts", "rounding", "refill", "finished_compete", "inherit"}),
    # our construction (search/des_adaptive.py): each k's share of N follows its paths' scores so far
    "des_adaptive": Strategy("prm_best", True, _STEPWISE | {"expert_counts", "finished_compete"}),
    "beam": Strategy("prm_best", True, _STEPWISE | {"rounding", "refill"}),
    "dvts": Strategy("prm_best", True, _STEPWISE),
    "best_of_n": Strategy("prm_best", True, frozenset()),
    "weighted_best_of_n": Strategy("weighted", True, frozenset()),
    "self_consistency": Strategy("majority", False, frozenset()),
}
#: settings that only some strategies use (the rest apply to all)
STRATEGY_SPECIFIC = frozenset().union(*(s.uses for s in STRATEGIES.values()))
#: settings of the first rerouting phase that ``reroute=true`` runs on each prompt (reroute_<name>)
REROUTE_PRIMING = ("steps", "lr", "layer_selection", "layer_fraction", "confidence_order", "weight_decay", "eps",
                   "loss_window", "gradient_checkpointing")


def _delimiter(name: str, value: object) -> str:
    decoded = codecs.decode(str(value), "unicode_escape")
    if not decoded:
        raise ModelArgError(f"model arg {name}={value!r}: the step delimiter cannot be empty")
    return decoded


@dataclass(frozen=True)
class SearchSettings(RoutingSettings, BackendSettings, VerifierSettings):
    strategy: str = arg("best_of_n", choice(*STRATEGIES), "search strategy: " + ", ".join(STRATEGIES))
    budget: int = arg(32, positive_int, "N: samples per round")
    keep: int | None = arg(None, optional_positive_int, "M: states kept per round (default N/4, rounded down)")
    beam_width: int | None = arg(None, optional_positive_int, "N / M, another way to give M")
    max_steps: int = arg(10, positive_int, "T: steps; the last is generated to EOS")
    expert_counts: tuple[ExpertCount, ...] | None = arg(
        None, parse_expert_count_set, "K for DES: 4-11, 4|6|8, a JSON list, per layer 4:4:6:6|8:8:8:8")
    temperature: float = arg(0.8, parse_float, "sampling temperature")
    top_p: float = arg(1.0, parse_float, "nucleus sampling")
    top_k: int = arg(0, lambda name, value: parse_int(name, value, minimum=0), "top-k sampling (0: off)")
    step_delimiter: str = arg("\n\n", _delimiter, "end of a reasoning step")
    max_step_tokens: int = arg(512, positive_int, "token cap per step")
    max_tokens: int | None = arg(None, optional_positive_int, "token cap per candidate (default: max_gen_toks)")
    aggregation: str = arg("last", choice(*AGGREGATIONS), "step scores to one score")
    final: str | None = arg(None, lambda name, value: choice(*FINAL_RULES)(name, value), "final answer rule")
    rounding: str = arg("round_robin", choice("round_robin", "floor"), "when N / |states| is not whole")
    refill: str = arg("replicate", choice("replicate", "none"), "fewer than M live states: spend N on them, or not")
    finished_compete: bool = arg(False, parse_bool, "finished candidates compete for Top_M")
    inherit: bool = arg(True, parse_bool, "DES: children keep their parent's k")
    seed: int = arg(1234, parse_int, "seed (searches are seeded per document)")
    cache_mode: str = arg("auto", choice("auto", "reuse", "reread"), "continue cached prefixes or re-read them")
    prompt_expert_count: str = arg("path", choice("path", "default"), "read the prompt with the path's k or the model's")
    search_batch_size: int = arg(4, positive_int, "problems searched together")
    trace_path: str | None = arg(None, optional_text, "JSONL search trace per problem")
    reroute: bool = arg(False, parse_bool, "one rerouting Phase 1 on each prompt before the search")
    reroute_settings: RerouteSettings | None = None  # the reroute_<name> model args, when reroute=true

    def __post_init__(self) -> None:
        VerifierSettings.__post_init__(self)
        rules = STRATEGIES[self.strategy]
        for name in sorted(STRATEGY_SPECIFIC - rules.uses):
            if given(self, name):
                raise ModelArgError(f"model arg {name} does not apply to strategy={self.strategy} (it applies to "
                                    f"{', '.join(s for s, r in STRATEGIES.items() if name in r.uses)})")
        if self.keep is not None and self.beam_width is not None:
            raise ModelArgError("give keep (M) or beam_width (N / M), not both")
        if self.beam_width is not None and self.budget % self.beam_width:
            raise ModelArgError(f"model arg beam_width={self.beam_width} does not divide budget={self.budget}")
        if self.strategy == "dvts" and self.budget % self.kept_states:
            raise ModelArgError(f"strategy=dvts runs M={self.kept_states} subtrees of N/M candidates: M must divide "
                                f"budget={self.budget}")
        if not 1 <= self.kept_states <= self.budget:
            raise ModelArgError(f"model arg keep={self.keep}: must be in 1..budget ({self.budget})")
        if rules.needs_scores and self.verifier is None:
            raise ModelArgError(f"strategy={self.strategy} needs a verifier: a PRM (local path or hub id), or "
                                f"{' / '.join(VERIFIER_FREE)}")
        if not rules.needs_scores and self.verifier not in (None, "majority"):
            raise ModelArgError(f"strategy={self.strategy} votes without a verifier: verifier={self.verifier} "
                                "would not be used")
        if self.final is not None and self.final_rule != self.final:
            raise ModelArgError(f"model arg final={self.final}: strategy={self.strategy} with verifier="
                                f"{self.verifier} decides by {self.final_rule}")
        if not self.reroute and self.reroute_settings is not None:
            raise ModelArgError("reroute_* model args need reroute=true")
        if self.reroute and self.backend == "vllm":
            raise ModelArgError("reroute=true needs router-logit biases, which backend=vllm does not have: use backend=hf")
        if self.backend == "vllm" and given(self, "prompt_expert_count"):
            raise ModelArgError("backend=vllm reads every prefix under its path's k: prompt_expert_count=path only")
        if not 0 < self.top_p <= 1 or self.temperature < 0:
            raise ModelArgError(f"temperature={self.temperature} must be >= 0 and top_p={self.top_p} in (0, 1]")

    @property
    def kept_states(self) -> int:
        """M."""
        if self.keep is not None:
            return self.keep
        if self.beam_width is not None:
            return self.budget // self.beam_width
        return max(1, self.budget // 4)

    @property
    def final_rule(self) -> str:
        """The strategy's rule; a verifier-free vote when verifier=majority."""
        return "majority" if self.verifier == "majority" else self.final or STRATEGIES[self.strategy].final

    def search_config(self, default_counts: list[int], num_experts: int, max_tokens: int) -> SearchConfig:
        """The algorithm's configuration for a model with these per-layer default k and routed experts."""
        layers = len(default_counts)
        counts: tuple[tuple[int, ...], ...] = ()
        if "expert_counts" in STRATEGIES[self.strategy].uses:
            members = self.expert_counts or default_expert_count_set(default_counts[0], num_experts)
            counts = tuple(per_layer(k, layers, num_experts, "expert_counts") for k in members)
        return SearchConfig(
            budget=self.budget, keep=self.kept_states, max_steps=self.max_steps, expert_counts=counts,
            max_step_tokens=self.max_step_tokens, max_tokens=self.max_tokens or max_tokens,
            aggregation=self.aggregation, final=self.final_rule,  # type: ignore[arg-type]
            rounding=self.rounding, refill=self.refill,  # type: ignore[arg-type]
            finished_compete=self.finished_compete, inherit=self.inherit,
            needs_scores=STRATEGIES[self.strategy].needs_scores and self.verifier != "majority",
        )


def default_expert_count_set(k: int, num_experts: int) -> tuple[int, ...]:
    """The paper's shape around the model's k: {k-4 .. k+3} clipped to 1..num_experts (our choice; the paper
    used {4..11} with k = 8)."""
    return tuple(range(max(1, k - 4), min(num_experts, k + 3) + 1))


def search_settings(model_args: dict[str, Any], default_strategy: str) -> SearchSettings:
    """The search settings in ``model_args`` (removed from it), ``reroute_<name>`` ones included."""
    model_args.setdefault("strategy", default_strategy)
    names = [f"reroute_{name}" for name in REROUTE_PRIMING]
    priming = {name.removeprefix("reroute_"): model_args.pop(name) for name in names if name in model_args}
    settings = take_settings(SearchSettings, model_args)
    if priming or settings.reroute:
        settings = dataclasses.replace(settings, reroute_settings=take_settings(RerouteSettings, priming))
    return settings


def search_arg_names() -> list[str]:
    from lm_eval_moe.model_args import arg_names

    return arg_names(SearchSettings) + [f"reroute_{name}" for name in REROUTE_PRIMING]
