"""The README's demo table and its plot, made from the committed results in ``docs/demo/runs/``.

    python docs/demo/regenerate.py            # table (README block, docs/demo/report.md) + plot, from the runs
    python docs/demo/regenerate.py --run      # first (re)run what is missing: lm-eval-moe reproduce demo --limit 40
    python docs/demo/regenerate.py --check    # exit 1 if the README block or the plot is stale

The plot stores the sha256 of the results files it was drawn from (a PNG text chunk), and the README block
is rendered from the same files, so ``tests/test_docs.py`` can tell when either no longer matches the
committed results.
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
LIMIT = 40
BEGIN, END = "<!-- demo-table:begin (docs/demo/regenerate.py) -->", "<!-- demo-table:end -->"

#: run method id -> row label
LABELS = {
    "greedy-k2": "greedy, k=2",
    "des": "DES (K = {1, 2, 3, 4})",
    "best_of_n": "Best-of-N",
    "beam": "beam search",
    "dvts": "DVTS",
    "self_consistency": "self-consistency",
    "reroute": "rerouting (5 steps every 32 tokens)",
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
    lines = ["| strategy | accuracy ± s.e. | precision | generated tokens | FLOPs | extra FLOPs | n |",
             "|---|---|---|---|---|---|---|"]
    for spec in recipe.runs():
        files = results_files(spec, RUNS)
        if not files:
            raise SystemExit(f"no results for {spec.run_id} under {RUNS}: run with --run")
        task = load_run(files[-1], with_samples=False).tasks[task_name(spec)]
        key = task.metric_key("exact_match")
        method = spec.values["method"]
        cells = [
            LABELS.get(method, method), _percent(task.metrics[key], task.stderr.get(key)),
            _percent(task.value("precision")), f"{task.value('generated_tokens'):.0f}",
            f"{task.value('flops'):.2e}", f"{task.value('extra_flops') or 0:.3g}", str(task.samples_count),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def readme_with(block: str) -> str:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + block + text[end:]


def plot(source: str) -> bytes:
    from lm_eval_moe.leaderboard import load_runs
    from lm_eval_moe.leaderboard.plots import accuracy_vs_cost
    from lm_eval_moe.leaderboard.table import rows

    png = accuracy_vs_cost(rows(load_runs([str(RUNS)])), "flops", source=source)
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
    block, digest = table(), results_digest()
    if args.check:
        from lm_eval_moe.leaderboard.plots import png_source

        stale = [name for name, current in (("README.md", README.read_text() == readme_with(block)),
                                            (str(PLOT.relative_to(REPO)), png_source(PLOT.read_bytes()) == digest))
                 if not current]
        print("stale: " + ", ".join(stale) if stale else "README demo table and plot match docs/demo/runs")
        return 1 if stale else 0
    README.write_text(readme_with(block))
    (DEMO / "report.md").write_text(block)
    PLOT.write_bytes(plot(digest))
    print(block + f"-> README.md, docs/demo/report.md, {PLOT.relative_to(REPO)} (results sha256 {digest[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
