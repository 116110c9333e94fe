"""CI gate: did the current run regress against the baseline? Exit 1 on regression, 0 if not, 2 if the
runs cannot be compared (missing task, other task version, other documents or task configuration).

    lm-eval-moe regress --baseline baseline_results/ --current results/ [--alpha 0.05] [--min-drop 0.01]

Per task: with per-sample results on both sides (--log_samples) a paired one-sided sign test over the
documents (McNemar's exact test for 0/1 metrics); otherwise a z-test from the standard errors. A task
regresses when the current run is worse with p < alpha AND the drop is at least --min-drop.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True, help="baseline results folder or results_*.json")
    parser.add_argument("--current", required=True, help="current results folder or results_*.json")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task of the baseline)")
    parser.add_argument("--metric", default=None, help="metric name (default: the task's accuracy metric)")
    parser.add_argument("--alpha", type=float, default=0.05, help="one-sided significance level (default 0.05)")
    parser.add_argument("--min-drop", type=float, default=0.0, help="smallest drop that counts (absolute, default 0)")


def _single(path: str, role: str):
    from lm_eval_moe.leaderboard import ResultsError, load_runs

    runs = load_runs([path])
    if len(runs) != 1:
        raise ResultsError(f"{role} {path}: expected one results file, found {len(runs)}: "
                           + ", ".join(str(r.path) for r in runs))
    return runs[0]


def run(args: argparse.Namespace) -> int:
    from lm_eval_moe.leaderboard import ResultsError
    from lm_eval_moe.leaderboard.regress import UnusableComparison, compare

    try:
        baseline, current = _single(args.baseline, "baseline"), _single(args.current, "current")
        verdicts = compare(baseline, current, args.tasks.split(",") if args.tasks else None, args.metric, args.alpha,
                           args.min_drop)
    except (ResultsError, UnusableComparison) as error:
        print(f"unusable input: {error}")
        return 2
    print(f"baseline: {baseline.path} ({baseline.label})\ncurrent:  {current.path} ({current.label})")
    print(f"rule: regression if worse with one-sided p < {args.alpha} and drop >= {args.min_drop}\n")
    print("| task | metric | baseline | current | difference | test | p | verdict |\n|---|---|---|---|---|---|---|---|")
    for v in verdicts:
        print(f"| {v.task} | {v.metric} | {v.baseline:.4f} | {v.current:.4f} | {v.difference:+.4f} | {v.test} | "
              f"{v.p_value:.4f} | {'REGRESSION' if v.regression else 'ok'} |")
    regressed = [v.task for v in verdicts if v.regression]
    print(f"\n{'REGRESSION in ' + ', '.join(regressed) if regressed else 'no regression'} ({len(verdicts)} task(s))")
    return 1 if regressed else 0
