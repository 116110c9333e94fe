"""Train the embedded demo models: a tiny OLMoE policy and a tiny RLHFlow-format PRM, on CPU, seeded.

    python -m lm_eval_moe.demo.train [--output lm_eval_moe/demo/models] [--policy-steps N]

Writes ``tiny-arith-moe/`` (trained at its config's top-2), ``tiny-arith-prm/``, ``tiny-arith-moe-anyk/``
(the k-robust policy: each batch at a k drawn from 1-4) (config, float16 weights, tokenizer) and
``training_log.json`` (losses, held-out accuracy per expert count, PRM AUC). ``--models k-robust`` trains
the k-robust policy alone and adds it to the existing log. The same command with the
same arguments reproduces the shipped metrics (fixed seeds, a fixed CPU thread count; tested).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lm_eval_moe.demo.arith import ArithProblem, Difficulty, corrupt, corrupt_each_step, problems, step_results
from lm_eval_moe.demo.tokenizer import EOS_ID, PAD_ID, byte_tokenizer

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


def _batches(examples: list, batch_size: int, rng: random.Random):
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[i] for i in order[start : start + batch_size]]


def _schedule(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _padded_batch(batch: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float]) -> None:
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    losses.append(loss.item())


def _report(name: str, step: int, steps: int, losses: list[float], start: float) -> None:
    if step % 100 == 0 or step == steps - 1:
        print(f"{name} step {step}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} "
              f"({time.time() - start:.0f} s)", flush=True)


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
    batches = _batches(examples, 32, random.Random(seed))
    moe = attach(model) if expert_counts else None
    draw_k = random.Random(seed + 2)
    model.train()
    losses, drawn = [], []
    start = time.time()
    for step in range(run_steps or steps):
        ids, labels, mask = _padded_batch(next(batches))
        _set_lr(optimizer, _schedule(step, steps, 3e-3))
        if moe is None:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            drawn.append(draw_k.choice(expert_counts))
            with moe.routing(expert_count=drawn[-1]):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        _update(model, optimizer, loss, losses)
        _report(log_key, step, steps, losses, start)
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
    """The PRM starts from the trained policy, with two new turn-marker tokens, and learns in three phases.
    The policy's arithmetic exists only in its own layout (measured: the log-probability of correct step
    results is -1.6 nats per solution there, -14 to -30 in any other layout), so the check "written digit
    vs computed digit" is learned first where that arithmetic works (A: the policy's layout, every result
    digit marked right or wrong), then carried into the RLHFlow conversation (B: same targets plus the
    label at each assistant turn, plus language modelling of correct steps), then propagated: a step after
    a wrong one is wrong too (C: prefix labels, RLHFlow's meaning of "+"). Measured on the held-out set
    (exploratory runs): B straight from the policy, without A, plateaus at a first-wrong-step AUC of 0.69;
    B with one wrong step per solution (``corrupt``) instead of PRM_CORRUPTION reaches a min-AUC of 0.66.
    ``run_steps`` stops each phase early (the reproduction check replays the start)."""
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
        batches = _batches(examples, 32, random.Random(seed + 1 + offset))
        model.train()
        losses, start = [], time.time()
        for step in range(run_steps or steps):
            batch = _prm_batch(next(batches))
            _set_lr(optimizer, _schedule(step, steps, peak))
            logits = model(input_ids=batch["ids"], attention_mask=batch["mask"]).logits.float()
            language = F.cross_entropy(logits.transpose(1, 2), batch["next"], ignore_index=-100)
            pair = logits[..., [minus, plus]].transpose(1, 2)  # class 1 is "+"
            per_flag = F.cross_entropy(pair, batch["flags"].clamp(min=0), reduction="none")
            loss = language + (per_flag * batch["weights"]).sum() / batch["weights"].sum()
            _update(model, optimizer, loss, losses)
            _report(f"prm {name}", step, steps, losses, start)
        log["prm"]["phases"][name] = {
            "layout": layout, "labels": labels, "steps": steps, "peak_lr": peak, "examples": len(examples),
            "losses_first_20": losses[:20], "loss_first_100": sum(losses[:100]) / min(100, len(losses)),
            "loss_last_100": sum(losses[-100:]) / min(100, len(losses)), "seconds": round(time.time() - start)}
    model.eval()
    return model, tokenizer


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
    log["prm"]["held_out_auc_min"] = auc([aggregate(s.scores, "min") for s in good], [aggregate(s.scores, "min") for s in bad])
    log["prm"]["held_out_step_accuracy"] = step_hits / step_total
    print(f"PRM held-out AUC (last step) {log['prm']['held_out_auc_last_step']:.3f}, "
          f"step accuracy {log['prm']['held_out_step_accuracy']:.3f}", flush=True)


def save(model, tokenizer, directory: Path):
    """Stored as float16 (half the size); returns the model reloaded from the files in float32, so every
    metric measured and every model trained after saving starts from exactly the shipped weights (rounding
    in place would also round the rotary frequencies, which are recomputed, not stored, at load)."""
    from transformers import AutoModelForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=str(Path(__file__).parent / "models"))
    parser.add_argument("--policy-steps", type=int, default=600)
    parser.add_argument("--train-problems", type=int, default=20000)
    parser.add_argument("--eval-problems", type=int, default=300)
    parser.add_argument("--k-robust-steps", type=int, default=K_ROBUST_STEPS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models", default="all", choices=["all", "k-robust"],
                        help="k-robust: train only the k-robust policy, into the existing log")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)  # fixed thread count: the same float arithmetic on every run
    output = Path(args.output)
    train = problems(args.seed, args.train_problems, held_out=False, difficulty=DIFFICULTY)
    held_out = problems(args.seed + 1, args.eval_problems, held_out=True, difficulty=DIFFICULTY)
    log_path = output / "training_log.json"
    log: dict = {"seed": args.seed, "difficulty": DIFFICULTY.__dict__, "torch": torch.__version__}
    if args.models == "all":
        policy = save(train_policy(train, args.policy_steps, args.seed, log), byte_tokenizer(), output / "tiny-arith-moe")
        evaluate_policy(policy, held_out, log)
        prm, tokenizer = train_prm(train, args.seed, log, policy)
        prm = save(prm, tokenizer, output / "tiny-arith-prm")
        evaluate_prm(prm, tokenizer, held_out, args.seed, log)
    else:
        log = json.loads(log_path.read_text())
        if log["seed"] != args.seed:
            raise SystemExit(f"--seed {args.seed}: the log in {log_path} was trained with seed {log['seed']}")
    robust = train_policy(train, args.k_robust_steps, args.seed, log, expert_counts=K_ROBUST_COUNTS,
                          log_key=K_ROBUST_KEY)
    robust = save(robust, byte_tokenizer(), output / "tiny-arith-moe-anyk")
    evaluate_policy(robust, held_out, log, log_key=K_ROBUST_KEY)
    log_path.write_text(json.dumps(log, indent=2))
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
