"""The demo policies: a tiny OLMoE trained on the arithmetic problems (at its config's top-2, or with each batch
at a k drawn from 1-4: the k-robust policy), and their held-out accuracy per expert count."""

from __future__ import annotations

import random
import time

import torch

from lm_eval_moe.demo.arith import ArithProblem, Difficulty
from lm_eval_moe.demo.tokenizer import EOS_ID, PAD_ID, byte_tokenizer
from lm_eval_moe.demo.training import padded_batch, report_progress, set_lr, shuffled_batches, update, warmup_cosine


DIFFICULTY = Difficulty()


PROMPT = "Problem: {question}\n\nSolution: "


#: the k-robust policy (``tiny-arith-moe-anyk``): same shape and data, each batch at a k drawn from these
K_ROBUST_COUNTS = (1, 2, 3, 4)


K_ROBUST_STEPS = 800


K_ROBUST_KEY = "k_robust_policy"


POLICY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=4, num_experts=8, num_experts_per_tok=2, max_position_embeddings=512)


def policy_text(problem: ArithProblem) -> tuple[str, str]:
    return PROMPT.format(question=problem.question), problem.solution


def train_policy(train: list[ArithProblem], steps: int, seed: int, log: dict, run_steps: int | None = None,
                 expert_counts: tuple[int, ...] | None = None, log_key: str = "policy") -> torch.nn.Module:
    """``steps`` sets the schedule; ``run_steps`` stops early (the reproduction check replays the start).

    ``expert_counts``: each batch runs at one k drawn uniformly from these (seeded), so that every k of the
    range is a working setting, as in real MoEs, instead of the config's top-k only (the k-robust policy)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lm_eval_moe.moe import attach

    tokenizer = byte_tokenizer()
    config = AutoConfig.for_model("olmoe", vocab_size=len(tokenizer), pad_token_id=PAD_ID, bos_token_id=1,
                                  eos_token_id=EOS_ID, tie_word_embeddings=False, router_aux_loss_coef=0.01,
                                  output_router_logits=True, **POLICY_SHAPE)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    examples = []
    for problem in train:
        prompt, solution = policy_text(problem)
        prompt_ids = tokenizer.encode(prompt)
        ids = prompt_ids + tokenizer.encode(solution) + [EOS_ID]
        examples.append((ids, [-100] * len(prompt_ids) + ids[len(prompt_ids):]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    batches = shuffled_batches(examples, 32, random.Random(seed))
    moe = attach(model) if expert_counts else None
    draw_k = random.Random(seed + 2)
    model.train()
    losses, drawn = [], []
    start = time.time()
    for step in range(run_steps or steps):
        ids, labels, mask = padded_batch(next(batches))
        set_lr(optimizer, warmup_cosine(step, steps, 3e-3))
        if moe is None:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            drawn.append(draw_k.choice(expert_counts))
            with moe.routing(expert_count=drawn[-1]):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        update(model, optimizer, loss, losses)
        report_progress(log_key, step, steps, losses, start)
    if moe is not None:
        moe.detach()
    model.eval()
    model.config.output_router_logits = False
    log[log_key] = {"steps": steps, "batch_size": 32, "train_problems": len(train), "shape": POLICY_SHAPE,
                    "losses_first_20": losses[:20], "loss_first_100": sum(losses[:100]) / min(100, len(losses)),
                    "loss_last_100": sum(losses[-100:]) / min(100, len(losses)), "seconds": round(time.time() - start)}
    if expert_counts:
        log[log_key]["train_expert_counts"] = list(expert_counts)
        log[log_key]["drawn_k_first_20"] = drawn[:20]
        log[log_key]["batches_per_k"] = {str(k): drawn.count(k) for k in expert_counts}
    return model


def solve(model, held_out: list[ArithProblem], **generation) -> list[str]:
    """The policy's solutions in its own prompt layout, 50 problems per left-padded batch."""
    tokenizer = byte_tokenizer()
    texts = []
    for start in range(0, len(held_out), 50):
        prompts = [tokenizer.encode(policy_text(p)[0]) for p in held_out[start : start + 50]]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), PAD_ID)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=120, pad_token_id=PAD_ID,
                                 eos_token_id=EOS_ID, **generation)
        texts += [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, width:].tolist()]
    return texts


def evaluate_policy(model, held_out: list[ArithProblem], log: dict, expert_counts: tuple[int, ...] = (1, 2, 3, 4, 8),
                    log_key: str = "policy") -> None:
    """Greedy accuracy on held-out problems at several expert counts (the default k is 2)."""
    from lm_eval_moe.moe import attach
    from lm_eval_moe.scoring import check_numeric

    moe = attach(model)
    accuracy = {}
    for k in expert_counts:
        with moe.routing(expert_count=k):
            texts = solve(model, held_out, do_sample=False)
        correct = sum(check_numeric(text, str(p.answer)).correct for p, text in zip(held_out, texts))
        accuracy[str(k)] = correct / len(held_out)
        print(f"held-out greedy accuracy at k={k}: {accuracy[str(k)]:.3f}", flush=True)
    moe.detach()
    log[log_key]["held_out_accuracy"] = accuracy
    log[log_key]["held_out_problems"] = len(held_out)
