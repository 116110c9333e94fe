"""The demo PRM (RLHFlow's "+"/"-" conversation format): its tokenizer and chat template, the two training
layouts and their labels, the three-phase training from the policy, and its held-out AUC."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lm_eval_moe.demo.arith import ArithProblem, corrupt, corrupt_each_step, step_results
from lm_eval_moe.demo.policy import PROMPT
from lm_eval_moe.demo.tokenizer import PAD_ID, byte_tokenizer
from lm_eval_moe.demo.training import report_progress, set_lr, shuffled_batches, update, warmup_cosine


PRM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{% else %}<|assistant|>{% endif %}{{ m['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def prm_tokenizer():
    """Byte tokenizer with two turn markers: a compact chat template in the RLHFlow "+"/"-" format. The
    markers get new ids after the bytes, so every byte keeps the policy's id and embedding (an earlier
    layout put them before the bytes: the PRM then started from a policy whose embeddings were all
    shifted by two)."""
    tokenizer = byte_tokenizer(("<|user|>", "<|assistant|>"))
    tokenizer.chat_template = PRM_TEMPLATE
    return tokenizer


PRM_CORRUPTION = 0.5  # each training step's result is wrong with this probability (carried forward)


PRM_PHASES = (  # (name, layout, labels, steps, peak lr), see train_prm
    ("A", "policy", "local", 900, 2e-3),
    ("B", "conversation", "local", 1200, 2e-3),
    ("C", "conversation", "prefix", 600, 1e-3),
)


LABEL_WEIGHT = 5.0  # an assistant-turn label counts as five result digits


@dataclass
class PRMExample:
    """Token ids; next-token targets (-100: none); a "+"/"-" target at the position itself (1 right,
    0 wrong, -100 none) at every result digit and every assistant turn; the weights of those targets."""

    ids: list[int]
    next_tokens: list[int]
    flags: list[int]
    flag_weights: list[float]


def _flag_steps(example: PRMExample, steps: list[str], step_starts: list[int], label_positions: list[int] | None,
                labels: str) -> None:
    """Mark each written result digit "right so far" (local: this step alone; prefix: and every step
    before it), and the step's label at its assistant turn. Digit-level targets give the checker a
    signal per digit instead of one bit per step."""
    all_right = True
    for index, (start, (offset, written, expected)) in enumerate(zip(step_starts, step_results(steps))):
        before = all_right or labels == "local"
        for digit in range(len(written)):
            example.flags[start + offset + digit] = int(before and written[: digit + 1] == expected[: digit + 1])
            example.flag_weights[start + offset + digit] = 1.0
        all_right = all_right and written == expected
        if label_positions is not None:
            example.flags[label_positions[index]] = int(all_right if labels == "prefix" else written == expected)
            example.flag_weights[label_positions[index]] = LABEL_WEIGHT


def policy_layout_example(tokenizer, question: str, steps: list[str], correct: bool, labels: str) -> PRMExample:
    """The solution as the policy writes it (the PRM tokenizer keeps the policy's byte ids); next-token
    targets on correct solutions only."""
    prompt, text = PROMPT.format(question=question), "\n\n".join(steps)
    ids = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    if len(ids) != len(prompt) + len(text):
        raise ValueError("the demo text must be ASCII (one byte token per character)")
    example = PRMExample(ids, [-100] * len(ids), [-100] * len(ids), [0.0] * len(ids))
    if correct:
        example.next_tokens[len(prompt) - 1 : -1] = ids[len(prompt) :]
    starts = [len(prompt) + sum(len(step) + 2 for step in steps[:index]) for index in range(len(steps))]
    _flag_steps(example, steps, starts, None, labels)
    return example


def conversation_example(tokenizer, question: str, steps: list[str], correct: bool, labels: str) -> PRMExample:
    """The RLHFlow conversation exactly as RLHFlowPRM lays it out; the label sits at the position that
    predicts each assistant "+" (the turn marker, right after the step's text), next-token targets on the
    steps of correct solutions."""
    from lm_eval_moe.verifiers.prm import rlhflow_layout

    ids, label_positions = rlhflow_layout(tokenizer, question, steps)
    step_starts = [position - len(step) for position, step in zip(label_positions, steps)]
    for start, step in zip(step_starts, steps):
        if ids[start : start + len(step)] != tokenizer(step, add_special_tokens=False)["input_ids"]:
            raise ValueError(f"step {step!r} should end right before its assistant turn, one byte token per character")
    example = PRMExample(ids, [-100] * len(ids), [-100] * len(ids), [0.0] * len(ids))
    if correct:
        for start, step in zip(step_starts, steps):
            example.next_tokens[start - 1 : start + len(step) - 1] = ids[start : start + len(step)]
    _flag_steps(example, steps, step_starts, label_positions, labels)
    return example


def prm_phase_examples(tokenizer, train: list[ArithProblem], seed: int, layout: str, labels: str) -> list[PRMExample]:
    """Each training problem twice: solved correctly, and with every step wrong with probability
    PRM_CORRUPTION (the policy's own mistakes are wrong results: measured, 87 of its 88 greedy errors)."""
    rng = random.Random(seed)
    examples = []
    for problem in train:
        for steps, correct in ((list(problem.steps), True), (corrupt_each_step(problem, rng, PRM_CORRUPTION), False)):
            if layout == "policy":
                examples.append(policy_layout_example(tokenizer, problem.question, steps, correct, labels))
            else:
                examples.append(conversation_example(tokenizer, problem.question, steps, correct, labels))
    return examples


def _prm_batch(batch: list[PRMExample]) -> dict[str, torch.Tensor]:
    width = max(len(example.ids) for example in batch)
    tensors = {"ids": torch.full((len(batch), width), PAD_ID), "mask": torch.zeros(len(batch), width, dtype=torch.long),
               "next": torch.full((len(batch), width), -100), "flags": torch.full((len(batch), width), -100),
               "weights": torch.zeros(len(batch), width)}
    for row, example in enumerate(batch):
        size = len(example.ids)
        tensors["ids"][row, :size] = torch.tensor(example.ids)
        tensors["mask"][row, :size] = 1
        tensors["next"][row, :size] = torch.tensor(example.next_tokens)
        tensors["flags"][row, :size] = torch.tensor(example.flags)
        tensors["weights"][row, :size] = torch.tensor(example.flag_weights)
    return tensors


def train_prm(train: list[ArithProblem], seed: int, log: dict, policy: torch.nn.Module,
              phases: tuple = PRM_PHASES, run_steps: int | None = None):
    """The PRM starts from the trained policy, with two new turn-marker tokens, and learns in three phases
    (``PRM_PHASES``): the result check in the policy's own layout (A), carried into the RLHFlow conversation
    (B), then propagated to the steps after a wrong one (C, RLHFlow's prefix meaning of "+"); why this order,
    and what the alternatives measured, is in docs/DEMO_MODELS.md. ``run_steps`` stops each phase early (the
    reproduction check replays the start)."""
    import copy

    tokenizer = prm_tokenizer()
    plus, minus = tokenizer.convert_tokens_to_ids("+"), tokenizer.convert_tokens_to_ids("-")
    torch.manual_seed(seed)
    model = copy.deepcopy(policy)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.output_router_logits = False
    log["prm"] = {"format": "rlhflow_prm", "initialised_from": "tiny-arith-moe", "batch_size": 32,
                  "corruption_probability": PRM_CORRUPTION, "phases": {}}
    for offset, (name, layout, labels, steps, peak) in enumerate(phases):
        examples = prm_phase_examples(tokenizer, train, seed + offset, layout, labels)
        optimizer = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01, betas=(0.9, 0.98))
        batches = shuffled_batches(examples, 32, random.Random(seed + 1 + offset))
        model.train()
        losses, start = [], time.time()
        for step in range(run_steps or steps):
            batch = _prm_batch(next(batches))
            set_lr(optimizer, warmup_cosine(step, steps, peak))
            logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits.float()
            language = F.cross_entropy(logits.transpose(1, 2), batch["next"], ignore_index=-100)
            pair = logits[..., [minus, plus]].transpose(1, 2)  # class 1 is "+"
            per_flag = F.cross_entropy(pair, batch["flags"].clamp(min=0), reduction="none")
            loss = language + (per_flag * batch["weights"]).sum() / batch["weights"].sum()
            update(model, optimizer, loss, losses)
            report_progress(f"prm {name}", step, steps, losses, start)
        log["prm"]["phases"][name] = {
            "layout": layout, "labels": labels, "steps": steps, "peak_lr": peak, "examples": len(examples),
            "losses_first_20": losses[:20], "loss_first_100": sum(losses[:100]) / min(100, len(losses)),
            "loss_last_100": sum(losses[-100:]) / min(100, len(losses)), "seconds": round(time.time() - start)}
    model.eval()
    return model, tokenizer


def auc(positives: list[float], negatives: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def evaluate_prm(model, tokenizer, held_out: list[ArithProblem], seed: int, log: dict) -> None:
    """How well the PRM separates correct from corrupted held-out solutions (last-step score) and steps."""
    from lm_eval_moe.verifiers import RLHFlowPRM, aggregate

    verifier = RLHFlowPRM(model, tokenizer, batch_size=32)
    rng = random.Random(seed)
    correct_steps = [list(p.steps) for p in held_out]
    corrupted = [corrupt(p, rng) for p in held_out]
    questions = [p.question for p in held_out]
    good = verifier.score(questions, correct_steps)
    bad = verifier.score(questions, [steps for steps, _ in corrupted])
    good_last = [aggregate(s.scores, "last") for s in good]
    bad_last = [aggregate(s.scores, "last") for s in bad]
    step_hits = step_total = 0
    for scores, (_, labels) in zip(bad, corrupted):
        for score, label in zip(scores.scores, labels):
            step_hits += (score > 0.5) == bool(label)
            step_total += 1
    for scores in good:
        step_hits += sum(score > 0.5 for score in scores.scores)
        step_total += len(scores.scores)
    log["prm"]["held_out_auc_last_step"] = auc(good_last, bad_last)
    log["prm"]["held_out_auc_min"] = auc([aggregate(s.scores, "min") for s in good],
                                         [aggregate(s.scores, "min") for s in bad])
    log["prm"]["held_out_step_accuracy"] = step_hits / step_total
    print(f"PRM held-out AUC (last step) {log['prm']['held_out_auc_last_step']:.3f}, "
          f"step accuracy {log['prm']['held_out_step_accuracy']:.3f}", flush=True)
