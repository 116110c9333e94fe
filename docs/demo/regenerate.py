"""The demo's tables, analyses and plots, made from the committed results in ``docs/demo/runs/``: the full
table and the analyses in docs/DEMO.md, a five-row excerpt in the README.

    python docs/demo/regenerate.py            # the blocks (README, docs/DEMO.md) + plots, from the runs
    python docs/demo/regenerate.py --run      # first (re)run what is missing: lm-eval-moe reproduce demo --limit 100
    python docs/demo/regenerate.py --check    # exit 1 if a block or the headline plot is stale

The headline plot stores the sha256 of the results files it was drawn from (a PNG text chunk), and the blocks
are rendered from the same files, so ``tests/test_docs.py`` can tell when either no longer matches the
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
REPORT = REPO / "docs" / "DEMO.md"
PLOT = REPO / "docs" / "accuracy_vs_flops.png"
RECIPE = "demo"
LIMIT = 100
BEGIN, END = "<!-- demo-table:begin (docs/demo/regenerate.py) -->", "<!-- demo-table:end -->"
EXCERPT_BEGIN, EXCERPT_END = "<!-- demo-excerpt:begin (docs/demo/regenerate.py) -->", "<!-- demo-excerpt:end -->"
#: the README's excerpt: (policy, method) rows of the k-robust policy, where DES's premise holds
EXCERPT = [("tiny-arith-moe-anyk", method) for method in ("greedy-k2", "best_of_n", "beam", "des", "reroute")]
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


def table(only: list[tuple[str, str]] | None = None) -> str:
    """The Markdown table of every run of the demo recipe (or of the ``only`` (policy, method) rows), in the
    recipe's order."""
    from lm_eval_moe.leaderboard import load_run
    from lm_eval_moe.reproduce.commands import results_files, task_name
    from lm_eval_moe.reproduce.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    lines = ["| policy | strategy | accuracy ± s.e. | precision | generated tokens | FLOPs | extra FLOPs | "
             "wall s / problem | n |", "|---|---|---|---|---|---|---|---|---|"]
    for spec in recipe.runs():
        if only is not None and (spec.values["model"], spec.values["method"]) not in only:
            continue
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


def with_blocks(text: str, blocks: list[tuple[str, str, str]]) -> str:
    """``text`` with each (begin marker, end marker, content) block replaced."""
    for begin, end, content in blocks:
        start, stop = text.index(begin) + len(begin), text.index(end)
        text = text[:start] + "\n" + content + text[stop:]
    return text


def documents(block: str, analyses_block: str, excerpt: str) -> dict[Path, str]:
    """The README and docs/DEMO.md as the committed runs make them."""
    return {README: with_blocks(README.read_text(), [(EXCERPT_BEGIN, EXCERPT_END, excerpt)]),
            REPORT: with_blocks(REPORT.read_text(), [(BEGIN, END, block), (ANALYSES_BEGIN, ANALYSES_END, analyses_block)])}


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
    digest, found = results_digest(), analyses(runs)
    made = documents(table(), analyses_block(found), table(EXCERPT))
    if args.check:
        from lm_eval_moe.leaderboard.plots import png_source

        stale = [str(path.relative_to(REPO)) for path, text in made.items() if path.read_text() != text]
        if png_source(PLOT.read_bytes()) != digest:
            stale.append(str(PLOT.relative_to(REPO)))
        print("stale: " + ", ".join(stale) if stale else "README, docs/DEMO.md and the plot match docs/demo/runs")
        return 1 if stale else 0
    from lm_eval_moe.leaderboard.plots import analysis_plots

    for path, text in made.items():
        path.write_text(text)
    PLOT.write_bytes(plot(runs, digest))
    for name, png in analysis_plots(found).items():
        (DEMO / f"{name}.png").write_bytes(png)
    print(f"-> README.md, docs/DEMO.md, {PLOT.relative_to(REPO)}, docs/demo/*.png (results sha256 {digest[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
