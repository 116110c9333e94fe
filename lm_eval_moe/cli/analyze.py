"""The papers' analyses over lm-eval results run with --log_samples: solved sets across k, accuracy
against the budget N, the k kept at each search step.

    lm-eval-moe analyze k_sweep/ budget_sweep/ --output analyses/

Writes analyses.md, analyses.json and PNG plots (with matplotlib). Solved sets across k need runs of one
model, task and method at two or more expert counts (e.g. ``lm-eval-moe sweep --grid expert_count=1,2,3,4``);
budget curves need two or more budgets of a search method; kept k needs step-wise search runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="lm-eval --output_path folders or results_*.json files")
    parser.add_argument("--output", default="analyses", help="folder for analyses.{md,json} and plots")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    from lm_eval_moe.leaderboard import ResultsError, load_runs
    from lm_eval_moe.leaderboard.analyses import Analyses

    try:
        runs = load_runs(args.results)
        analyses = Analyses.of(runs)
    except ResultsError as error:
        print(f"error: {error}")
        return 2
    if not analyses:
        print("error: these runs allow no analysis: they need logged samples (--log_samples) of one model, task "
              "and method at two or more k, a search method at two or more budgets, or step-wise search runs")
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    written = write_analyses(analyses, output, plots=not args.no_plots)
    print(analyses.markdown())
    print(f"{len(runs)} run(s) -> {output}/analyses.{{md,json}}" + (f" and {written} plot(s)" if written else ""))
    return 0


def write_analyses(analyses, output: Path, plots: bool = True) -> int:
    """analyses.md, analyses.json and (with matplotlib) the plots into ``output``; the number of plots."""
    analyses.write(output)
    if not plots:
        return 0
    from lm_eval_moe.leaderboard.plots import PlotDependencyError, analysis_plots

    try:
        images = analysis_plots(analyses)
    except PlotDependencyError as error:
        print(f"warning: no plots ({error})")
        return 0
    for name, png in images.items():
        (output / f"{name}.png").write_bytes(png)
    return len(images)
