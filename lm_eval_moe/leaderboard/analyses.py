"""The papers' analyses over lm-eval results (``--log_samples`` runs), as numbers; plots in ``plots.py``.

* k overlap (the DES paper's motivating figure): runs of one model, task and method that differ only in the
  expert count k; per-k accuracy, the problems solved at SOME k (union) and at EVERY k (intersection),
  pairwise Jaccard similarity of the solved sets, and how far the union is above the best single k.
* budget curves: accuracy, tokens, FLOPs and wall time against the budget N, per method (from a sweep).
* chosen k per step: the k of the states a step-wise search kept at each step (DES: which k survive).
* rerouting's pathways: expert-pathway edit distance between the base and the rerouted routing of the
  generated tokens, and router confidence per layer before and after (``pathway_stats=true`` runs).

A problem counts as solved when its per-sample accuracy is 1 (exact match of the selected answer; with
repeats, the metric lm-eval reports per document).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from lm_eval_moe.leaderboard.results import ResultsError, Run, TaskResult
from lm_eval_moe.model_args import expert_count_label
from lm_eval_moe.verifiers.settings import VERIFIER_FREE

SOLVED = 1.0 - 1e-9


def run_k(run: Run) -> str | None:
    """The expert count a plain (non-search) run used, where it was set: ``"3"``, or ``"2:2:4:4"`` per layer."""
    counts = run.settings.get("expert_count")
    if not counts or run.settings.get("strategy"):
        return None
    return expert_count_label(counts)


def _k_order(label: str) -> tuple[float, str]:
    parts = [float(part) for part in label.split(":")]
    return (sum(parts) / len(parts), label)


def solved_documents(task: TaskResult) -> tuple[set[int], set[int]] | None:
    """(documents with a per-sample accuracy, those solved), or None without logged samples."""
    key = task.metric_key()
    if key is None or not task.samples:
        return None
    values = task.sample_values(key.split(",", 1)[0])
    return set(values), {doc for doc, value in values.items() if value >= SOLVED}


@dataclass(frozen=True)
class KOverlap:
    model: str
    task: str
    method: str
    documents: int  # documents present in every k's run
    solved: dict[str, frozenset[int]]  # k label -> solved documents, in increasing k

    @property
    def counts(self) -> list[str]:
        return list(self.solved)

    def accuracy(self, k: str) -> float:
        return len(self.solved[k]) / self.documents

    @property
    def union(self) -> float:
        return len(frozenset().union(*self.solved.values())) / self.documents

    @property
    def intersection(self) -> float:
        return len(frozenset.intersection(*self.solved.values())) / self.documents

    @property
    def best_single(self) -> tuple[str, float]:
        k = max(self.counts, key=lambda label: (self.accuracy(label), -self.counts.index(label)))
        return k, self.accuracy(k)

    def jaccard(self, a: str, b: str) -> float:
        union = self.solved[a] | self.solved[b]
        return len(self.solved[a] & self.solved[b]) / len(union) if union else 1.0

    def as_dict(self) -> dict[str, Any]:
        best_k, best = self.best_single
        return {"model": self.model, "task": self.task, "method": self.method, "documents": self.documents,
                "accuracy": {k: self.accuracy(k) for k in self.counts}, "union": self.union,
                "intersection": self.intersection, "best_single_k": best_k, "best_single": best,
                "union_minus_best": self.union - best,
                "jaccard": {f"{a}|{b}": self.jaccard(a, b) for a, b in combinations(self.counts, 2)}}


def k_overlaps(runs: Sequence[Run]) -> list[KOverlap]:
    """One :class:`KOverlap` per model, task and method with logged samples at two or more k."""
    groups: dict[tuple[str, str, str], dict[str, tuple[set[int], set[int]]]] = defaultdict(dict)
    for run in runs:
        k = run_k(run)
        if k is None:
            continue
        for name, task in run.tasks.items():
            documents = solved_documents(task)
            if documents is not None:
                groups[(run.model, name, run.method.split(" k=", 1)[0])][k] = documents
    overlaps = []
    for (model, task, method), by_k in sorted(groups.items()):
        if len(by_k) < 2:
            continue
        common = set.intersection(*(documents for documents, _ in by_k.values()))
        if not common:
            continue
        ordered = sorted(by_k, key=_k_order)
        overlaps.append(KOverlap(model, task, method, len(common),
                                 {k: frozenset(by_k[k][1] & common) for k in ordered}))
    return overlaps


@dataclass(frozen=True)
class BudgetPoint:
    budget: int
    accuracy: float | None
    stderr: float | None
    tokens: float | None
    flops: float | None
    wall_seconds: float | None
    samples: int | None


def method_label(run: Run) -> str:
    """The run's method with its PRM (the leaderboard's label names only verifier-free votes)."""
    verifier = run.settings.get("verifier")
    return run.method + (f" ({verifier})" if verifier and verifier not in VERIFIER_FREE else "")


def budget_curves(runs: Sequence[Run]) -> dict[tuple[str, str, str], list[BudgetPoint]]:
    """(model, task, method and verifier) -> points in increasing N, for series with two or more budgets."""
    series: dict[tuple[str, str, str], dict[int, BudgetPoint]] = defaultdict(dict)
    for run in runs:
        budget = run.settings.get("budget")
        if not isinstance(budget, int):
            continue
        label = method_label(run)
        for name, task in run.tasks.items():
            if name in run.groups:
                continue
            key = task.metric_key()
            series[(run.model, name, label)][budget] = BudgetPoint(
                budget, task.metrics.get(key) if key else None, task.stderr.get(key) if key else None,
                task.value("generated_tokens"), task.value("flops"), task.value("wall_seconds"), task.samples_count)
    return {key: [points[n] for n in sorted(points)] for key, points in sorted(series.items()) if len(points) >= 2}


def _k_value(k: Any) -> float:
    return float(sum(k) / len(k)) if isinstance(k, list) else float(k)


@contextmanager
def _records_of(run: Run, task: str) -> Iterator[None]:
    """Logged records of another shape than ours are an input error naming the file, not a crash."""
    try:
        yield
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
        raise ResultsError(f"{run.path}: task {task}: a logged record is not an lm_eval_moe sample record "
                           f"({type(error).__name__}: {error})") from None


def kept_k_per_step(task: TaskResult) -> dict[int, Counter]:
    """Step -> how often each k was among the kept states, over the logged samples (first repeat each)."""
    per_step: dict[int, Counter] = defaultdict(Counter)
    for record in task.first_records:
        for step in record.get("search_steps") or []:
            for k in step.get("kept_expert_counts") or []:
                per_step[int(step["step"])][_k_value(k)] += 1
    return dict(sorted(per_step.items()))


def chosen_k(runs: Sequence[Run]) -> dict[tuple[str, str, str], dict[int, Counter]]:
    """(model, task, method with verifier and budget) -> :func:`kept_k_per_step`, per run whose records carry
    search steps over two or more k (with one k there is nothing to choose)."""
    found = {}
    for run in sorted(runs, key=lambda run: (run.model, method_label(run), run.settings.get("budget") or 0)):
        label = method_label(run) + (f" N={run.settings['budget']}" if "budget" in run.settings else "")
        for name, task in sorted(run.tasks.items()):
            with _records_of(run, name):
                per_step = kept_k_per_step(task)
            if len({k for counter in per_step.values() for k in counter}) > 1:
                found[(run.model, name, label)] = per_step
    return found


@dataclass(frozen=True)
class PathwayReport:
    """Rerouting's effect on the expert pathways (``pathway_stats=true`` runs), averaged over samples."""

    samples: int
    edit_distance: float
    changed_fraction: float
    confidence_before: list[float]  # per layer
    confidence_after: list[float]


