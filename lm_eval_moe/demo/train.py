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
from pathlib import Path

import torch

from lm_eval_moe.demo.arith import problems
from lm_eval_moe.demo.policy import (
    DIFFICULTY, K_ROBUST_COUNTS, K_ROBUST_KEY, K_ROBUST_STEPS, evaluate_policy, train_policy,
)
from lm_eval_moe.demo.prm import evaluate_prm, train_prm
from lm_eval_moe.demo.tokenizer import byte_tokenizer


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
        policy = train_policy(train, args.policy_steps, args.seed, log)
        policy = save(policy, byte_tokenizer(), output / "tiny-arith-moe")
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
