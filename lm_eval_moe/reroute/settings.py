"""Settings of online test-time rerouting (``moe_rerouting``) and of the C3PO baseline (``moe_c3po``).

Paper defaults where the paper states them (T = 5, lr 0.05, m = 128, soft selection, Adam eps 1e-5, weight
decay 1e-8); ``layer_fraction`` (r of hard selection and of the ablations) is our choice (docs/METHODS.md 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lm_eval_moe.model_args import (
    ModelArgError, ModelArgSettings, arg, choice, optional_positive_int, parse_bool, parse_float, parse_int,
    positive_int, text,
)
from lm_eval_moe.generation.settings import PlainSettings
from lm_eval_moe.moe.settings import RoutingSettings
from lm_eval_moe.reroute.confidence import SELECTIONS


@dataclass(frozen=True)
class RerouteSettings(ModelArgSettings):
    steps: int = arg(5, lambda name, value: parse_int(name, value, minimum=0), "T: Adam steps per Phase 1")
    lr: float = arg(0.05, parse_float, "learning rate of the router deltas")
    interval: int = arg(128, positive_int, "m: tokens generated between two Phase 1 updates")
    layer_selection: str = arg("soft", choice(*SELECTIONS), "which layers move: " + ", ".join(SELECTIONS))
    layer_fraction: float = arg(0.25, parse_float, "r: share of layers for hard selection and the ablations")
    layer_weighting: str = arg("lr", choice("lr", "gradient"),
                               "how the layer weights act: scale each layer's Adam step (lr, Section 3.3) or its "
                               "gradient before Adam (gradient, Eq. 7 and Algorithm 1)")
    confidence_order: str = arg("paper", choice("paper", "inverse"), "router confidence as written, or reversed")
    weight_decay: float = arg(1e-8, parse_float, "Adam weight decay")
    eps: float = arg(1e-5, parse_float, "Adam eps")
    loss_window: int | None = arg(None, optional_positive_int, "loss over the last W context tokens only")
    loss_reduction: str = arg("mean", choice("mean", "sum"),
                              "each sample's next-token loss: mean over its tokens, or sum (the paper's -sum log p)")
    gradient_checkpointing: bool = arg(False, parse_bool, "recompute decoder layers in the backward pass")
    seed: int = arg(1234, parse_int, "seed of sampling and of random layer selection (per document)")
    pathway_stats: bool = arg(False, parse_bool, "diagnostic: expert-pathway edit distance and router confidence "
                              "per layer, base vs final deltas (two extra forwards, not counted as cost)")

    def __post_init__(self) -> None:
        if self.lr < 0:
            raise ModelArgError(f"model arg lr={self.lr}: must be >= 0")
        if self.loss_window is not None and self.loss_window < 2:
            raise ModelArgError(f"model arg loss_window={self.loss_window}: must be >= 2 tokens")
        if self.layer_selection in ("hard", "last", "random") and not 0 < self.layer_fraction <= 1:
            raise ModelArgError(f"model arg layer_fraction={self.layer_fraction}: must be in (0, 1]")


@dataclass(frozen=True)
class C3POSettings(ModelArgSettings):
    references: str = arg("", text, "reference set file written by `lm-eval-moe c3po-build`")
    alpha: float = arg(0.5, parse_float, "weight of the neighbours' routing in the mix, in [0, 1]")
    neighbours: int = arg(3, positive_int, "nearest references averaged")
    bandwidth: float = arg(0.1, parse_float, "kernel bandwidth: weights exp(cosine / bandwidth)")

    def loaded_files(self) -> dict[str, Any]:
        return {"references": self.references}

    def __post_init__(self) -> None:
        if not self.references:
            raise ModelArgError("moe_c3po needs references=<file built by `lm-eval-moe c3po-build`>")
        if not 0.0 <= self.alpha <= 1.0:
            raise ModelArgError(f"model arg alpha={self.alpha}: expected a mixing weight in [0, 1]")
        if self.bandwidth <= 0:
            raise ModelArgError(f"model arg bandwidth={self.bandwidth}: must be > 0")


@dataclass(frozen=True)
class RerouteMethodSettings(RoutingSettings, RerouteSettings):
    """``moe_reroute``: rerouting at the model's (or a chosen) k."""


@dataclass(frozen=True)
class C3POMethodSettings(PlainSettings, C3POSettings):
    """``moe_c3po``: plain generation with the references' routing mixed in, per batch."""

    def __post_init__(self) -> None:
        C3POSettings.__post_init__(self)
        if self.backend == "vllm":
            raise ModelArgError("moe_c3po changes routing per batch, which backend=vllm cannot: use backend=hf")
