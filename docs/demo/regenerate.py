"""The README's demo table, its analyses and their plots, made from the committed results in ``docs/demo/runs/``.

    python docs/demo/regenerate.py            # tables (README blocks, docs/demo/report.md) + plots, from the runs
    python docs/demo/regenerate.py --run      # first (re)run what is missing: lm-eval-moe reproduce demo --limit 100
    python docs/demo/regenerate.py --check    # exit 1 if a README block or the headline plot is stale

The headline plot stores the sha256 of the results files it was drawn from (a PNG text chunk), and the README
blocks are rendered from the same files, so ``tests/test_docs.py`` can tell when either no longer matches the
committed results. The analysis plots (``docs/demo/*.png``, ``lm-eval-moe analyze``) are redrawn with them.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parents[1]
RUNS = DEMO / "runs"
README = REPO / "README.md"
PLOT = REPO / "docs" / "accuracy_vs_flops.png"
RECIPE = "demo"
LIMIT = 100
BEGIN, END = "<!-- demo-table:begin (docs/demo/regenerate.py) -->", "<!-- demo-table:end -->"
ANALYSES_BEGIN, ANALYSES_END = "<!-- demo-analyses:begin (docs/demo/regenerate.py) -->", "<!-- demo-analyses:end -->"

#: run method id -> row label
LABELS = {
    **{f"greedy-k{k}": f"greedy, k={k}" for k in range(1, 5)},
    "des": "DES (K = {1, 2, 3, 4})",
    "des_adaptive": "adaptive DES (ours, K = {1, 2, 3, 4})",
    "des_majority": "DES without a PRM (likelihood, majority)",
    "best_of_n": "Best-of-N",
    "beam": "beam search",
    "dvts": "DVTS",
    "self_consistency": "self-consistency",
    "reroute": "rerouting (5 steps every 32 tokens)",
    "des-n4": "DES, N = 4",
    "des-n16": "DES, N = 16",
    "best_of_n-n4": "Best-of-N, N = 4",
    "best_of_n-n16": "Best-of-N, N = 16",
}


def results_digest() -> str:
    """sha256 over the committed results files (relative path and bytes, in path order)."""
    digest = hashlib.sha256()
    for path in sorted(RUNS.rglob("results_*.json")):
        digest.update(str(path.relative_to(RUNS)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _percent(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.1f}%" + (f" ± {100 * stderr:.1f}" if stderr is not None else "")


def table() -> str:
    """The Markdown table of every run of the demo recipe, in the recipe's order."""
    from lm_eval_moe.leaderboard import load_run
    from lm_eval_moe.reproduce.commands import results_files, task_name
    from lm_eval_moe.reproduce.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    lines = ["| policy | strategy | accuracy ± s.e. | precision | generated tokens | FLOPs | extra FLOPs | "
             "wall s / problem | n |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in recipe.runs():
        files = results_files(spec, RUNS)
        if not files:
            raise SystemExit(f"no results for {spec.run_id} under {RUNS}: run with --run")
        task = load_run(files[-1], with_samples=False).tasks[task_name(spec)]
        key = task.metric_key("exact_match")
        method = spec.values["method"]
        cells = [
            spec.values["model"], LABELS.get(method, method), _percent(task.metrics[key], task.stderr.get(key)),
            _percent(task.value("precision")), f"{task.value('generated_tokens'):.0f}",
            f"{task.value('flops'):.2e}", f"{task.value('extra_flops') or 0:.3g}",
            f"{task.value('wall_seconds'):.2f}", str(task.samples_count),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def committed_runs():
    """Every committed run with its samples (read once: the analyses and the plot both need them)."""
    from lm_eval_moe.leaderboard import load_runs

    return load_runs([str(RUNS)])


def analyses(runs):
    from lm_eval_moe.leaderboard.analyses import Analyses

    return Analyses.of(runs)


def analyses_block(found) -> str:
    """The analyses as a README block (headings one level below the README's demo section)."""
    return found.markdown().replace("## ", "#### ") + "\n"


def readme_with(block: str, analyses_block: str) -> str:
    text = README.read_text()
    for begin, end, content in ((BEGIN, END, block), (ANALYSES_BEGIN, ANALYSES_END, analyses_block)):
        start, stop = text.index(begin) + len(begin), text.index(end)
        text = text[:start] + "\n" + content + text[stop:]
    return text


def plot(runs, source: str) -> bytes:
    from lm_eval_moe.leaderboard.plots import accuracy_vs_cost
    from lm_eval_moe.leaderboard.table import rows

    png = accuracy_vs_cost(rows(runs), "flops", source=source)
    if png is None:
        raise SystemExit(f"nothing to plot under {RUNS}")
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="run the recipe's missing runs first")
    parser.add_argument("--check", action="store_true", help="only check that README and plot are current")
    args = parser.parse_args()
    if args.run:
        from lm_eval_moe.cli import main as cli

        if cli(["reproduce", RECIPE, "--limit", str(LIMIT), "--output", str(RUNS)]) != 0:
            return 1
    runs = committed_runs()
    block, digest, found = table(), results_digest(), analyses(runs)
    block_of_analyses = analyses_block(found)
    if args.check:
        from lm_eval_moe.leaderboard.plots import png_source

        stale = [name for name, current in (("README.md", README.read_text() == readme_with(block, block_of_analyses)),
                                            (str(PLOT.relative_to(REPO)), png_source(PLOT.read_bytes()) == digest))
                 if not current]
        print("stale: " + ", ".join(stale) if stale else "README demo blocks and plot match docs/demo/runs")
        return 1 if stale else 0
    from lm_eval_moe.leaderboard.plots import analysis_plots

    README.write_text(readme_with(block, block_of_analyses))
    (DEMO / "report.md").write_text(block + "\n" + found.markdown())
    PLOT.write_bytes(plot(runs, digest))
    for name, png in analysis_plots(found).items():
        (DEMO / f"{name}.png").write_bytes(png)
    print(block + f"-> README.md, docs/demo/report.md, {PLOT.relative_to(REPO)}, docs/demo/*.png "
          f"(results sha256 {digest[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
