"""Run-to-run spread of the demo scores over search seeds: the tolerance of the CI demo gate.

Runs the gate's DES command (tests/demo/test_demo_gate.py) with several seeds on the same problems and
prints each seed's accuracy and the largest drop between two seeds. With a fixed seed the run is
deterministic on one machine (the gate's paired test then sees no difference at all); a code change
that alters the random stream behaves like a seed change, so the gate's --min-drop must exceed this
spread.

    python benchmarks/demo_spread.py [--seeds 1 2 3 4 5] [--limit 50]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lm_eval_moe.demo import GATE_LIMIT, GATE_MODEL_ARGS


def accuracy(seed: int, limit: int, folder: Path) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = folder / f"seed{seed}"
    subprocess.run([sys.executable, "-m", "lm_eval", "--model", "moe_des", "--model_args", f"{GATE_MODEL_ARGS},seed={seed}",
                    "--tasks", "moe_demo_arith", "--limit", str(limit), "--device", "cpu", "--batch_size", "8",
                    "--output_path", str(out)], check=True, env=env, capture_output=True)
    (results,) = out.rglob("results_*.json")
    return json.loads(results.read_text())["results"]["moe_demo_arith"]["exact_match,extract_answer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--limit", type=int, default=GATE_LIMIT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scores = {seed: accuracy(seed, args.limit, Path(folder)) for seed in args.seeds}
    for seed, score in scores.items():
        print(f"seed {seed}: DES accuracy {score:.3f}")
    drop = max(a - b for a, b in itertools.permutations(scores.values(), 2))
    mean = sum(scores.values()) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores.values()) / (len(scores) - 1)) ** 0.5
    print(f"mean {mean:.3f}, std {std:.3f}, largest drop between two seeds {drop:.3f} ({args.limit} problems)")


if __name__ == "__main__":
    main()
