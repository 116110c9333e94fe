"""Settings of verifier-guided search (``moe_des``, ``moe_search``), parsed and checked before any model loads.

What each strategy is (its default final rule, whether it needs verifier scores, which settings apply to
it) is its record in ``search/strategies.py``. A setting given to a strategy that does not use it is
refused, never ignored.
M (``keep``) is taken as given by every strategy that keeps states, so DES with one k is beam search for
every N and M; ``beam_width`` is another way to give M (N / width) and must divide N, as must M for DVTS
(its M subtrees each expand N / M candidates).
"""

from __future__ import annotations

import codecs
import dataclasses
from dataclasses import dataclass
from typing import Any

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.generation.sampling import SamplingConfig
from lm_eval_moe.generation.settings import BackendSettings
from lm_eval_moe.model_args import (
    ExpertCount, ModelArgError, arg, arg_names, choice, optional_positive_int, optional_text, parse_bool,
    parse_expert_count_set, parse_float, parse_int, per_layer, positive_int, take_settings,
)
from lm_eval_moe.moe.settings import RoutingSettings, default_top_k, routed_experts
from lm_eval_moe.reroute.settings import RerouteSettings
from lm_eval_moe.search.common import FINAL_RULES, SearchConfig
from lm_eval_moe.search.strategies import STRATEGIES, STRATEGY_SPECIFIC
from lm_eval_moe.verifiers.base import AGGREGATIONS
from lm_eval_moe.verifiers.settings import VERIFIER_FREE, VerifierSettings


