"""Leaderboard plots (PNG): accuracy vs FLOPs and vs generated tokens per method and task, the
distribution of the chosen expert count, and router entropy of rerouting runs.

Needs matplotlib (``pip install lm_eval_moe[plots]``); without it the command writes its tables and says
that the plots were skipped.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence

from lm_eval_moe.leaderboard.results import Run
from lm_eval_moe.leaderboard.table import Row


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


def accuracy_vs_cost(table: Sequence[Row], cost: str, source: str | None = None) -> bytes | None:
    """One panel per task; one series per method (points sorted by cost, joined). ``source`` is stored in
    the PNG (e.g. a digest of the results it was drawn from)."""
    plt = _pyplot()
    by_task: dict[str, dict[str, list[tuple[float, float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        x = row.flops if cost == "flops" else row.tokens
        if x is None or row.accuracy is None:
            continue
        by_task[row.task][f"{row.method} ({row.model.rsplit('/', 1)[-1]})"].append((x, row.accuracy, row.stderr or 0.0))
    if not by_task:
        return None
    tasks = sorted(by_task)
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for label, points in sorted(by_task[task].items()):
            points.sort()
            xs, ys, errors = zip(*points)
            axis.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
        axis.set_title(task)
        axis.set_xlabel("FLOPs per sample" if cost == "flops" else "generated tokens per sample")
        axis.set_ylabel("accuracy")
        if cost == "flops":
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"accuracy vs {'FLOPs' if cost == 'flops' else 'generated tokens'}")
    data = _png(figure, source)
    plt.close(figure)
    return data


def chosen_k_distribution(runs: Sequence[Run]) -> bytes | None:
    plt = _pyplot()
    series: dict[str, list[float]] = defaultdict(list)  # runs of one method and model are pooled
    for run in runs:
        series[f"{run.method} ({run.model.rsplit('/', 1)[-1]})"] += [
            float(s["selected_expert_count"]) for task in run.tasks.values() for s in task.samples.values()
            if s.get("selected_expert_count") is not None]
    series = {label: values for label, values in series.items() if values}
    if not series:
        return None
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, values in sorted(series.items()):
        axis.hist(values, bins=sorted({v for vs in series.values() for v in vs} | {max(max(vs) for vs in series.values()) + 1}),
                  alpha=0.5, label=label, align="left", rwidth=0.8)
    axis.set_xlabel("expert count k of the selected candidate")
    axis.set_ylabel("samples")
    axis.set_title("chosen k")
    axis.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def router_entropy(runs: Sequence[Run]) -> bytes | None:
    """Mean routing entropy in the first and the last generated block of rerouting runs, per task."""
    plt = _pyplot()
    bars = []
    for run in runs:
        for name, task in sorted(run.tasks.items()):
            first = [s["router_entropy_first_block"] for s in task.samples.values() if "router_entropy_first_block" in s]
            last = [s["router_entropy_last_block"] for s in task.samples.values() if "router_entropy_last_block" in s]
            if first and last:
                bars.append((f"{run.method} {name}", sum(first) / len(first), sum(last) / len(last)))
    if not bars:
        return None
    figure, axis = plt.subplots(figsize=(max(5, 1.5 * len(bars)), 4))
    positions = range(len(bars))
    axis.bar([p - 0.2 for p in positions], [b[1] for b in bars], width=0.4, label="first block")
    axis.bar([p + 0.2 for p in positions], [b[2] for b in bars], width=0.4, label="last block")
    axis.set_xticks(list(positions), [b[0] for b in bars], rotation=20, ha="right", fontsize=8)
    axis.set_ylabel("mean routing entropy (nats)")
    axis.set_title("router entropy under rerouting")
    axis.legend()
    data = _png(figure)
    plt.close(figure)
    return data


def all_plots(runs: Sequence[Run], table: Sequence[Row]) -> dict[str, bytes]:
    made = {
        "accuracy_vs_flops": accuracy_vs_cost(table, "flops"),
        "accuracy_vs_tokens": accuracy_vs_cost(table, "tokens"),
        "chosen_k": chosen_k_distribution(runs),
        "router_entropy": router_entropy(runs),
    }
    return {name: png for name, png in made.items() if png is not None}
