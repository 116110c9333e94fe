"""Cost accounting: tokens, expert-token products and estimated FLOPs (docs/METHODS.md section 6).

FLOPs formula (forward pass, multiply-add = 2 FLOPs), per processed token at position ``p``::

    2 * (dense_params + sum_l k_l * expert_params_l)            # weight matmuls
    + sum over attention layers of 2 * (d_qk + d_v) * (p + 1)    # scores and weighted values

* ``dense_params``: every parameter a token passes through except routed experts and the input
  embedding lookup (attention, shared experts, dense MLPs, routers, norms, LM head). Shared experts
  are therefore always paid, and counted separately in expert-token products.
* ``expert_params_l``: parameters of ONE routed expert of MoE layer ``l`` (the layer's expert module
  divided by its expert count); ``k_l`` the activated routed experts at that layer.
* ``d_qk = heads * qk_head_dim``, ``d_v = heads * v_head_dim`` (MLA models use their own head dims);
  attention layers are the modules whose class name ends in ``Attention`` (linear-attention, conv and
  Mamba mixers are costed as dense parameters only); sliding windows are ignored (an upper bound).

Backward pass of rerouting's Phase 1 (weights frozen, only the router deltas learn), derived: no weight
gradient is formed, so each weight matmul ``Y = XW`` costs one matmul in backward (``dX = dY W^T``), 1x its
forward; the attention products ``QK^T`` and ``PV`` multiply two activations and need both gradients, 2x.
Nothing below the first router needs a gradient: the decoder layers up to and including the first MoE
layer are skipped (``backward_skipped_*``; the first router's delta gets its gradient from the gating)::

    backward(b tokens after p) = b * 2 * (dense_params - skipped_dense + sum_{l >= 1} k_l * expert_params_l)
                                 + 2 * attention_flops(b, p) * (attention layers not skipped) / attention layers

plus one more forward of those tokens with gradient checkpointing (recomputation). Elementwise work is not
counted, as in the forward. ``benchmarks/bench_backward_flops.py`` compares it with
``torch.utils.flop_counter`` on real backward passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from lm_eval_moe.moe.dynamic import DynamicMoE
from lm_eval_moe.moe.settings import text_config


@dataclass(frozen=True)
class CostModel:
    dense_params: int
    expert_params: tuple[int, ...]  # one routed expert, per MoE layer
    shared_experts: int  # per MoE layer
    attention_layers: int
    qk_width: int
    v_width: int
    backward_skipped_dense_params: int = 0  # decoder layers up to the first MoE layer: no gradient needed
    backward_skipped_attention_layers: int = 0

    @classmethod
    def from_model(cls, model: nn.Module, moe: DynamicMoE) -> CostModel:
        total = sum(p.numel() for p in model.parameters())
        routed = 0
        expert_params = []
        for layer in moe.layers:
            size = sum(p.numel() for p in layer.experts.parameters()) if layer.experts is not None else 0
            routed += size
            expert_params.append(size // layer.num_experts)
        embedding = model.get_input_embeddings()
        output = model.get_output_embeddings()
        embedding_params = embedding.weight.numel() if embedding is not None else 0
        if output is not None and embedding is not None and output.weight is embedding.weight:
            embedding_params = 0  # tied: the same matrix is used as the LM head matmul
        config = text_config(model.config)
        heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        qk_dim = int(getattr(config, "qk_nope_head_dim", 0) or 0) + int(getattr(config, "qk_rope_head_dim", 0) or 0)
        v_dim = int(getattr(config, "v_head_dim", 0) or 0)
        attention_layers = sum(1 for module in model.modules() if _is_attention(module))
        skipped_dense, skipped_attention = _below_first_router(model, moe)
        return cls(
            dense_params=total - routed - embedding_params,
            expert_params=tuple(expert_params),
            shared_experts=moe.shared_experts,
            attention_layers=attention_layers,
            qk_width=heads * (qk_dim or head_dim),
            v_width=heads * (v_dim or head_dim),
            backward_skipped_dense_params=skipped_dense,
            backward_skipped_attention_layers=skipped_attention,
        )

    def matmul_flops_per_token(self, expert_counts: Sequence[int]) -> float:
        experts = sum(k * size for k, size in zip(expert_counts, self.expert_params, strict=True))
        return 2.0 * (self.dense_params + experts)

    def attention_flops(self, new_tokens: int, past_tokens: int) -> float:
        """Attention score/value FLOPs for ``new_tokens`` appended after ``past_tokens``."""
        attended = new_tokens * past_tokens + new_tokens * (new_tokens + 1) / 2
        return 2.0 * (self.qk_width + self.v_width) * attended * self.attention_layers

    def forward_flops(self, new_tokens: int, past_tokens: int, expert_counts: Sequence[int]) -> float:
        return new_tokens * self.matmul_flops_per_token(expert_counts) + self.attention_flops(new_tokens, past_tokens)

    def frozen_backward_flops(self, new_tokens: int, past_tokens: int, expert_counts: Sequence[int]) -> float:
        """Backward of a forward over ``new_tokens`` after ``past_tokens`` with frozen weights and router deltas
        as the only trainable tensors (module docstring)."""
        experts = sum(k * size for k, size in zip(expert_counts[1:], self.expert_params[1:], strict=True))
        matmuls = 2.0 * (self.dense_params - self.backward_skipped_dense_params + experts)
        attention = self.attention_flops(new_tokens, past_tokens)
        if self.attention_layers:
            attention *= (self.attention_layers - self.backward_skipped_attention_layers) / self.attention_layers
        return new_tokens * matmuls + 2.0 * attention

    def expert_tokens(self, tokens: int, expert_counts: Sequence[int]) -> tuple[int, int]:
        """(routed, shared) expert-token products for ``tokens`` tokens through every MoE layer."""
        return tokens * sum(expert_counts), tokens * self.shared_experts * len(expert_counts)


def _is_attention(module: nn.Module) -> bool:
    name = type(module).__name__
    return name.endswith("Attention") and "Linear" not in name


def _below_first_router(model: nn.Module, moe: DynamicMoE) -> tuple[int, int]:
    """(dense parameters, attention layers) of the decoder layers up to and including the one holding the first
    router, routed experts excluded; (0, 0) when the decoder layers cannot be told apart (an upper bound)."""
    if not moe.layers:
        return 0, 0
    parts = moe.layers[0].name.split(".")
    index = next((i for i in range(len(parts) - 1, 0, -1) if parts[i].isdigit()), None)
    if index is None:
        return 0, 0
    stack, first = ".".join(parts[:index]), int(parts[index])
    layers = dict(model.named_modules()).get(stack)
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        return 0, 0
    routed = {id(p) for layer in moe.layers if layer.experts is not None for p in layer.experts.parameters()}
    dense = attention = 0
    for block in list(layers)[: first + 1]:
        dense += sum(p.numel() for p in block.parameters() if id(p) not in routed)
        attention += sum(1 for module in block.modules() if _is_attention(module))
    return dense, attention


@dataclass
class Cost:
    """Accumulated cost of one request (or a whole run, by summing requests).

    Token counters count each token once, where it is first processed (prompt) or generated;
    ``reprocessed_tokens`` are tokens read again because no cache held them (search without cache
    reuse, or a hybrid model). Compute (expert-token products, FLOPs) covers every processed token.
    """

    prompt_tokens: int = 0
    generated_tokens: int = 0
    reprocessed_tokens: int = 0
    verifier_tokens: int = 0
    routed_expert_tokens: int = 0
    shared_expert_tokens: int = 0
    flops: float = 0.0
    extra_forward_tokens: int = 0  # rerouting: tokens of the optimisation forward passes
    extra_backward_tokens: int = 0
    extra_flops: float = 0.0  # rerouting: optimisation forward + backward
    verifier_flops: float = 0.0  # the verifier's forward passes (2 x its non-embedding parameters per token)

    def add(self, other: Cost) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class CostLedger:
    """The cost of one request, charged where the work is done. Engines, the rerouter and the model classes
    report what they compute through these methods only, so each rule of who pays for a token lives here:

    * a prompt is counted once, by the read that first makes it ready (:meth:`read_prefix`);
    * tokens a cache no longer holds and that are read again are ``reprocessed_tokens``;
    * a sampled token costs a forward only when it is fed back (:meth:`feed`): the last token a sequence
      samples is never fed (:meth:`decoded` for engines that generate a whole call at once);
    * work done for the method beyond generation (rerouting's optimisation, C3PO's embedding, re-reading a
      context after a router update) is ``extra_*``, apart from the generation cost.
    """

    def __init__(self, model: CostModel) -> None:
        self.model = model
        self.cost = Cost()

    def _forward(self, new_tokens: int, past_tokens: int, expert_counts: Sequence[int]) -> None:
        routed, shared = self.model.expert_tokens(new_tokens, expert_counts)
        self.cost.routed_expert_tokens += routed
        self.cost.shared_expert_tokens += shared
        self.cost.flops += self.model.forward_flops(new_tokens, past_tokens, expert_counts)

    def read_prefix(self, length: int, expert_counts: Sequence[int], *, first: bool, cached: int = 0,
                    pending: int = 0) -> None:
        """A prefix of ``length`` tokens made ready for generation: ``cached`` come from a cache (free), the last
        ``pending`` are fed later by a decoding loop (charged by :meth:`feed`). The first read of a request's
        prompt counts it as prompt tokens; any other read counts what it computes as re-read."""
        computed = length - cached - pending
        if first:
            self.cost.prompt_tokens += length - cached
        else:
            self.cost.reprocessed_tokens += computed
        self._forward(computed, cached, expert_counts)

    def feed(self, position: int, expert_counts: Sequence[int]) -> None:
        """A token fed to the model at ``position`` (a decoding step)."""
        self._forward(1, position, expert_counts)

    def sampled(self, tokens: int = 1) -> None:
        self.cost.generated_tokens += tokens

    def decoded(self, tokens: int, start: int, expert_counts: Sequence[int]) -> None:
        """``tokens`` sampled in one call after a prefix of ``start`` tokens; all but the last were fed."""
        self.sampled(tokens)
        for position in range(start, start + max(tokens - 1, 0)):
            self.feed(position, expert_counts)

    def generation(self, prompt: int, generated: int, expert_counts: Sequence[int]) -> None:
        """A whole plain generation (transformers' ``generate``): the prompt and every sampled token but the
        last go through the model, as one block from position 0."""
        self.cost.prompt_tokens += prompt
        self.sampled(generated)
        self._forward(prompt + max(generated - 1, 0), 0, expert_counts)

    def verified(self, tokens: int, flops: float) -> None:
        """Tokens the verifier read to score this request's candidates, and their FLOPs."""
        self.cost.verifier_tokens += tokens
        self.cost.verifier_flops += flops

    def extra_forward(self, tokens: int, expert_counts: Sequence[int]) -> None:
        """A forward pass the method adds to generation (C3PO's embedding of the prompt)."""
        self.cost.extra_forward_tokens += tokens
        self.cost.extra_flops += self.model.forward_flops(tokens, 0, expert_counts)

    def optimisation_step(self, tokens: int, backward_tokens: int, expert_counts: Sequence[int],
                          recompute: bool = False) -> None:
        """One forward over a context of ``tokens`` and a frozen-weight backward over its last
        ``backward_tokens`` (rerouting's Phase 1); ``recompute``: gradient checkpointing runs their forward
        again in the backward."""
        past = tokens - backward_tokens
        self.cost.extra_forward_tokens += tokens + (backward_tokens if recompute else 0)
        self.cost.extra_backward_tokens += backward_tokens
        self.cost.extra_flops += (self.model.forward_flops(tokens, 0, expert_counts)
                                  + self.model.frozen_backward_flops(backward_tokens, past, expert_counts))
        if recompute:
            self.cost.extra_flops += self.model.forward_flops(backward_tokens, past, expert_counts)

    def reread_after_update(self, tokens: int, expert_counts: Sequence[int]) -> None:
        """A context of ``tokens`` read again after the router changed (its cache is stale). Its last token was
        sampled but never fed: plain decoding pays that forward too, so it is charged to decoding; only the
        re-read of the tokens before it is the update's overhead."""
        self.feed(tokens - 1, expert_counts)
        self.cost.extra_forward_tokens += tokens - 1
        self.cost.extra_flops += (self.model.forward_flops(tokens, 0, expert_counts)
                                  - self.model.forward_flops(1, tokens - 1, expert_counts))

    def add(self, other: CostLedger) -> None:
        self.cost.add(other.cost)


@dataclass
class RunTotals:
    """Run-level totals reported in ``get_model_info()``."""

    requests: int = 0
    cost: Cost = field(default_factory=Cost)

    def add(self, cost: Cost) -> None:
        self.requests += 1
        self.cost.add(cost)

    def as_dict(self) -> dict[str, float]:
        return {"requests": self.requests, **self.cost.as_dict()}