SAMPLING_ARGS = ("temperature", "top_p", "top_k")
#: settings of the first rerouting phase that ``reroute=true`` runs on each prompt (reroute_<name>)
REROUTE_PRIMING = ("steps", "lr", "layer_selection", "layer_fraction", "layer_weighting", "confidence_order",
                   "weight_decay", "eps", "loss_window", "loss_reduction", "gradient_checkpointing")


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
        None, parse_expert_count_set, "K for DES: 4-11, 4|6|8, a JSON list, per layer 4:4:6:6|8:8:8:8",
        expert_counts="K")
    temperature: float = arg(0.8, parse_float, "sampling temperature")
    top_p: float = arg(1.0, parse_float, "nucleus sampling")
    top_k: int = arg(0, lambda name, value: parse_int(name, value, minimum=0), "top-k sampling (0: off)")
    step_delimiter: str = arg("\n\n", _delimiter, "end of a reasoning step")
    max_step_tokens: int = arg(512, positive_int, "token cap per step")
    max_tokens: int | None = arg(None, optional_positive_int, "token cap per candidate (default: max_gen_toks)")
    aggregation: str | None = arg(None, lambda name, value: None if value is None else choice(*AGGREGATIONS)(name, value),
                                  f"step scores to one score: {', '.join(AGGREGATIONS)} (default: the verifier "
                                  "format's rule)")
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
            if self.is_given(name):
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
        if self.backend == "vllm" and self.is_given("prompt_expert_count"):
            raise ModelArgError("backend=vllm reads every prefix under its path's k: prompt_expert_count=path only")
        uses_k_set = "expert_counts" in rules.uses
        if uses_k_set and self.expert_counts is not None:
            self._check_budget_covers(len(self.expert_counts), "expert_counts")
        if self.strategy == "weighted_best_of_n" and self.verifier == "majority":
            raise ModelArgError("strategy=weighted_best_of_n weights votes by verifier scores: verifier=majority has "
                                "none (use self_consistency, or a PRM)")
        if not 0 < self.top_p <= 1 or self.temperature < 0:
            raise ModelArgError(f"temperature={self.temperature} must be >= 0 and top_p={self.top_p} in (0, 1]")

    def _check_budget_covers(self, members: int, source: str) -> None:
        """Every k of K must get a path: with N < |K| the first round leaves some k out (``rounding=floor``:
        all of them), while the results would claim K."""
        if self.budget < members:
            raise ModelArgError(f"budget={self.budget} is below the {members} expert counts of K ({source}): "
                                f"strategy={self.strategy} gives each k at least one path, so some k would never "
                                f"run; use budget >= {members} or a smaller K")

    def check_against(self, config: Any) -> None:
        """Every k in range (RoutingSettings), and a budget that covers the default K the model's k implies."""
        super().check_against(config)
        if "expert_counts" in STRATEGIES[self.strategy].uses and self.expert_counts is None:
            k, experts = default_top_k(config), routed_experts(config)
            if k is not None and experts is not None:
                self._check_budget_covers(len(default_expert_count_set(k, experts)), f"the default around k={k}")

    def sampling(self, request: dict[str, Any]) -> tuple[SamplingConfig, bool]:
        """The sampling of a request with these generation kwargs, and whether it is the model args' own: a
        search samples by nature, so a request asking for greedy decoding (our tasks' default) gets the model
        args' sampling; one asking for sampling gets its ``temperature`` / ``top_p`` / ``top_k``, and a value
        the user ALSO gave as a model arg (whatever that value) must agree with it."""
        if not request.get("do_sample"):
            return SamplingConfig(self.temperature, self.top_p, self.top_k), True
        requested = {name: request[name] for name in SAMPLING_ARGS if name in request}
        for name, value in requested.items():
            if self.is_given(name) and float(getattr(self, name)) != float(value):
                raise ModelArgError(f"sampling {name} is given twice: {value} in the generation kwargs and "
                                    f"{getattr(self, name)} in the model args")
        values = {name: getattr(self, name) for name in SAMPLING_ARGS} | requested
        return SamplingConfig(float(values["temperature"]), float(values["top_p"]), int(values["top_k"] or 0)), False

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

    @classmethod
    def from_model_args(cls, model_args: dict[str, Any]) -> SearchSettings:
        """The search settings in ``model_args`` (removed from it), ``reroute_<name>`` ones included; a shipped
        verifier's name is resolved (a misspelt one is an error now, not after loading the policy)."""
        priming = {name.removeprefix("reroute_"): model_args.pop(name)
                   for name in [f"reroute_{name}" for name in REROUTE_PRIMING] if name in model_args}
        settings = take_settings(cls, model_args)
        if priming or settings.reroute:
            settings = dataclasses.replace(settings, reroute_settings=take_settings(RerouteSettings, priming))
        if settings.verifier not in (None, *VERIFIER_FREE):
            resolve_checkpoint(settings.verifier, "verifier")
        return settings

    @classmethod
    def arg_names(cls) -> list[str]:
        return [*arg_names(cls), *(f"reroute_{name}" for name in REROUTE_PRIMING)]

    def search_config(self, default_counts: list[int], num_experts: int, max_tokens: int,
                      default_aggregation: str = "last") -> SearchConfig:
        """The algorithm's configuration for a model with these per-layer default k and routed experts, and a
        verifier whose format aggregates its step scores by ``default_aggregation`` unless ``aggregation`` is given."""
        layers = len(default_counts)
        counts: tuple[tuple[int, ...], ...] = ()
        if "expert_counts" in STRATEGIES[self.strategy].uses:
            members = self.expert_counts or default_expert_count_set(default_counts[0], num_experts)
            counts = tuple(per_layer(k, layers, num_experts, "expert_counts") for k in members)
        return SearchConfig(
            budget=self.budget, keep=self.kept_states, max_steps=self.max_steps, expert_counts=counts,
            max_step_tokens=self.max_step_tokens, max_tokens=self.max_tokens or max_tokens,
            aggregation=self.aggregation or default_aggregation, final=self.final_rule,  # type: ignore[arg-type]
            rounding=self.rounding, refill=self.refill,  # type: ignore[arg-type]
            finished_compete=self.finished_compete, inherit=self.inherit,
            needs_scores=STRATEGIES[self.strategy].needs_scores and self.verifier != "majority",
        )


def default_expert_count_set(k: int, num_experts: int) -> tuple[int, ...]:
    """The paper's shape around the model's k: {k-4 .. k+3} clipped to 1..num_experts (our choice; the paper
    used {4..11} with k = 8)."""
    return tuple(range(max(1, k - 4), min(num_experts, k + 3) + 1))
