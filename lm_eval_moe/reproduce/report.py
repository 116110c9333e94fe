"""The recipe's table: every run's number beside the published one, and the difference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm_eval_moe.leaderboard import load_run
from lm_eval_moe.leaderboard.table import csv_text
from lm_eval_moe.reproduce.commands import results_files, task_name
from lm_eval_moe.reproduce.recipe import Recipe, RunSpec


@dataclass(frozen=True)
class ReportRow:
    run_id: str
    metric: str
    ours: float | None  # in the recipe's scale (percent when metric_scale is 100)
    stderr: float | None
    published: float | None
    samples: int | None
    status: str  # "done", "not run", "metric missing"

    @property
    def difference(self) -> float | None:
        return None if self.ours is None or self.published is None else self.ours - self.published


def is_rate(metric_key: str) -> bool:
    """Accuracy-like metrics (shares of samples), which the recipe's ``metric_scale`` turns into percent;
    costs (tokens, FLOPs, k) keep their units."""
    name = metric_key.split(",", 1)[0]
    return name in ("exact_match", "coverage", "precision", "acc", "acc_norm") or name.startswith(("pass@", "maj@"))


def report_rows(recipe: Recipe, spec: RunSpec, output: Path) -> list[ReportRow]:
    """One row per metric the run reports (newest results file)."""
    files = results_files(spec, output)
    task = load_run(files[-1], with_samples=False).tasks[task_name(spec)] if files else None
    rows = []
    for row_id, metric in spec.row_ids():
        published = recipe.published.get(row_id)
        if task is None:
            rows.append(ReportRow(row_id, metric or "", None, None, published, None, "not run"))
            continue
        key = task.metric_key(metric)
        if key is None:
            rows.append(ReportRow(row_id, metric or "accuracy", None, None, published, task.samples_count,
                                  "metric missing"))
            continue
        stderr = task.stderr.get(key)
        scale = recipe.metric_scale if is_rate(key) else 1.0
        rows.append(ReportRow(row_id, key, task.metrics[key] * scale, None if stderr is None else stderr * scale,
                              published, task.samples_count, "done"))
    return rows


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" if sign else f"{value:.2f}"


COLUMNS = ("run", "metric", "ours", "stderr", "published", "difference", "n", "status")


def _cells(row: ReportRow) -> list[str]:
    return [row.run_id, row.metric, _number(row.ours), _number(row.stderr), _number(row.published),
            _number(row.difference, sign=True), "" if row.samples is None else str(row.samples), row.status]


def markdown(recipe: Recipe, rows: list[ReportRow]) -> str:
    unit = " (accuracy-like metrics x100)" if recipe.metric_scale == 100 else ""
    lines = [f"## {recipe.title}", "", f"Published numbers: {recipe.source}. Ours{unit}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    if recipe.our_choices:
        lines += ["", "Settings the paper leaves open (our choice):", *[f"- {choice}" for choice in recipe.our_choices]]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[ReportRow]) -> str:
    return csv_text(COLUMNS, (_cells(row) for row in rows))
