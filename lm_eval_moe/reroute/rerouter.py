"""Online test-time rerouting ("Rewiring Experts on the Fly"; docs/METHODS.md section 5).

Per sample, router deltas (one vector per MoE layer, added to the router logits) start at zero. Phase 1:
T Adam steps on the next-token loss of the current context (prompt + generated so far) with respect to the
deltas only (the model is frozen and stays in eval mode); each layer's update is scaled by its weight
from router confidence (soft) or restricted to the selected layers (hard). The paper writes the scaling two
ways (``layer_weighting``): Section 3.3 scales the layer's learning rate (``lr``, the default: soft weights
sum to 1, so each layer moves about 1/L of an unweighted step), Eq. 7 and Algorithm 1 hand Adam w_l times
the gradient (``gradient``: Adam normalises the constant factor away, except through its eps). Phase 2: generate ``interval``
tokens with the deltas fixed. Repeat until the sample ends. Phase 1 first runs right after the prompt.

Choices where the paper is silent (documented, not hidden): confidence and layer weights are computed in
the first forward of each Phase 1, under the deltas so far; the Adam state carries over between the
phases of one sample and is reset per sample; after an update the KV cache is recomputed from scratch
(keys and values computed under old deltas are stale), which also measures the loss after the update;
when an update leaves the deltas unchanged (lr = 0) the cache is kept, so generation is exactly the plain
model's. A batch of prompts is optimised together: the loss is summed over samples, so each sample's
deltas get their own gradient in one backward pass.

Memory on long contexts: ``loss_window`` keeps the loss (and the gradient path) to the last W tokens,
reading the earlier ones without gradient into a cache; ``gradient_checkpointing`` recomputes each
decoder layer in the backward pass instead of storing its activations.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lm_eval_moe.cost import Cost, CostLedger, CostModel
from lm_eval_moe.generation.special_tokens import eos_token_ids, pad_token_id
from lm_eval_moe.generation.stops import holds_stop
from lm_eval_moe.generation.sampling import SamplingConfig, make_generator, sample_rows
from lm_eval_moe.kv_cache import cache_argument, returned_cache
from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.reroute.adam import ScaledAdam
from lm_eval_moe.reroute.confidence import layer_confidence, layer_weights, random_layer_rank
from lm_eval_moe.reroute.settings import RerouteSettings



@dataclass
class RerouteOutcome:
    tokens: list[int]
    ledger: CostLedger
    finish_reason: str = ""
    phases: list[dict[str, Any]] = field(default_factory=list)  # per Phase 1: weights, losses, delta norms
    block_entropy: list[float] = field(default_factory=list)  # mean routing entropy per generated block
    block_deltas: list[torch.Tensor] = field(default_factory=list)  # (layers, experts) used for each block

    @property
    def cost(self) -> Cost:
        return self.ledger.cost


def left_padded(contexts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """(ids, attention mask, position ids) of ``contexts`` left-padded to one width: every row ends at the last column."""
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(contexts), width, dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, width - len(context) :] = torch.tensor(list(context))
        mask[row, width - len(context) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(dim=1) - 1).clamp(min=0)


def _row_losses(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy per row over positions whose input and target are real tokens: their mean, or
    their sum (``reduction``). Rows are summed for the backward, so no row's gradient depends on another's."""
    valid = (mask[:, :-1] * mask[:, 1:]).float()
    losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    summed = (losses * valid).sum(dim=1)
    return summed if reduction == "sum" else summed / valid.sum(dim=1).clamp_min(1)


