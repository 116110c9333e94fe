"""C3PO baseline, kernel-regression variant (Li, Li, Zhou 2025; docs/METHODS.md section 5).

Reference set: problems the model solves, each with the routing distribution of its LAST INPUT TOKEN in
the last ``layers`` MoE layers (full softmax) and a question embedding. At test time the test question's
nearest references (cosine similarity) are averaged with kernel weights and the result is mixed into
the model's own routing of those layers: ``scores <- (1 - alpha) * scores + alpha * neighbours``.

Deviations from the paper (its public code is partial), stated here and in the README:
* the question embedding is the policy's own last hidden state, mean-pooled over the prompt (no separate
  embedding model is downloaded);
* kernel: ``exp(cosine / bandwidth)`` over the top ``neighbours`` (3 by default, as the public code);
* the mix applies to every token the model processes for that request (prompt and generated), in the
  last ``layers`` MoE layers, and the top-k is taken from the mixed scores;
* only the kernel-regression variant is provided (not the optimisation-based ones).
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lm_eval_moe.cost import CostLedger
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.moe import DynamicMoE
from lm_eval_moe.reroute.settings import C3POSettings


class ReferenceSetError(ValueError):
    """A reference set that cannot be used for this evaluation (the message says why)."""


@dataclass
class ReferenceSet:
    """``metadata`` holds how the set was built (``lm-eval-moe c3po-build``), including ``question_hashes``
    (``lm_eval_moe.problem_identity.problem_hash`` of each reference) and ``apply_chat_template``."""

    embeddings: torch.Tensor  # (references, hidden), unit norm
    routing: torch.Tensor  # (references, layers, experts)
    layers: list[int]  # MoE layer indices the routing belongs to
    metadata: dict[str, Any] = field(default_factory=dict)

    def check_provenance(self, source: str) -> None:
        """Refuses a set that does not record what the evaluation checks it against."""
        missing = [key for key in ("question_hashes", "apply_chat_template") if key not in self.metadata]
        if missing:
            raise ReferenceSetError(f"{source} does not record {', '.join(missing)}, so it cannot be checked "
                                    "against the evaluation: rebuild it with lm-eval-moe c3po-build")

    def check_disjoint(self, evaluated_hashes: set[str], source: str) -> None:
        """Refuses a set that holds an evaluated problem: its nearest neighbour would be itself."""
        overlap = evaluated_hashes & set(self.metadata["question_hashes"])
        if overlap:
            raise ReferenceSetError(f"{source} holds {len(overlap)} of the evaluated problems: references must "
                                    "come from a split disjoint from the evaluated one (lm-eval-moe c3po-build "
                                    "draws them from one)")

    def check_prompt_format(self, apply_chat_template: bool, source: str) -> None:
        """Refuses a set built with prompts in another format than the evaluation's."""
        built = bool(self.metadata["apply_chat_template"])
        if built != apply_chat_template:
            raise ReferenceSetError(
                f"{source} was built with apply_chat_template={built}, the evaluation uses "
                f"{apply_chat_template}: the question embeddings would compare different prompt formats "
                "(rebuild with the same --apply_chat_template choice)")

    def save(self, path: str | Path) -> None:
        torch.save({"embeddings": self.embeddings, "routing": self.routing, "layers": self.layers,
                    "metadata": self.metadata}, path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceSet:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return cls(data["embeddings"], data["routing"], list(data["layers"]), dict(data["metadata"]))
        except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as error:
            raise ReferenceSetError(f"{path} is not a reference set written by lm-eval-moe c3po-build ({error!r})") from None

    def neighbour_routing(self, embeddings: torch.Tensor, neighbours: int = 3, bandwidth: float = 0.1) -> torch.Tensor:
        """(batch, layers, experts): kernel-weighted average routing of each query's nearest references."""
        similarity = F.normalize(embeddings.float(), dim=-1) @ self.embeddings.float().T
        count = min(neighbours, similarity.shape[1])
        top = similarity.topk(count, dim=-1)
        kernel = torch.softmax(top.values / bandwidth, dim=-1)
        return torch.einsum("bn,bnle->ble", kernel, self.routing.float()[top.indices])


def last_layers(moe: DynamicMoE, count: int) -> list[int]:
    return list(range(max(0, moe.num_layers - count), moe.num_layers))


def prompt_features(model: torch.nn.Module, moe: DynamicMoE, ids: torch.Tensor, mask: torch.Tensor,
                    layers: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings (batch, hidden), last-input-token routing (batch, layers, experts)) of left-padded prompts."""
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad(), moe.record(full_probs=True) as recorder:
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    hidden = out.hidden_states[-1].float()
    weights = mask.unsqueeze(-1).float()
    embeddings = F.normalize((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1), dim=-1)
    batch = ids.shape[0]
    routing = torch.stack(
        [next(c for c in recorder.calls if c.layer == layer).full_probs.view(batch, ids.shape[1], -1)[:, -1]
         for layer in layers], dim=1)
    return embeddings.cpu(), routing.cpu()


class C3PORouting:
    """C3PO as ``moe_c3po`` runs it: the reference set, read and checked before the policy loads; per batch,
    each prompt's neighbours' routing mixed into the set's layers (:meth:`__call__`, the plain generator's
    batch routing; the prompt embedding is charged as an extra forward)."""

    def __init__(self, settings: C3POSettings) -> None:
        self.settings, self.source = settings, f"the reference set {settings.references}"
        try:
            self.references = ReferenceSet.load(settings.references)
            self.references.check_provenance(f"references={settings.references}")
        except (OSError, ReferenceSetError) as error:
            raise ModelArgError(f"model arg references={settings.references}: {error}") from None
        self.model: torch.nn.Module | None = None
        self.moe: DynamicMoE | None = None

    def attach(self, model: torch.nn.Module, moe: DynamicMoE) -> None:
        """The loaded policy; refused if the references were built for another model."""
        if self.references.routing.shape[-1] != moe.num_experts or max(self.references.layers) >= moe.num_layers:
            raise ModelArgError(f"references {self.settings.references} were built for another model "
                                f"({self.references.metadata.get('model', 'unknown')})")
        self.model, self.moe = model, moe

    def check_evaluation(self, evaluated_hashes: set[str], apply_chat_template: bool) -> None:
        """Refuses a set that holds an evaluated problem or was built in another prompt format."""
        self.references.check_prompt_format(apply_chat_template, self.source)
        self.references.check_disjoint(evaluated_hashes, self.source)

    @contextlib.contextmanager
    def __call__(self, context_enc: torch.Tensor, attn_masks: torch.Tensor, ledgers: list[CostLedger]) -> Iterator[None]:
        settings, moe = self.settings, self.moe
        embeddings, _ = prompt_features(self.model, moe, context_enc, attn_masks, self.references.layers)
        for row, ledger in enumerate(ledgers):
            ledger.extra_forward(int(attn_masks[row].sum()), moe.current_k)
        target = self.references.neighbour_routing(embeddings, settings.neighbours, settings.bandwidth)
        targets = {layer: target[:, i].to(context_enc.device) for i, layer in enumerate(self.references.layers)}
        with moe.routing(expert_count=moe.current_k, mix=(settings.alpha, targets)):
            yield

    def report(self) -> dict[str, Any]:
        settings = self.settings
        return {"references": self.references.metadata, "alpha": settings.alpha, "neighbours": settings.neighbours,
                "bandwidth": settings.bandwidth, "mixed_layers": self.references.layers}
