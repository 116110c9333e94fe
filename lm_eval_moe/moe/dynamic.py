"""Dynamic MoE: expert count, router bias and routing records on a loaded transformers model.

:class:`DynamicMoE` replaces the ``forward`` of every router instance with :func:`route`, which
reproduces the stock routing exactly and reads the run-time knobs from this object:

* expert count k: global, per MoE layer, and per sequence of the batch (``row_expert_counts``). A batch of
  mixed k is routed at the largest k with the extra ranks masked (weight 0, an id the experts skip). For blocks
  of at least :data:`PAIRS_MIN_TOKENS` tokens (a prefill) the experts module then receives only the selected
  (token, expert) pairs, as one pair per row (k = 1), and their outputs are summed back per token: its work
  (sorting, gathers, activations, GEMM rows) follows the k each token uses, not the largest. Smaller blocks (a
  decode step) keep the masked call, whose bookkeeping costs less than the rows it would save;
* an additive router-logit bias per layer, shared or per sequence, differentiable;
* routing records on demand (``with moe.record() as rec:``); a ``None`` check when off.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lm_eval_moe.model_args import ModelArgError, check_expert_count_range, expert_count_label
from lm_eval_moe.moe.families import FamilySpec, UnsupportedModelError, config_family
from lm_eval_moe.moe.records import LayerRouting, RoutingRecorder
from lm_eval_moe.moe.routing import RoutingRule, route
from lm_eval_moe.moe.settings import text_config

logger = logging.getLogger(__name__)

#: a mixed-k block of at least this many tokens hands the experts its selected pairs only (bench_mixed_k.py
#: measures both ways)
PAIRS_MIN_TOKENS = 64


class ExpertCountError(ValueError):
    """An expert count outside 1..num_routed_experts, or of the wrong shape."""


@dataclass
class MoELayer:
    """One routed MoE layer of the model."""

    index: int  # position among the MoE layers (dense layers are not counted)
    name: str  # module path of the router
    router: nn.Module
    experts: nn.Module | None
    num_experts: int
    default_expert_count: int
    rule: RoutingRule
    skippable_index: int | None  # id the experts module can skip, or None (then duplicate the top expert)
    takes_selected_pairs: bool = False  # its experts module takes (hidden, index, weights): callable on selected pairs


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def resolve_family(model: nn.Module) -> FamilySpec:
    return config_family(model.config, _model_type(model))


def _skippable_index(experts: nn.Module | None, num_experts: int) -> int | None:
    """Expert id that the experts module skips, if it has one (transformers' experts interface)."""
    if experts is not None and hasattr(experts, "_is_expert_parallel"):
        experts._is_expert_parallel = True  # eager skips id num_experts anyway; grouped/batched_mm need it
        return num_experts
    return None


class DynamicMoE:
    """Run-time control of a MoE model's routing (see module docstring).

    renormalize: ``None`` keeps each family's rule; ``True``/``False`` overrides it (docs/METHODS.md 1).
    """

    def __init__(self, model: nn.Module, renormalize: bool | None = None) -> None:
        self.model = model
        self.renormalize = renormalize
        self.family = resolve_family(model)
        self.shared_experts = self.family.shared_experts(text_config(model.config))
        self.layers = self._find_layers(renormalize)
        self._layer_k = [layer.default_expert_count for layer in self.layers]
        self._row_k: torch.Tensor | None = None  # (batch, layers) long
        self._row_uniform: list[int | None] = []
        self._token_k_cache: tuple[int, torch.Tensor] | None = None
        self._pairs_cache: tuple[int, torch.device, list] | None = None
        self._pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> its block's selected pairs
        self._bias: torch.Tensor | None = None  # (layers, experts) or (batch, layers, experts)
        self._mix: tuple[float, dict[int, torch.Tensor]] | None = None  # alpha, layer -> (experts,) or (batch, experts)
        self._recorder: RoutingRecorder | None = None
        for layer in self.layers:
            layer.router.forward = types.MethodType(self._make_forward(layer), layer.router)
            if layer.takes_selected_pairs:
                layer.experts.forward = self._make_experts_forward(layer, layer.experts.forward)
        model._lm_eval_moe = self  # type: ignore[attr-defined]
        logger.info(
            "Dynamic MoE on %s: %d MoE layers, %d routed experts, default k=%s, renormalise=%s",
            self.family.name,
            len(self.layers),
            self.num_experts,
            expert_count_label(self.default_k),
            "model rule" if renormalize is None else renormalize,
        )

    # ------------------------------------------------------------------ discovery
    def _find_layers(self, renormalize: bool | None) -> list[MoELayer]:
        modules = dict(self.model.named_modules())
        layers: list[MoELayer] = []
        for name, module in modules.items():
            if type(module).__name__ not in self.family.router_classes:
                continue
            parent = modules.get(name.rsplit(".", 1)[0]) if "." in name else None
            experts = getattr(parent, "experts", None)
            rule = self.family.rule(module)
            if renormalize is not None:
                rule = dataclasses.replace(rule, renormalize=renormalize)
            num_experts = int(module.num_experts)
            layers.append(
                MoELayer(
                    index=len(layers),
                    name=name,
                    router=module,
                    experts=experts,
                    num_experts=num_experts,
                    default_expert_count=int(module.top_k),
                    rule=rule,
                    skippable_index=_skippable_index(experts, num_experts),
                    takes_selected_pairs=experts is not None and hasattr(experts, "_is_expert_parallel"),
                )
            )
        if not layers:
            raise UnsupportedModelError(
                f"no {self.family.name} router ({', '.join(self.family.router_classes)}) found in "
                f"{type(self.model).__name__}: the model has no routed MoE layer"
            )
        return layers

    # ------------------------------------------------------------------ properties
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_experts(self) -> int:
        """Routed experts per layer (the same in every layer of every supported checkpoint we know)."""
        counts = {layer.num_experts for layer in self.layers}
        if len(counts) != 1:
            raise ValueError(f"routed expert counts differ across layers: {sorted(counts)}")
        return counts.pop()

    @property
    def default_k(self) -> list[int]:
        """The model's own k, per MoE layer."""
        return [layer.default_expert_count for layer in self.layers]

    @property
    def current_k(self) -> list[int]:
        """The k in force, per MoE layer (per-sequence counts, when set, take precedence)."""
        return list(self._layer_k)

    @property
    def row_expert_counts(self) -> torch.Tensor | None:
        return None if self._row_k is None else self._row_k.clone()

    # ------------------------------------------------------------------ expert counts
    def _check_count(self, value: int, layer: MoELayer) -> int:
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        try:
            check_expert_count_range([value], layer.num_experts, f"expert_count (MoE layer {layer.index})")
        except ModelArgError as error:
            raise ExpertCountError(str(error)) from None
        return value

    def per_layer_k(self, expert_count: int | Sequence[int] | None) -> list[int]:
        """Validate a global or per-layer k and expand it to one value per MoE layer."""
        if expert_count is None:
            return self.default_k
        if isinstance(expert_count, (int, float)):  # bool included: rejected by _check_count
            return [self._check_count(expert_count, layer) for layer in self.layers]
        counts = list(expert_count)  # type: ignore[arg-type]
        if len(counts) != self.num_layers:
            raise ExpertCountError(
                f"a per-layer expert count needs {self.num_layers} values (one per MoE layer), got {len(counts)}"
            )
        return [self._check_count(v, layer) for v, layer in zip(counts, self.layers)]

    def set_expert_count(self, expert_count: int | Sequence[int] | None) -> None:
        """Global k (int), per-layer k (one int per MoE layer), or None for the model's default."""
        self._layer_k = self.per_layer_k(expert_count)

    def set_row_expert_counts(self, counts: Sequence[int | Sequence[int]] | torch.Tensor | None) -> None:
        """Per-sequence k for the next forward passes: one entry per batch row, each a global or
        per-layer count. None returns to the per-layer setting."""
        self._token_k_cache = self._pairs_cache = None
        if counts is None:
            self._row_k = None
            self._row_uniform = []
            return
        if isinstance(counts, torch.Tensor):
            counts = counts.tolist()
        rows = [self.per_layer_k(c) for c in counts]
        if not rows:
            raise ExpertCountError("per-sequence expert counts need at least one row")
        self._row_k = torch.tensor(rows, dtype=torch.long)
        self._row_uniform = [
            values[0] if len(set(values)) == 1 else None for values in zip(*rows)
        ]

    # ------------------------------------------------------------------ bias
    def set_router_bias(self, bias: torch.Tensor | None) -> None:
        """Additive router-logit bias: (layers, experts) for every sequence, (batch, layers, experts)
        per sequence, or None. The tensor is used as is (keep ``requires_grad`` to optimise it)."""
        if bias is not None:
            expected = (self.num_layers, self.num_experts)
            if bias.dim() not in (2, 3) or tuple(bias.shape[-2:]) != expected:
                raise ValueError(
                    f"router bias must have shape {expected} or (batch, {expected[0]}, {expected[1]}), "
                    f"got {tuple(bias.shape)}"
                )
        self._bias = bias

    def set_routing_mix(self, alpha: float, targets: dict[int, torch.Tensor] | None) -> None:
        """Mix a target routing distribution into chosen layers: scores <- (1-alpha) scores + alpha
        target, target (experts,) or (batch, experts) per MoE layer index; None turns it off."""
        if targets is None:
            self._mix = None
            return
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"mixing weight alpha={alpha}: must be in [0, 1]")
        for layer, target in targets.items():
            if not 0 <= layer < self.num_layers or target.shape[-1] != self.layers[layer].num_experts:
                raise ValueError(f"routing mix target for layer {layer}: expected a layer in 0..{self.num_layers - 1} "
                                 f"and {self.num_experts} experts, got shape {tuple(target.shape)}")
        self._mix = (float(alpha), dict(targets))

    # ------------------------------------------------------------------ records
    @contextmanager
    def record(self, full_probs: bool = False) -> Iterator[RoutingRecorder]:
        """Record every router call inside the block (selected experts, their probabilities)."""
        previous = self._recorder
        self._recorder = RoutingRecorder(full_probs=full_probs)
        try:
            yield self._recorder
        finally:
            self._recorder = previous

    @contextmanager
    def routing(
        self,
        expert_count: int | Sequence[int] | None = None,
        row_expert_counts: Sequence[int | Sequence[int]] | torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        mix: tuple[float, dict[int, torch.Tensor]] | None = None,
    ) -> Iterator[DynamicMoE]:
        """Temporarily apply routing settings; restores the previous ones on exit."""
        saved = (self._layer_k, self._row_k, self._row_uniform, self._bias, self._mix)
        try:
            if expert_count is not None:
                self.set_expert_count(expert_count)
            self.set_row_expert_counts(row_expert_counts)
            if bias is not None:
                self.set_router_bias(bias)
            if mix is not None:
                self.set_routing_mix(*mix)
            yield self
        finally:
            self._layer_k, self._row_k, self._row_uniform, self._bias, self._mix = saved
            self._token_k_cache = None

    # ------------------------------------------------------------------ teardown
    def detach(self) -> None:
        """Restore the stock router (and experts) forwards."""
        for layer in self.layers:
            for module in (layer.router, layer.experts):
                if module is not None and "forward" in vars(module):
                    del module.forward
        if getattr(self.model, "_lm_eval_moe", None) is self:
            del self.model._lm_eval_moe

    # ------------------------------------------------------------------ the patched forward
    def _rows(self, tokens: int, batch: int) -> int:
        if tokens % batch:
            raise RuntimeError(
                f"router saw {tokens} tokens, not a multiple of the {batch} sequences whose expert counts or "
                f"biases were set: set per-sequence settings for the batch actually run"
            )
        return tokens // batch

    def _token_counts(self, layer: MoELayer, tokens: int) -> tuple[int, torch.Tensor | None]:
        if self._row_k is None:
            return self._layer_k[layer.index], None
        uniform = self._row_uniform[layer.index]
        if uniform is not None:
            return uniform, None
        if self._token_k_cache is None or self._token_k_cache[0] != tokens:
            per_token = self._row_k.repeat_interleave(self._rows(tokens, self._row_k.shape[0]), dim=0)
            self._token_k_cache = (tokens, per_token)
        column = self._token_k_cache[1][:, layer.index]
        return int(self._row_k[:, layer.index].max()), column

    def _selected_pairs(self, layer: MoELayer, tokens: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(token, flat position in the (tokens, k_max) routing) of each selected pair of a mixed-k layer, built on
        the host from the rows' k once per block shape (no device round trip)."""
        if self._pairs_cache is None or self._pairs_cache[:2] != (tokens, device):
            per_row = self._rows(tokens, self._row_k.shape[0])
            pairs = []
            for index in range(len(self.layers)):
                counts = self._row_k[:, index].repeat_interleave(per_row)
                k_max = int(counts.max())
                token, rank = (torch.arange(k_max) < counts.unsqueeze(1)).nonzero(as_tuple=True)
                pairs.append((token.to(device), (token * k_max + rank).to(device)))
            self._pairs_cache = (tokens, device, pairs)
        return self._pairs_cache[2][layer.index]

    def _make_experts_forward(self, layer: MoELayer, original):
        """The experts module's forward; given the router's selected pairs, it runs them as one pair per row
        (k = 1) and sums each token's pairs back: the same result without the masked ranks' work."""
        controller = self

        def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor, *args, **kwargs):
            pairs = controller._pairs.pop(layer.index, None)
            if pairs is None or top_k_weights.shape != top_k_index.shape:
                return original(hidden_states, top_k_index, top_k_weights, *args, **kwargs)
            token, flat = pairs
            part = original(hidden_states.index_select(0, token), top_k_index.reshape(-1, 1).index_select(0, flat),
                            top_k_weights.reshape(-1, 1).index_select(0, flat), *args, **kwargs)
            return part.new_zeros((hidden_states.shape[0], *part.shape[1:])).index_add(0, token, part)

        return forward

    def _token_bias(self, layer: MoELayer, tokens: int) -> torch.Tensor | None:
        bias = self._bias
        if bias is None:
            return None
        if bias.dim() == 2:
            return bias[layer.index].float()
        return bias[:, layer.index].float().repeat_interleave(self._rows(tokens, bias.shape[0]), dim=0)

    def _masked_index(self, layer: MoELayer) -> int | None:
        """Id for masked ranks: one the experts skip (no compute), else None = a zero-weight duplicate."""
        if layer.skippable_index is None or self.family.eager_skips_masked_id:
            return layer.skippable_index
        implementation = getattr(getattr(layer.experts, "config", None), "_experts_implementation", "eager")
        return None if implementation in (None, "eager") else layer.skippable_index

    def _token_mix(self, layer: MoELayer, tokens: int) -> tuple[float, torch.Tensor] | None:
        if self._mix is None or layer.index not in self._mix[1]:
            return None
        alpha, targets = self._mix
        target = targets[layer.index].float()
        if target.dim() == 2:
            target = target.repeat_interleave(self._rows(tokens, target.shape[0]), dim=0)
        return alpha, target

    def _make_forward(self, layer: MoELayer):
        family = self.family
        controller = self

        def forward(router: nn.Module, hidden_states: torch.Tensor, *args: Any):
            hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
            tokens = hidden.shape[0]
            expert_count, token_counts = controller._token_counts(layer, tokens)
            if token_counts is not None and layer.takes_selected_pairs and tokens >= PAIRS_MIN_TOKENS:
                controller._pairs[layer.index] = controller._selected_pairs(layer, tokens, hidden.device)
            else:
                controller._pairs.pop(layer.index, None)
            bias = controller._token_bias(layer, tokens)
            if bias is not None:
                bias = bias.to(hidden.device)
            mix = controller._token_mix(layer, tokens)
            if mix is not None:
                mix = (mix[0], mix[1].to(hidden.device))
            recorder = controller._recorder
            result = route(
                layer.rule,
                family.logits(router, hidden),
                input_dtype=hidden_states.dtype,
                expert_count=expert_count,
                token_expert_count=token_counts,
                bias=bias,
                correction_bias=family.correction_bias(router, args),
                masked_index=controller._masked_index(layer) if token_counts is not None else None,
                mix=mix,
                want_probs=recorder is not None,
                want_full_probs=recorder is not None and recorder.full_probs,
            )
            if recorder is not None:
                index = result.index.detach()
                if result.active is not None:
                    index = index.masked_fill(~result.active, -1)
                recorder.add(
                    LayerRouting(
                        layer=layer.index,
                        expert_index=index,
                        expert_prob=result.selected_probs,  # type: ignore[arg-type]
                        full_probs=result.full_probs,
                        entropy=result.entropy,
                    )
                )
            return result.logits, result.weights, result.index

        return forward


def attach(model: nn.Module, renormalize: bool | None = None) -> DynamicMoE:
    """Attach (or return the already attached) :class:`DynamicMoE` of ``model``."""
    existing = getattr(model, "_lm_eval_moe", None)
    if isinstance(existing, DynamicMoE):
        if existing.renormalize == renormalize:
            return existing
        existing.detach()
    return DynamicMoE(model, renormalize=renormalize)
