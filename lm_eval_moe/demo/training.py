"""The training loop pieces the demo models share: shuffled batches, a warm-up + cosine schedule, padded
batches, one optimiser step, and progress lines."""

from __future__ import annotations

import math
import random
import time

import torch

from lm_eval_moe.demo.tokenizer import PAD_ID


def shuffled_batches(examples: list, batch_size: int, rng: random.Random):
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


def warmup_cosine(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def padded_batch(batch: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, targets, attention mask), right-padded; targets -100 where nothing is trained."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), PAD_ID)
    targets = torch.full((len(batch), width), -100)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, (tokens, labels) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        targets[row, : len(tokens)] = torch.tensor(labels)
        mask[row, : len(tokens)] = 1
    return ids, targets, mask


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float]) -> None:
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    losses.append(loss.item())


def report_progress(name: str, step: int, steps: int, losses: list[float], start: float) -> None:
    if step % 100 == 0 or step == steps - 1:
        print(f"{name} step {step}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
