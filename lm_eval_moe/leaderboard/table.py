"""One table of model x method x task from many runs, as Markdown, CSV and a self-contained HTML page.

Columns: accuracy (the task's first accuracy metric: ``exact_match``, ``pass@1``, ``acc``, ...) with its
standard error, precision, coverage (any candidate correct), mean generated tokens, mean FLOPs and average k per sample (our runs
only; lm-eval's own models leave these empty), and the number of samples.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lm_eval_moe.leaderboard.results import Run


@dataclass(frozen=True)
class Row:
    model: str
    method: str
    task: str
    metric: str
    accuracy: float | None
    stderr: float | None
    precision: float | None
    coverage: float | None
    tokens: float | None
    flops: float | None
    extra_flops: float | None  # rerouting's optimisation, counted apart from the policy's FLOPs
    avg_k: float | None
    samples: int | None
    source: str


COLUMNS = ("model", "method", "task", "metric", "accuracy", "stderr", "precision", "coverage", "tokens", "FLOPs", "avg k",
           "n", "source")


def rows(runs: Sequence[Run], include_groups: bool = True) -> list[Row]:
    table = []
    for run in runs:
        for name, task in sorted(run.tasks.items()):
            if name in run.groups and not include_groups:
                continue
            key = task.metric_key()
            table.append(Row(
                model=run.model, method=run.method, task=name, metric=key or "",
                accuracy=task.metrics.get(key) if key else None,
                stderr=task.stderr.get(key) if key else None,
                precision=task.value("precision"), coverage=task.value("coverage"),
                tokens=task.value("generated_tokens"), flops=task.value("flops"), extra_flops=task.value("extra_flops"),
                avg_k=task.value("avg_expert_count"), samples=task.samples_count, source=str(run.path),
            ))
    return table


def _cells(row: Row) -> list[str]:
    def number(value: float | None, digits: int = 4) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return [row.model, row.method, row.task, row.metric, number(row.accuracy), number(row.stderr),
            number(row.precision), number(row.coverage), number(row.tokens, 1),
            "" if row.flops is None else f"{row.flops:.3e}", number(row.avg_k, 2),
            "" if row.samples is None else str(row.samples), row.source]


def markdown(table: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS[:-1]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(_cells(row)[:-1]) + " |" for row in table]
    return "\n".join(lines) + "\n"


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def to_csv(table: Sequence[Row]) -> str:
    return csv_text(COLUMNS, (_cells(row) for row in table))


def to_html(table: Sequence[Row], images: dict[str, bytes], analyses: str = "") -> str:
    """The table, the plots and (Markdown, shown as written) the analyses, in one self-contained page."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS[:-1])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row)[:-1]) + "</tr>" for row in table)
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}th{background:#f3f3f3}td:nth-child(-n+4){text-align:left}"
             "img{max-width:720px}figure{display:inline-block;margin:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lm_eval_moe leaderboard</title>"
            f"<style>{style}</style></head><body><h1>lm_eval_moe leaderboard</h1><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{figures}"
            + (f"<h2>Analyses</h2><pre>{html.escape(analyses)}</pre>" if analyses else "") + "</body></html>")