def reroute_pathways(runs: Sequence[Run]) -> dict[tuple[str, str, str], PathwayReport]:
    """(model, task, method) -> :class:`PathwayReport`, for runs whose records carry pathways."""
    found = {}
    for run in runs:
        for name, task in sorted(run.tasks.items()):
            reports = [r["pathways"] for r in task.first_records if r.get("pathways")]
            if not reports:
                continue
            count = len(reports)
            with _records_of(run, name):
                found[(run.model, name, run.method)] = PathwayReport(
                    count, sum(float(r["edit_distance"]) for r in reports) / count,
                    sum(float(r["changed_fraction"]) for r in reports) / count,
                    *([sum(map(float, values)) / count for values in zip(*(r[f"confidence_{when}"] for r in reports))]
                      for when in ("before", "after")))
    return found


def pathways_markdown(found: dict[tuple[str, str, str], PathwayReport]) -> str:
    lines = []
    for (model, task, method), report in found.items():
        layers = len(report.confidence_before)
        lines += [f"**{model} / {method} / {task}** ({report.samples} samples): expert-pathway edit distance "
                  f"{report.edit_distance:.2f} per generated token ({100 * report.changed_fraction:.1f}% of the "
                  "pathway changed)", "",
                  "| router confidence | " + " | ".join(f"layer {i}" for i in range(layers)) + " |",
                  "|---|" + "---|" * layers,
                  "| before (base router) | " + " | ".join(f"{v:.3f}" for v in report.confidence_before) + " |",
                  "| after (final deltas) | " + " | ".join(f"{v:.3f}" for v in report.confidence_after) + " |", ""]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def overlap_markdown(overlaps: Sequence[KOverlap]) -> str:
    lines = []
    for item in overlaps:
        best_k, best = item.best_single
        lines += [f"**{item.model} / {item.method} / {item.task}** ({item.documents} problems)", "",
                  "| k | accuracy % | " + " | ".join(f"Jaccard vs k={k}" for k in item.counts) + " |",
                  "|---|---|" + "---|" * len(item.counts)]
        for k in item.counts:
            lines.append(f"| {k} | {_percent(item.accuracy(k))} | "
                         + " | ".join(f"{item.jaccard(k, other):.2f}" for other in item.counts) + " |")
        lines += ["", f"union (solved at some k) {_percent(item.union)}%, intersection (at every k) "
                  f"{_percent(item.intersection)}%, best single k={best_k} {_percent(best)}%: the union is "
                  f"{_percent(item.union - best)} points above it", ""]
    return "\n".join(lines)


