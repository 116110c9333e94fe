"""Time to check all 500 MATH-500 gold answers, by path.

* ``boxed_gold``: a response stating the gold answer in \\boxed{} (what a correct model writes; the
  normalised-string shortcut decides most of these);
* ``math_verify``: the same answers forced through Math-Verify (what a differently written correct
  answer costs), in the main thread (SIGALRM bound);
* ``math_verify_thread``: the same from a worker thread, where the bound needs the helper process.

    python benchmarks/bench_answer_check.py
"""

from __future__ import annotations

import json
import threading
import time

from _common import benchmark_data_dir

from lm_eval_moe.scoring import check_math
from lm_eval_moe.scoring.bounded import call_bounded
from lm_eval_moe.scoring.equivalence import _math_verify


def main() -> None:
    data_dir = benchmark_data_dir()
    answers = [json.loads(line)["answer"] for line in (data_dir / "math500" / "test.jsonl").open()]
    timings = {}

    start = time.perf_counter()
    correct = sum(check_math(f"Steps.\n\nThe final answer is $\\boxed{{{a}}}$.", a).correct for a in answers)
    timings["boxed_gold"] = time.perf_counter() - start

    start = time.perf_counter()
    verified = sum(call_bounded(_math_verify, (a, a), 5.0) for a in answers)
    timings["math_verify"] = time.perf_counter() - start

    outcome = {}

    def in_thread() -> None:
        begin = time.perf_counter()
        outcome["verified"] = sum(call_bounded(_math_verify, (a, a), 5.0) for a in answers)
        outcome["seconds"] = time.perf_counter() - begin

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    timings["math_verify_thread"] = outcome["seconds"]

    print(f"boxed gold: {correct}/500 correct in {timings['boxed_gold']:.2f} s")
    print(f"math-verify (main thread): {verified}/500 equal in {timings['math_verify']:.2f} s "
          f"({1000 * timings['math_verify'] / 500:.1f} ms per answer)")
    print(f"math-verify (worker thread, helper process): {outcome['verified']}/500 in {timings['math_verify_thread']:.2f} s "
          f"({timings['math_verify_thread'] / timings['math_verify']:.2f}x the main-thread time)")


if __name__ == "__main__":
    main()
