"""The papers' analyses over lm-eval results run with --log_samples: solved sets across k, accuracy
against the budget N, the k kept at each search step.

    lm-eval-moe analyze k_sweep/ budget_sweep/ --output analyses/

Writes analyses.md, analyses.json and PNG plots (with matplotlib). Solved sets across k need runs of one
model, task and method at two or more expert counts (e.g. ``lm-eval-moe sweep --grid expert_count=1,2,3,4``);
budget curves need two or more budgets of a search method; kept k needs step-wise search runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lm_eval_moe.leaderboard import Run
    from lm_eval_moe.leaderboard.analyses import Analyses


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="lm-eval --output_path folders or results_*.json files")
    parser.add_argument("--output", default="analyses", help="folder for analyses.{md,json} and plots")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def run(args: argparse.Namespace) -> int:
    loaded = load(args.results)
    if loaded is None:
        return 2
    runs, analyses = loaded
    if not analyses:
        print("error: these runs allow no analysis: they need logged samples (--log_samples) of one model, task "
              "and method at two or more k, a search method at two or more budgets, or step-wise search runs")
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    analyses.write(output)
    images = {}
    if not args.no_plots:
        from lm_eval_moe.leaderboard.plots import analysis_plots

        images = save_plots(lambda: analysis_plots(analyses), output, "")
    print(analyses.markdown())
    print(f"{len(runs)} run(s) -> {output}/analyses.{{md,json}}" + (f" and {len(images)} plot(s)" if images else ""))
    return 0


def load(results: list[str]) -> tuple[list[Run], Analyses] | None:
    """The runs in ``results`` and their analyses; None, with the error printed, on unusable input."""
    from lm_eval_moe.leaderboard import ResultsError, load_runs
    from lm_eval_moe.leaderboard.analyses import Analyses

    try:
        runs = load_runs(results)
        return runs, Analyses.of(runs)
    except ResultsError as error:
        print(f"error: {error}")
        return None


def save_plots(draw: Callable[[], dict[str, bytes]], output: Path, without: str) -> dict[str, bytes]:
    """The PNGs ``draw`` makes, written into ``output``; none, with a warning (plus ``without``), when
    matplotlib is missing."""
    from lm_eval_moe.leaderboard.plots import PlotDependencyError

    try:
        images = draw()
    except PlotDependencyError as error:
        print(f"warning: no plots ({error}){without}")
        return {}
    for name, png in images.items():
        (output / f"{name}.png").write_bytes(png)
    return images
