"""Answer checkers on long and degenerate responses: time and peak memory against response length.

Reasoning models at a large ``max_gen_toks`` emit exactly these shapes when they degenerate (nested
``\\boxed{``, "answer: 1 " without a newline, "the answer is is "), and the checkers run in the harness
process. Every checker (math, numeric, aime, choice4) reads each response once per row; time is measured
without tracing, peak memory in a second pass with ``tracemalloc`` (Python allocations). Past
``MAX_CHECKED_CHARS`` a response is judged on its last ``MAX_CHECKED_CHARS`` characters, so both flatten there.

    python benchmarks/bench_checkers.py [--max-length 4194304]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from lm_eval_moe.scoring import CHECKERS
from lm_eval_moe.scoring.extract import MAX_CHECKED_CHARS
from lm_eval_moe.testing import DEGENERATE_RESPONSES


def check_all(text: str) -> None:
    for checker in CHECKERS.values():
        checker(text, "B" if checker.name.startswith("choice") else "42")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-length", type=int, default=4 << 20)
    args = parser.parse_args()
    lengths = [1 << 10]
    while lengths[-1] * 4 <= args.max_length:
        lengths.append(lengths[-1] * 4)
    check_all("warm up: load math-verify in the helper \\boxed{1}")
    print(f"4 checkers per response; judged window {MAX_CHECKED_CHARS} characters")
    print("| shape | length | seconds | us/char | peak MiB | bytes/char |\n|---|---:|---:|---:|---:|---:|")
    for name, make in DEGENERATE_RESPONSES.items():
        for length in lengths:
            text = make(length)
            start = time.perf_counter()
            check_all(text)
            seconds = time.perf_counter() - start
            tracemalloc.start()
            check_all(text)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"| {name} | {len(text)} | {seconds:.3f} | {1e6 * seconds / len(text):.2f} | {peak / 2**20:.1f} "
                  f"| {peak / len(text):.1f} |", flush=True)


if __name__ == "__main__":
    main()