@contextlib.contextmanager
def _checkpointed_layers(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Recompute every decoder layer in backward (transformers' own checkpointing needs train mode)."""
    if not enabled:
        yield
        return
    layers = getattr(getattr(model, "model", model), "layers", [])
    originals = []
    for layer in layers:
        original = layer.forward
        originals.append((layer, original))
        layer.forward = functools.partial(checkpoint, original, use_reentrant=False)
    try:
        yield
    finally:
        for layer, _ in originals:
            del layer.forward


class Rerouter:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, moe: DynamicMoE, cost_model: CostModel,
                 config: RerouteSettings) -> None:
        self.model, self.tokenizer, self.moe, self.cost_model, self.config = model, tokenizer, moe, cost_model, config
        self.device = next(model.parameters()).device
        self.pad_id = pad_token_id(tokenizer)
        for param in model.parameters():
            param.requires_grad_(False)

    # ---------------------------------------------------------------- Phase 1
    def optimise(self, contexts: Sequence[Sequence[int]], deltas: torch.Tensor, optimizer: ScaledAdam,
                 rows: list[int], ledgers: list[CostLedger], seeds: Sequence[int]) -> list[dict[str, Any]]:
        """T Adam steps on the rows ``rows`` of ``deltas`` (batch, layers, experts); returns per-row records.
        ``seeds``: one per row of ``deltas`` (the ``random`` layer selection draws from them)."""
        config, counts = self.config, self.moe.current_k
        ids, mask, positions = left_padded(contexts, self.pad_id, self.device)
        window = config.loss_window if config.loss_window and config.loss_window < ids.shape[1] else None
        row_index = torch.tensor(rows, device=deltas.device)
        scale = torch.zeros(deltas.shape[0], deltas.shape[1])
        active = torch.zeros_like(scale)
        active[rows] = 1.0  # rows outside this phase keep their deltas
        losses, weights = [], None
        self.model.eval()
        for step in range(config.steps):
            deltas.grad = None
            with torch.enable_grad(), _checkpointed_layers(self.model, config.gradient_checkpointing):
                bias = deltas.index_select(0, row_index)
                with self.moe.routing(bias=bias), self.moe.record() as recorder:
                    if window is None:
                        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
                        loss_ids, loss_mask = ids, mask
                    else:
                        with torch.no_grad():
                            prefix = self.model(input_ids=ids[:, :-window], attention_mask=mask[:, :-window],
                                                position_ids=positions[:, :-window], use_cache=True)
                        logits = self.model(input_ids=ids[:, -window:], attention_mask=mask,
                                            position_ids=positions[:, -window:],
                                            **cache_argument(returned_cache(prefix))).logits
                        loss_ids, loss_mask = ids[:, -window:], mask[:, -window:]
                    if weights is None:
                        calls = recorder.calls[-self.moe.num_layers :]
                        confidence = layer_confidence(calls, self.moe.num_layers, loss_mask)
                        weights = layer_weights(confidence, config.layer_selection, config.layer_fraction,
                                                config.confidence_order,
                                                random_layer_rank([seeds[r] for r in rows], self.moe.num_layers))
                        scale[rows] = weights
                    row_losses = _row_losses(logits, loss_ids, loss_mask, config.loss_reduction)
                    # inside the bias context: checkpointed layers recompute their routing in backward
                    row_losses.sum().backward()
            if config.layer_weighting == "gradient":  # Eq. 7 / Algorithm 1: Adam on w_l * gradient
                deltas.grad.mul_(scale.to(deltas.grad).unsqueeze(-1))
                optimizer.step(active, frozen=(active * scale) == 0)  # unselected layers stay where they are
            else:  # Section 3.3: each layer's step scaled by w_l (its learning rate, so its Adam state moves)
                optimizer.step(scale, frozen=active == 0)
            losses.append(row_losses.detach().cpu())
            for position, row in enumerate(rows):
                tokens = int(mask[position].sum())
                ledgers[row].optimisation_step(tokens, tokens if window is None else min(window, tokens), counts,
                                               recompute=config.gradient_checkpointing)
        deltas.grad = None
        records = []
        for position, row in enumerate(rows):
            records.append({
                "context_tokens": len(contexts[position]),
                "layer_weights": [] if weights is None else [round(float(w), 6) for w in weights[position]],
                "selected_layers": [] if weights is None else [i for i, w in enumerate(weights[position]) if w > 0],
                "loss_per_step": [float(loss[position]) for loss in losses],
                "delta_norms": [float(n) for n in deltas[row].detach().norm(dim=-1).cpu()],
            })
        return records

    def prime(self, prompts: Sequence[Sequence[int]], ledgers: list[CostLedger], seeds: Sequence[int]) -> torch.Tensor:
        """One Phase 1 on each prompt alone: the (prompts, layers, experts) deltas, detached (used to bias every
        path of a search; a combination neither paper has)."""
        config = self.config
        deltas = torch.zeros(len(prompts), self.moe.num_layers, self.moe.num_experts, device=self.device,
                             requires_grad=True)
        optimizer = ScaledAdam(deltas, config.lr, eps=config.eps, weight_decay=config.weight_decay)
        self.optimise(prompts, deltas, optimizer, list(range(len(prompts))), ledgers, seeds)
        return deltas.detach()

    # ---------------------------------------------------------------- Phase 2
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingConfig,
                 seeds: Sequence[int], stop_strings: Sequence[str] = (), eos_ids: set[int] | None = None,
                 on_phase: Callable[[int, int, int], None] | None = None) -> list[RerouteOutcome]:
        """``on_phase(phase, live rows, tokens generated so far)`` is called as each Phase 1 begins."""
        config, counts = self.config, self.moe.current_k
        batch = len(prompts)
        deltas = torch.zeros(batch, self.moe.num_layers, self.moe.num_experts, device=self.device, requires_grad=True)
        optimizer = ScaledAdam(deltas, config.lr, eps=config.eps, weight_decay=config.weight_decay)
        if eos_ids is None:
            eos_ids = eos_token_ids(self.tokenizer.eos_token_id, self.model.generation_config)
        outcomes = [RerouteOutcome([], CostLedger(self.cost_model)) for _ in prompts]
        generators = [make_generator(seed, self.device) for seed in seeds]
        active = list(range(batch))
        cache = None  # (past_key_values, mask, pending tokens) for the rows in ``cache_rows``
        cache_rows: list[int] = []
        first_prefill = True
        phase = 0
        while active:
            phase += 1
            if on_phase is not None:
                on_phase(phase, len(active), sum(len(outcome.tokens) for outcome in outcomes))
            contexts = [list(prompts[i]) + outcomes[i].tokens for i in active]
            before = deltas.detach().clone()
            if config.steps > 0:
                records = self.optimise(contexts, deltas, optimizer, active, [o.ledger for o in outcomes], seeds)
                for row, record in zip(active, records):
                    outcomes[row].phases.append(record)
            changed = not torch.equal(before, deltas.detach())
            bias = deltas.detach().index_select(0, torch.tensor(active, device=self.device))
            for position, row in enumerate(active):
                outcomes[row].block_deltas.append(bias[position].cpu())
            with torch.no_grad(), self.moe.routing(bias=bias):
                if cache is None or changed:
                    ids, mask, positions = left_padded(contexts, self.pad_id, self.device)
                    out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
                    next_logits = out.logits[:, -1].float()
                    after = _row_losses(out.logits, ids, mask).cpu()
                    for position, row in enumerate(active):
                        tokens = len(contexts[position])
                        if first_prefill:
                            outcomes[row].ledger.read_prefix(tokens, counts, first=True)
                        else:
                            outcomes[row].ledger.reread_after_update(tokens, counts)
                        if outcomes[row].phases and config.steps > 0:
                            outcomes[row].phases[-1]["loss_after"] = float(after[position])
                    past, pending = returned_cache(out), None
                else:
                    keep = torch.tensor([cache_rows.index(row) for row in active], device=self.device)
                    past, mask, pending = cache
                    past.reorder_cache(keep)
                    mask, pending = mask.index_select(0, keep), pending.index_select(0, keep)
                    next_logits = None
                first_prefill = False
                past, mask, pending = self._decode_block(active, past, mask, pending, next_logits, outcomes,
                                                         generators, sampling, max_new_tokens, stop_strings, eos_ids)
            cache, cache_rows = (past, mask, pending), list(active)
            active = [row for row in active if not outcomes[row].finish_reason]
        return outcomes

    def _decode_block(self, rows, past, mask, pending, next_logits, outcomes, generators, sampling, max_new_tokens,
                      stop_strings, eos_ids):
        """Up to ``interval`` tokens for every row of the block (finished rows are fed masked fillers)."""
        counts = self.moe.current_k
        live = [not outcomes[row].finish_reason for row in rows]
        entropies: list[list[float]] = [[] for _ in rows]
        with self.moe.record() as recorder:
            for _ in range(self.config.interval):
                if not any(live):
                    break
                if next_logits is None:
                    column = torch.tensor(live, dtype=torch.long, device=self.device).unsqueeze(1)
                    mask = torch.cat([mask, column], dim=1)
                    positions = (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0)
                    feed = torch.where(column.squeeze(1).bool(), pending, torch.full_like(pending, self.pad_id))
                    recorder.calls.clear()
                    out = self.model(input_ids=feed.unsqueeze(1), attention_mask=mask, position_ids=positions,
                                     **cache_argument(past), use_cache=True)
                    past, next_logits = returned_cache(out), out.logits[:, -1].float()
                    step_entropy = self._entropy(recorder.calls, len(rows))
                    for position, (row, row_position) in enumerate(zip(rows, positions.squeeze(1).tolist())):
                        if live[position]:
                            outcomes[row].ledger.feed(row_position, counts)
                            if step_entropy is not None:
                                entropies[position].append(float(step_entropy[position]))
                new_pending = pending.clone() if pending is not None else torch.zeros(len(rows), dtype=torch.long,
                                                                                     device=self.device)
                sampled = [position for position in range(len(rows)) if live[position]]
                drawn, _ = sample_rows(next_logits.index_select(0, torch.tensor(sampled, device=self.device)), sampling,
                                       [generators[rows[position]] for position in sampled])
                new_pending[sampled] = torch.tensor(drawn, dtype=torch.long).to(self.device)
                for position, token in zip(sampled, drawn):
                    outcome = outcomes[rows[position]]
                    outcome.tokens.append(token)
                    outcome.ledger.sampled()
                    if token in eos_ids:
                        outcome.finish_reason = "eos"
                    elif len(outcome.tokens) >= max_new_tokens:
                        outcome.finish_reason = "length"
                    elif holds_stop(outcome.tokens, stop_strings, self._decode):
                        outcome.finish_reason = "stop"
                    live[position] = not outcome.finish_reason
                pending, next_logits = new_pending, None
        for position, row in enumerate(rows):
            if entropies[position]:
                outcomes[row].block_entropy.append(sum(entropies[position]) / len(entropies[position]))
        return past, mask, pending

    @staticmethod
    def _entropy(calls, rows: int) -> torch.Tensor | None:
        values = [call.entropy.view(rows, -1).mean(dim=-1).cpu() for call in calls if call.entropy is not None]
        return torch.stack(values).mean(dim=0) if values else None

    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)
