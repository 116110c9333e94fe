"""Merge lm-eval results into one leaderboard: Markdown, CSV, a self-contained HTML page, PNG plots.

    lm-eval-moe leaderboard results/ other_run/results_2026-11-22T10-00-00.json --output leaderboard/

Rows are model x method x task; columns accuracy +- standard error, precision, coverage (any of the N candidates correct), generated tokens,
FLOPs and average k (the last four from our models only). Plots: accuracy vs FLOPs and vs tokens per
method and task, the distribution of the chosen k, router entropy of rerouting runs; and where the runs allow
them, the analyses of ``lm-eval-moe analyze`` (analyses.md/json, their plots, a section of the HTML page).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="lm-eval --output_path folders or results_*.json files")
    parser.add_argument("--output", default="leaderboard", help="folder for leaderboard.{md,csv,html} and plots")
    parser.add_argument("--no-groups", action="store_true", help="leave group aggregates out of the table")
    parser.add_argument("--no-plots", action="store_true",
                        help="skip the PNG plots (without matplotlib they are skipped anyway, with a warning)")


def run(args: argparse.Namespace) -> int:
    from lm_eval_moe.cli.analyze import load, save_plots
    from lm_eval_moe.leaderboard.table import markdown, rows, to_csv, to_html

    loaded = load(args.results)
    if loaded is None:
        return 2
    runs, analyses = loaded
    table = rows(runs, include_groups=not args.no_groups)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    if not args.no_plots:
        from lm_eval_moe.leaderboard.plots import all_plots

        images = save_plots(lambda: all_plots(runs, table, analyses), output, "; the tables are written without them")
    if analyses:
        analyses.write(output)
    (output / "leaderboard.md").write_text(markdown(table))
    (output / "leaderboard.csv").write_text(to_csv(table))
    (output / "leaderboard.html").write_text(to_html(table, images, analyses.markdown()))
    print(markdown(table))
    print(f"{len(runs)} run(s), {len(table)} rows -> {output}/leaderboard.{{md,csv,html}}"
          + (f" and {len(images)} plot(s)" if images else ""))
    return 0
