"""Leaderboard plots (PNG): accuracy vs FLOPs and vs generated tokens per method and task, the
distribution of the chosen expert count, router entropy of rerouting runs, and the analyses of
``analyses.py`` (solved sets across k, accuracy against the budget N, kept k per step, router confidence
before and after rerouting).

Needs matplotlib (``pip install lm_eval_moe[plots]``); without it the command writes its tables and says
that the plots were skipped.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Sequence

from lm_eval_moe.leaderboard.analyses import Analyses, BudgetPoint, KOverlap, PathwayReport
from lm_eval_moe.leaderboard.results import Run
from lm_eval_moe.leaderboard.settings import settings_label
from lm_eval_moe.leaderboard.table import Row
from lm_eval_moe.search.strategies import STRATEGIES


class PlotDependencyError(RuntimeError):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotDependencyError("plots need matplotlib: pip install 'lm_eval_moe[plots]'") from None
    return plt


#: PNG text chunk naming the data a plot was drawn from (see :func:`png_source`).
SOURCE_KEY = "Source"


def _png(figure, source: str | None = None) -> bytes:
    buffer = io.BytesIO()
    metadata = {SOURCE_KEY: source} if source else None
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata=metadata)
    return buffer.getvalue()


def _finished(plt, figure, source: str | None = None) -> bytes:
    """The figure as PNG bytes, closed (pyplot keeps every open figure alive)."""
    data = _png(figure, source)
    plt.close(figure)
    return data


def png_source(png: bytes) -> str | None:
    """The ``Source`` text a plot was saved with (PNG tEXt chunk), read without an image library."""
    position = 8  # after the signature
    while position + 8 <= len(png):
        length = int.from_bytes(png[position : position + 4], "big")
        kind = png[position + 4 : position + 8]
        if kind == b"tEXt":
            key, _, value = png[position + 8 : position + 8 + length].partition(b"\0")
            if key.decode("latin-1") == SOURCE_KEY:
                return value.decode("latin-1")
        if kind == b"IEND":
            break
        position += 12 + length
    return None


def run_labels(runs: Sequence[Run]) -> dict[int, str]:
    """A label per run (by ``id``) that tells it apart from the others: method and model, then its settings where
    two runs share those, then its folder."""
    labels = {id(run): f"{run.method} ({run.model.rsplit('/', 1)[-1]})" for run in runs}

    def settings(run: Run) -> str:
        return ", ".join(part for part in settings_label(run.settings, []).split(", ") if part != run.method)

    for extra in (settings, lambda run: run.path.parent.name):
        counts = Counter(labels.values())
        labels = {id(run): labels[id(run)] + (f", {extra(run)}" if counts[labels[id(run)]] > 1 and extra(run) else "")
                  for run in runs}
    return labels


def _grid(plt, panels: int, width: float = 3.6, height: float = 3.0, columns: int = 4):
    """A figure of ``panels`` small multiples, at most ``columns`` a row; unused axes hidden."""
    columns = max(1, min(columns, panels))
    rows = -(-panels // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    flat = [axis for row in axes for axis in row]
    for axis in flat[panels:]:
        axis.set_visible(False)
    return figure, flat[:panels]


def _k_colours(plt, ks: Sequence[float]) -> dict[float, tuple]:
    """One colour per k, the same in every panel (ordered: a sequential map, so k reads as a quantity)."""
    cmap = plt.get_cmap("viridis")
    return {k: cmap(0.1 + 0.8 * index / max(1, len(ks) - 1)) for index, k in enumerate(sorted(ks))}


def accuracy_vs_cost(table: Sequence[Row], cost: str, source: str | None = None) -> bytes | None:
    """One panel per task and model; one series per method (points sorted by cost, joined), each method in
    the same colour and marker in every panel, the legend beside the panels. ``source`` is stored in the PNG
    (e.g. a digest of the results it was drawn from)."""
    plt = _pyplot()
    panels: dict[tuple[str, str], dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        x = row.tokens
        if cost == "flops":
            x = None if row.flops is None else row.flops + (row.extra_flops or 0.0) + (row.verifier_flops or 0.0)
        if x is None or row.accuracy is None:
            continue
        panels[(row.task, row.model.rsplit("/", 1)[-1])][row.method].append((x, row.accuracy, row.stderr or 0.0))
    if not panels:
        return None
    methods = sorted({method for series in panels.values() for method in series})
    colours = plt.get_cmap("tab20").colors
    style = {method: (colours[i % len(colours)], "osD^v<>p*h"[i % 10]) for i, method in enumerate(methods)}
    keys = sorted(panels)
    figure, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys) + 2.5, 4), squeeze=False, sharey=True)
    for axis, (task, model) in zip(axes[0], keys):
        for method, points in sorted(panels[(task, model)].items()):
            points.sort()
            xs, ys, errors = zip(*points)
            colour, marker = style[method]
            axis.errorbar(xs, ys, yerr=errors, marker=marker, color=colour, capsize=3, label=method)
        axis.set_title(f"{task}\n{model}", fontsize=9)
        axis.set_xlabel("FLOPs per sample (policy, rerouting's updates, verifier)" if cost == "flops" else
                        "generated tokens per sample")
        if cost == "flops":
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    handles = [plt.Line2D([], [], color=style[m][0], marker=style[m][1], label=m) for m in methods]
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    figure.suptitle(f"accuracy vs {'FLOPs' if cost == 'flops' else 'generated tokens'}")
    figure.tight_layout()
    return _finished(plt, figure, source)


def chosen_k_distribution(runs: Sequence[Run]) -> bytes | None:
    """The k of each selected candidate: one panel per run that chooses among several k (a DES run's set K; a
    fixed-k run would show one bar), as the share of its samples at each k, k in the same colour everywhere."""
    plt = _pyplot()
    choosing = [run for run in runs if len(run.settings.get("expert_counts") or []) > 1
                and "expert_counts" in getattr(STRATEGIES.get(str(run.settings.get("strategy"))), "uses", ())]
    labels = run_labels(choosing)
    series = {labels[id(run)]: [float(s["selected_expert_count"]) for task in run.tasks.values()
                                for s in task.samples.values() if s.get("selected_expert_count") is not None]
              for run in choosing}
    series = {label: values for label, values in sorted(series.items()) if values}
    if not series:
        return None
    ks = sorted({value for values in series.values() for value in values})
    colours = _k_colours(plt, ks)
    figure, axes = _grid(plt, len(series))
    for axis, (label, values) in zip(axes, series.items()):
        counts = Counter(values)
        axis.bar(range(len(ks)), [100 * counts[k] / len(values) for k in ks], color=[colours[k] for k in ks])
        axis.set_xticks(range(len(ks)), [f"{k:g}" for k in ks])
        axis.set_ylim(0, 100)
        axis.set_title(_wrapped(label), fontsize=8)
        axis.set_xlabel("k of the selected candidate", fontsize=8)
        axis.set_ylabel("% of samples", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("chosen k: the expert count of each selected candidate")
    figure.tight_layout()
    return _finished(plt, figure)


def _wrapped(text: str, width: int = 38) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def router_entropy(runs: Sequence[Run]) -> bytes | None:
    """Mean routing entropy in the first and the last generated block of rerouting runs, per run and task."""
    plt = _pyplot()
    labels = run_labels(runs)
    bars = []
    for run in runs:
        for name, task in sorted(run.tasks.items()):
            first = [s["router_entropy_first_block"] for s in task.samples.values() if "router_entropy_first_block" in s]
            last = [s["router_entropy_last_block"] for s in task.samples.values() if "router_entropy_last_block" in s]
            if first and last:
                bars.append((f"{labels[id(run)]}\n{name}", sum(first) / len(first), sum(last) / len(last)))
    if not bars:
        return None
    figure, axis = plt.subplots(figsize=(max(5.0, 2.6 * len(bars)), 4))
    positions = range(len(bars))
    axis.bar([p - 0.2 for p in positions], [b[1] for b in bars], width=0.4, label="first block")
    axis.bar([p + 0.2 for p in positions], [b[2] for b in bars], width=0.4, label="last block")
    axis.set_xticks(list(positions), ["\n".join(_wrapped(line, 24) for line in b[0].split("\n")) for b in bars],
                    fontsize=8)
    axis.set_ylabel("mean routing entropy (nats)")
    axis.set_title("router entropy under rerouting")
    axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return _finished(plt, figure)


def k_overlap(overlap: KOverlap) -> bytes:
    """Per-k accuracy beside the union and intersection of the solved sets, and their pairwise Jaccard."""
    plt = _pyplot()
    figure, (bars, grid) = plt.subplots(1, 2, figsize=(10, 4))
    counts = overlap.counts
    bars.bar(range(len(counts)), [100 * overlap.accuracy(k) for k in counts], color="tab:blue", label="accuracy at k")
    bars.axhline(100 * overlap.union, color="tab:green", linestyle="--", label="union (some k)")
    bars.axhline(100 * overlap.intersection, color="tab:red", linestyle=":", label="intersection (every k)")
    bars.set_xticks(range(len(counts)), [f"k={k}" for k in counts])
    bars.set_ylabel("% of problems solved")
    bars.set_ylim(0, 100)
    bars.legend(fontsize=8, loc="lower right")
    bars.set_title(f"{overlap.method} / {overlap.task} ({overlap.documents} problems)")
    matrix = [[overlap.jaccard(a, b) for b in counts] for a in counts]
    image = grid.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            grid.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    grid.set_xticks(range(len(counts)), [f"k={k}" for k in counts])
    grid.set_yticks(range(len(counts)), [f"k={k}" for k in counts])
    grid.set_title("Jaccard similarity of the solved sets")
    figure.colorbar(image, ax=grid)
    figure.suptitle(overlap.model.rsplit("/", 1)[-1])
    return _finished(plt, figure)


def budget_curves(curves: dict[tuple[str, str, str], list[BudgetPoint]]) -> bytes | None:
    """Accuracy (with standard errors) and FLOPs against the budget N, one series per method."""
    if not curves:
        return None
    plt = _pyplot()
    tasks = sorted({task for _, task, _ in curves})
    figure, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7), squeeze=False)
    for column, task in enumerate(tasks):
        for (model, name, label), points in curves.items():
            if name != task:
                continue
            series = f"{label} ({model.rsplit('/', 1)[-1]})"
            budgets = [p.budget for p in points]
            axes[0][column].errorbar(budgets, [100 * (p.accuracy or 0) for p in points],
                                     yerr=[100 * (p.stderr or 0) for p in points], marker="o", capsize=3, label=series)
            axes[1][column].plot(budgets, [p.flops or 0 for p in points], marker="o", label=series)
        for row, ylabel in ((0, "accuracy %"), (1, "FLOPs per sample")):
            axes[row][column].set_xscale("log", base=2)
            axes[row][column].set_xlabel("budget N")
            axes[row][column].set_ylabel(ylabel)
            axes[row][column].grid(alpha=0.3)
        axes[1][column].set_yscale("log")
        axes[0][column].set_title(task)
        axes[0][column].legend(fontsize=8)
    return _finished(plt, figure)


def kept_k_per_step(found: dict[tuple[str, str, str], dict[int, Counter]]) -> bytes | None:
    """Stacked shares of each k among the kept states, per step: one panel per method and task (at most four a
    row), k in the same colour in every panel, one legend beside them."""
    if not found:
        return None
    plt = _pyplot()
    ks = sorted({k for per_step in found.values() for counter in per_step.values() for k in counter})
    colours = _k_colours(plt, ks)
    figure, axes = _grid(plt, len(found), width=3.8, height=3.2)
    for axis, ((model, task, method), per_step) in zip(axes, found.items()):
        steps = list(per_step)
        bottom = [0.0] * len(steps)
        for k in ks:
            shares = [100 * per_step[step][k] / sum(per_step[step].values()) for step in steps]
            axis.bar(steps, shares, bottom=bottom, color=colours[k])
            bottom = [b + v for b, v in zip(bottom, shares)]
        axis.set_xticks(steps)
        axis.set_xlabel("step", fontsize=8)
        axis.set_ylabel("% of kept states", fontsize=8)
        axis.set_ylim(0, 100)
        axis.set_title(_wrapped(f"{method} / {task} ({model.rsplit('/', 1)[-1]})"), fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in ks]
    figure.legend(handles, [f"k={k:g}" for k in ks], loc="center left", bbox_to_anchor=(1.0, 0.5), title="kept k")
    figure.suptitle("the k of the states kept at each step")
    figure.tight_layout()
    return _finished(plt, figure)


def router_confidence(found: dict[tuple[str, str, str], PathwayReport]) -> bytes | None:
    """Mean top-1 router probability per layer, base router against the rerouted one, per run."""
    if not found:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for (model, task, method), report in found.items():
        label = f"{method} / {task} ({model.rsplit('/', 1)[-1]})"
        layers = range(len(report.confidence_before))
        line, = axis.plot(layers, report.confidence_before, linestyle="--", marker="o", label=f"{label}: before")
        axis.plot(layers, report.confidence_after, color=line.get_color(), marker="o",
                  label=f"{label}: after (edit distance {report.edit_distance:.2f})")
    axis.set_xticks(list(layers))
    axis.set_xlabel("MoE layer")
    axis.set_ylabel("mean top-1 routing probability")
    axis.set_title("router confidence before / after rerouting")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finished(plt, figure)


def analysis_plots(analyses: Analyses) -> dict[str, bytes]:
    made = {f"k_overlap_{index}": k_overlap(item) for index, item in enumerate(analyses.overlaps, 1)}
    made["accuracy_vs_budget"] = budget_curves(analyses.budgets)
    made["kept_k_per_step"] = kept_k_per_step(analyses.kept_k)
    made["router_confidence"] = router_confidence(analyses.pathways)
    return {name: png for name, png in made.items() if png is not None}


def all_plots(runs: Sequence[Run], table: Sequence[Row], analyses: Analyses | None = None) -> dict[str, bytes]:
    made = {
        "accuracy_vs_flops": accuracy_vs_cost(table, "flops"),
        "accuracy_vs_tokens": accuracy_vs_cost(table, "tokens"),
        "chosen_k": chosen_k_distribution(runs),
        "router_entropy": router_entropy(runs),
    }
    plots = {name: png for name, png in made.items() if png is not None}
    return plots | (analysis_plots(analyses) if analyses else {})