def budget_markdown(curves: dict[tuple[str, str, str], list[BudgetPoint]]) -> str:
    lines = ["| model | task | method | N | accuracy % | s.e. | tokens | FLOPs | wall s | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, task, label), points in curves.items():
        for point in points:
            lines.append(f"| {model} | {task} | {label} | {point.budget} | {_percent(point.accuracy)} | "
                         f"{_percent(point.stderr)} | {'' if point.tokens is None else f'{point.tokens:.1f}'} | "
                         f"{'' if point.flops is None else f'{point.flops:.3e}'} | "
                         f"{'' if point.wall_seconds is None else f'{point.wall_seconds:.2f}'} | "
                         f"{'' if point.samples is None else point.samples} |")
    return "\n".join(lines) + "\n"


def chosen_k_markdown(found: dict[tuple[str, str, str], dict[int, Counter]]) -> str:
    lines = []
    for (model, task, method), per_step in found.items():
        ks = sorted({k for counter in per_step.values() for k in counter})
        lines += [f"**{model} / {method} / {task}**: share of kept states per k at each step", "",
                  "| step | kept | " + " | ".join(f"k={k:g}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
        for step, counter in per_step.items():
            total = sum(counter.values())
            lines.append(f"| {step} | {total} | " + " | ".join(f"{100 * counter[k] / total:.1f}%" for k in ks) + " |")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class Analyses:
    """Every analysis some runs allow (each empty where the runs do not)."""

    overlaps: list[KOverlap]
    budgets: dict[tuple[str, str, str], list[BudgetPoint]]
    kept_k: dict[tuple[str, str, str], dict[int, Counter]]
    pathways: dict[tuple[str, str, str], PathwayReport]

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Analyses:
        return cls(k_overlaps(runs), budget_curves(runs), chosen_k(runs), reroute_pathways(runs))

    def __bool__(self) -> bool:
        return bool(self.overlaps or self.budgets or self.kept_k or self.pathways)

    def markdown(self) -> str:
        sections = []
        if self.overlaps:
            sections.append("## Solved sets across k\n\n" + overlap_markdown(self.overlaps))
        if self.budgets:
            sections.append("## Accuracy and cost against the budget N\n\n" + budget_markdown(self.budgets))
        if self.kept_k:
            sections.append("## Chosen k per step\n\n" + chosen_k_markdown(self.kept_k))
        if self.pathways:
            sections.append("## Rerouting: expert pathways and router confidence\n\n" + pathways_markdown(self.pathways))
        return "\n".join(sections)

    def write(self, output: Path) -> None:
        """analyses.md and analyses.json into ``output``."""
        (output / "analyses.md").write_text(self.markdown())
        (output / "analyses.json").write_text(json.dumps(self.as_json(), indent=2))

    def as_json(self) -> dict[str, Any]:
        return {
            "k_overlap": [item.as_dict() for item in self.overlaps],
            "budget": [{"model": m, "task": t, "method": label, "points": [p.__dict__ for p in points]}
                       for (m, t, label), points in self.budgets.items()],
            "chosen_k_per_step": [{"model": m, "task": t, "method": method,
                                   "steps": {str(step): {f"{k:g}": n for k, n in sorted(counter.items())}
                                             for step, counter in per_step.items()}}
                                  for (m, t, method), per_step in self.kept_k.items()],
            "reroute_pathways": [{"model": m, "task": t, "method": method, **report.__dict__}
                                 for (m, t, method), report in self.pathways.items()],
        }
