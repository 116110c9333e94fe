"""Advance a batch of partial solutions by one step, each with its own expert count.

:class:`StepEngine` keeps ONE batched KV cache whose rows are the current frontier (the children of
the last :meth:`StepEngine.expand`). Expanding a node that is in the frontier continues from its
cached prefix; expanding it several times forks its row (``index_select`` with repeats); a node not
in the frontier (a root, or anything after a cache reset) is prefilled once per expert count.

Rows finish a step at different times. A finished row keeps receiving a masked filler token until
the whole batch is done, so the cache holds "holes": attention-mask zeros with explicit position ids,
which pure-attention models treat exactly as if the hole were absent (checked: 1e-7). Columns masked
in every row are dropped after each expansion. Caches with recurrent or sliding-window state
(Mamba, linear attention, conv layers, sliding windows) cannot hold holes: for those models the
engine re-reads every prefix instead (``cache_mode="reread"``, also selectable for comparison).

Costs are charged to each problem's ledger (``BatchContext``) where the work is done: the prompt per
prefill, generated tokens when sampled (once, however many children share them), re-read tokens
separately, and the compute of every token a row really processes (filler tokens are not charged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import DynamicCache, PreTrainedModel

from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.generation.special_tokens import eos_token_ids, pad_token_id
from lm_eval_moe.generation.stops import holds_stop
from lm_eval_moe.generation.nodes import Expansion, Node, child_node
from lm_eval_moe.generation.sampling import SamplingConfig, make_generator, sample_rows
from lm_eval_moe.kv_cache import cache_argument, returned_cache
from lm_eval_moe.moe import DynamicMoE

logger = logging.getLogger(__name__)

CacheMode = Literal["auto", "reuse", "reread"]
PromptExpertCount = Literal["path", "default"]


class StepEngine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: Any,
        moe: DynamicMoE,
        sampling: SamplingConfig,
        delimiter: str = "\n\n",
        cache_mode: CacheMode = "auto",
        prompt_expert_count: PromptExpertCount = "path",
        eos_ids: set[int] | None = None,
    ) -> None:
        if cache_mode not in ("auto", "reuse", "reread"):
            raise ValueError(f"cache_mode={cache_mode!r}: expected auto, reuse or reread")
        if prompt_expert_count not in ("path", "default"):
            raise ValueError(f"prompt_expert_count={prompt_expert_count!r}: expected path or default")
        self.model = model
        self.tokenizer = tokenizer
        self.moe = moe
        self.sampling = sampling
        self.delimiter = delimiter
        self.cache_mode = cache_mode
        self.prompt_expert_count = prompt_expert_count
        self.device = next(model.parameters()).device
        self.pad_id = pad_token_id(tokenizer)
        self.eos_ids = eos_token_ids(tokenizer.eos_token_id, model.generation_config) if eos_ids is None else eos_ids
        self.forward_calls = 0
        self.reset()

    def reset(self) -> None:
        """Forget the frontier (between batches of problems)."""
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._pending = torch.zeros(0, dtype=torch.long, device=self.device)
        self._rows: dict[tuple[int, tuple[int, ...]], int] = {}

    def _row_bias(self, problems: Sequence[int], context: BatchContext) -> torch.Tensor | None:
        """(rows, layers, experts) bias for rows of these problems, if any problem has one."""
        if not context.biases:
            return None
        zero = torch.zeros(self.moe.num_layers, self.moe.num_experts, device=self.device)
        return torch.stack([context.biases.get(p, zero).to(self.device) for p in problems])

    @property
    def reuses_cache(self) -> bool:
        return self.cache_mode == "reuse"

    # ------------------------------------------------------------------ cache plumbing
    def _prefix_key(self, expansion: Expansion) -> tuple[int, tuple[int, ...]]:
        node = expansion.parent
        if node.parent is None and self.prompt_expert_count == "default":
            return node.id, tuple(self.moe.default_k)
        return node.id, expansion.expert_count or node.expert_count

    def _prefill(self, items: list[tuple[Node, tuple[int, ...]]], context: BatchContext
                 ) -> tuple[DynamicCache | None, torch.Tensor, torch.Tensor]:
        """Process every token but the last of each node (under its prefix k); the last is pending."""
        sequences = [list(node.prompt_ids) + list(node.token_ids) for node, _ in items]
        length = max(len(s) - 1 for s in sequences)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            body = sequence[:-1]
            if body:
                ids[row, length - len(body) :] = torch.tensor(body)
                mask[row, length - len(body) :] = 1
        pending = torch.tensor([s[-1] for s in sequences], dtype=torch.long, device=self.device)
        mask = mask.to(self.device)
        for (node, counts), sequence in zip(items, sequences):
            context.ledgers[node.problem].read_prefix(len(sequence), counts, first=node.parent is None, pending=1)
        if length == 0:
            return None, mask, pending
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        bias = self._row_bias([node.problem for node, _ in items], context)
        with torch.no_grad(), self.moe.routing(row_expert_counts=[counts for _, counts in items], bias=bias):
            out = self.model(
                input_ids=ids.to(self.device), attention_mask=mask, position_ids=positions, use_cache=True
            )
        self.forward_calls += 1
        cache = returned_cache(out)
        if self.cache_mode == "auto":
            positional = all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)
            self.cache_mode = "reuse" if positional else "reread"
            logger.info(
                "step engine: %s (%s)",
                "continuing from cached prefixes" if positional else "re-reading prefixes every step",
                "pure attention KV cache" if positional else "the cache holds recurrent or sliding-window state",
            )
        return cache, mask, pending

    @staticmethod
    def _left_pad(cache: DynamicCache | None, mask: torch.Tensor, width: int, like: DynamicCache | None):
        missing = width - mask.shape[1]
        if missing == 0:
            return cache, mask
        mask = torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
        if cache is None:
            if like is None:
                return None, mask
            cache = DynamicCache()
            for index, layer in enumerate(like.layers):
                shape_k = (mask.shape[0], *layer.keys.shape[1:2], 0, layer.keys.shape[-1])
                shape_v = (mask.shape[0], *layer.values.shape[1:2], 0, layer.values.shape[-1])
                cache.update(layer.keys.new_zeros(shape_k), layer.values.new_zeros(shape_v), index)
        for layer in cache.layers:
            k_pad = layer.keys.new_zeros(*layer.keys.shape[:2], missing, layer.keys.shape[-1])
            v_pad = layer.values.new_zeros(*layer.values.shape[:2], missing, layer.values.shape[-1])
            layer.keys = torch.cat([k_pad, layer.keys], dim=2)
            layer.values = torch.cat([v_pad, layer.values], dim=2)
        return cache, mask

    def _assemble(self, expansions: Sequence[Expansion], context: BatchContext
                  ) -> tuple[DynamicCache | None, torch.Tensor, torch.Tensor]:
        """The batch cache for ``expansions``: frontier rows forked, missing prefixes prefilled."""
        if not self.reuses_cache:
            self.reset()
        keys = [self._prefix_key(e) for e in expansions]
        missing: dict[tuple[int, tuple[int, ...]], Node] = {}
        for key, expansion in zip(keys, expansions):
            if key not in self._rows:
                missing.setdefault(key, expansion.parent)
        old_cache, old_mask, old_pending = self._cache, self._mask, self._pending
        row_of = dict(self._rows)
        if missing:
            new_cache, new_mask, new_pending = self._prefill([(node, key[1]) for key, node in missing.items()], context)
            offset = old_mask.shape[0]
            for index, key in enumerate(missing):
                row_of[key] = offset + index
            width = max(old_mask.shape[1], new_mask.shape[1])
            if old_mask.shape[0] == 0:
                old_cache, old_mask, old_pending = new_cache, new_mask, new_pending
                old_cache, old_mask = self._left_pad(old_cache, old_mask, width, None)
            else:
                old_cache, old_mask = self._left_pad(old_cache, old_mask, width, new_cache)
                new_cache, new_mask = self._left_pad(new_cache, new_mask, width, old_cache)
                if old_cache is not None and new_cache is not None:
                    for old_layer, new_layer in zip(old_cache.layers, new_cache.layers):
                        old_layer.keys = torch.cat([old_layer.keys, new_layer.keys], dim=0)
                        old_layer.values = torch.cat([old_layer.values, new_layer.values], dim=0)
                old_mask = torch.cat([old_mask, new_mask], dim=0)
                old_pending = torch.cat([old_pending, new_pending], dim=0)
        order = torch.tensor([row_of[key] for key in keys], dtype=torch.long, device=self.device)
        if old_cache is not None:
            old_cache.reorder_cache(order)  # index_select on the batch: repeated rows fork a prefix
        return old_cache, old_mask.index_select(0, order), old_pending.index_select(0, order)

    def _compact(self) -> None:
        if not self.reuses_cache or self._cache is None:
            return
        keep = self._mask.sum(dim=0) > 0
        if bool(keep.all()):
            return
        columns = keep.nonzero().squeeze(1)
        self._mask = self._mask.index_select(1, columns)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(2, columns)
            layer.values = layer.values.index_select(2, columns)

    # ------------------------------------------------------------------ stepping
    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _step_done(self, tokens: list[int]) -> bool:
        """The new tokens end a step: they contain the delimiter after some non-blank text."""
        if not holds_stop(tokens, (self.delimiter,), self._decode):
            return False
        text = self._decode(tokens)
        return bool(text[: text.rfind(self.delimiter)].strip())

    def expand(self, expansions: Sequence[Expansion], context: BatchContext) -> list[Node]:
        """One child per expansion, in order; the children become the new frontier."""
        if not expansions:
            return []
        cache, mask, pending = self._assemble(expansions, context)
        counts = [e.expert_count or e.parent.expert_count for e in expansions]
        batch = len(expansions)
        generators = [make_generator(e.seed, self.device) for e in expansions]
        new_tokens: list[list[int]] = [[] for _ in range(batch)]
        new_logprobs: list[list[float]] = [[] for _ in range(batch)]
        reasons = [""] * batch
        active = [True] * batch
        # host copies of what the loop reads per row (last token, attended length): one transfer per step
        last = pending.tolist()
        lengths = mask.sum(dim=1).tolist()
        bias = self._row_bias([e.parent.problem for e in expansions], context)
        with torch.no_grad(), self.moe.routing(row_expert_counts=counts, bias=bias):
            while any(active):
                rows = [row for row in range(batch) if active[row]]
                lengths = [length + live for length, live in zip(lengths, active)]
                mask = torch.cat([mask, torch.tensor(active, dtype=torch.long).unsqueeze(1).to(self.device)], dim=1)
                feed = torch.tensor([token if live else self.pad_id for token, live in zip(last, active)])
                positions = torch.tensor([max(length - 1, 0) for length in lengths]).unsqueeze(1)
                out = self.model(
                    input_ids=feed.unsqueeze(1).to(self.device), attention_mask=mask,
                    position_ids=positions.to(self.device), **cache_argument(cache), use_cache=True,
                )
                self.forward_calls += 1
                cache = returned_cache(out)
                logits = out.logits[:, -1].float().index_select(0, torch.tensor(rows, device=self.device))
                drawn, drawn_logprobs = sample_rows(logits, self.sampling, [generators[row] for row in rows])
                for row, token, logprob in zip(rows, drawn, drawn_logprobs):
                    expansion = expansions[row]
                    ledger = context.ledgers[expansion.parent.problem]
                    ledger.feed(max(lengths[row] - 1, 0), counts[row])
                    new_tokens[row].append(token)
                    new_logprobs[row].append(logprob)
                    ledger.sampled()
                    last[row] = token
                    if token in self.eos_ids:
                        active[row], reasons[row] = False, "eos"
                    elif holds_stop(new_tokens[row], context.stop_strings.get(expansion.parent.problem, ()),
                                    self._decode, before=expansion.parent.text):
                        active[row], reasons[row] = False, "stop"
                    elif len(new_tokens[row]) >= expansion.max_new_tokens:
                        active[row], reasons[row] = False, "length"
                    elif expansion.stop_at_delimiter and self._step_done(new_tokens[row]):
                        active[row] = False
        pending = torch.tensor(last, dtype=torch.long, device=self.device)
        children = [
            child_node(expansion, count, tokens, logprobs, reason, self._decode)
            for expansion, count, tokens, logprobs, reason in zip(expansions, counts, new_tokens, new_logprobs, reasons)
        ]
        self._cache, self._mask, self._pending = cache, mask, pending
        self._rows = {(child.id, child.expert_count): row for row, child in enumerate(children)}
        self._compact()
        return children
