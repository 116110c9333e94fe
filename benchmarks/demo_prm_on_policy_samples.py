"""How well the shipped demo PRM judges the shipped policy's own sampled solutions (not ``corrupt()``).

The training log's AUC compares correct solutions with generated corruptions (one step's result off); a
search needs the PRM to rank the policy's real outputs. This samples one solution per held-out problem
(temperature 0.8, the model's k) and reports the AUC of the PRM's last-step score between solutions with a
right and a wrong final answer, and how often "score > 0.5" agrees with the answer check, with the
disagreements split by whether every written step result is arithmetically right (the PRM was trained to
check results, not to notice a miscopied operand) or the answer is right despite a wrong step.

    python benchmarks/demo_prm_on_policy_samples.py [--problems 200] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.demo import MODELS_DIR
from lm_eval_moe.demo.arith import problems, step_results
from lm_eval_moe.demo.policy import DIFFICULTY, solve
from lm_eval_moe.demo.prm import auc
from lm_eval_moe.scoring import check_numeric
from lm_eval_moe.verifiers import RLHFlowPRM, aggregate, split_steps

STEP_RESULTS = {True: "all step results right", False: "a step result wrong", None: "unparsable step"}


def results_all_right(steps: list[str]) -> bool | None:
    """Whether every step's written result is what its own numbers give; None: a step is not parsable."""
    try:
        return all(written == expected for _, written, expected in step_results(steps))
    except ValueError:
        return None


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="the PRM's dtype")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    policy = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe"), dtype=torch.float32)
    path = resolve_checkpoint("tiny-arith-prm")
    prm = RLHFlowPRM(AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)),
                     AutoTokenizer.from_pretrained(path), batch_size=32)
    seed = json.loads((MODELS_DIR / "training_log.json").read_text())["seed"]
    held_out = problems(seed + 1, args.problems, held_out=True, difficulty=DIFFICULTY)  # the log's held-out set
    texts = solve(policy, held_out, do_sample=True, temperature=0.8)
    correct = [check_numeric(text, str(p.answer)).correct for p, text in zip(held_out, texts)]
    steps = [split_steps(text) for text in texts]
    scores = [aggregate(s.scores, "last") for s in prm.score([p.question for p in held_out], steps)]
    right = [score for score, ok in zip(scores, correct) if ok]
    wrong = [score for score, ok in zip(scores, correct) if not ok]
    agree = sum((score > 0.5) == ok for score, ok in zip(scores, correct)) / len(scores)
    kinds = Counter(("right answer" if ok else "wrong answer", STEP_RESULTS[results_all_right(step_list)])
                    for score, ok, step_list in zip(scores, correct, steps) if (score > 0.5) != ok)
    print(f"{len(held_out)} held-out problems, sampled accuracy {len(right) / len(scores):.3f}; PRM ({args.dtype}) "
          f"last-step AUC right vs wrong answers {auc(right, wrong):.3f}, score > 0.5 agrees with the check {agree:.3f}")
    for (answer, results), count in kinds.most_common():
        print(f"  disagreement: {answer}, {results}: {count}")


if __name__ == "__main__":
    main()
