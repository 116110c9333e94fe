"""Token sampling with one random generator per sequence.

Each sequence draws from its own ``torch.Generator`` seeded by the search (problem, step, slot), so a
sequence's tokens do not depend on which other sequences share its batch: the same search gives the
same candidates at any batch size, and a problem gets the same seeds on any data-parallel rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0 (0 = off)")


def derived_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (a run's seed, a document, a step, a slot): the same parts give
    the same seed in any process, batch or data-parallel split."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def sample_rows(logits: torch.Tensor, config: SamplingConfig, generators: Sequence[torch.Generator]
                ) -> tuple[list[int], list[float]]:
    """(tokens, policy log-probabilities at temperature 1) for the rows of (rows, vocab) float logits, one draw
    per row from that row's generator. The arithmetic runs on the whole batch and the results cross to the
    host once, so a decode step waits on the device once, not twice per row; each row's draw is the one it
    would get alone (same probabilities, same generator)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    if config.temperature == 0:
        tokens = torch.argmax(logits, dim=-1)
    else:
        scaled = logits / config.temperature
        if config.top_k:
            threshold = torch.topk(scaled, min(config.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        if config.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            drop = cumulative - sorted_probs > config.top_p  # keep the smallest prefix reaching top_p
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        tokens = torch.cat([torch.multinomial(row, 1, generator=generator) for row, generator in zip(probs, generators)])
    chosen = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens.tolist(), chosen.tolist()
