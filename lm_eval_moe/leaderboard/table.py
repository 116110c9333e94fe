"""One table of model x method x task from many runs, as Markdown, CSV and a self-contained HTML page.

Columns: the run's settings (strategy, k or K, N, M, verifier, rerouting, temperature: one row per distinct
setting), accuracy (the task's first accuracy metric: ``exact_match``, ``pass@1``, ``acc``, ...) with its
standard error, precision, coverage (any candidate correct), mean generated tokens, mean FLOPs and average k per
sample (our runs only; lm-eval's own models leave these empty), and the number of samples. The HTML table sorts
by any column (click its header; numbers as numbers, empty cells last).
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lm_eval_moe.leaderboard.results import Run
from lm_eval_moe.leaderboard.settings import settings_label, temperatures


@dataclass(frozen=True)
class Row:
    model: str
    method: str
    settings: str
    task: str
    metric: str
    accuracy: float | None
    stderr: float | None
    precision: float | None
    coverage: float | None
    tokens: float | None
    flops: float | None
    extra_flops: float | None  # rerouting's optimisation, counted apart from the policy's FLOPs
    verifier_flops: float | None  # the verifier's forward passes
    avg_k: float | None
    samples: int | None
    source: str


COLUMNS = ("model", "method", "settings", "task", "metric", "accuracy", "stderr", "precision", "coverage", "tokens", "FLOPs", "avg k",
           "n", "source")


def rows(runs: Sequence[Run], include_groups: bool = True) -> list[Row]:
    table = []
    for run in runs:
        for name, task in sorted(run.tasks.items()):
            if name in run.groups and not include_groups:
                continue
            key = task.metric_key()
            temperature = temperatures(run.settings, task.config, run.gen_kwargs)
            table.append(Row(
                model=run.model, method=run.method, settings=settings_label(run.settings, temperature), task=name,
                metric=key or "",
                accuracy=task.metrics.get(key) if key else None,
                stderr=task.stderr.get(key) if key else None,
                precision=task.value("precision"), coverage=task.value("coverage"),
                tokens=task.value("generated_tokens"), flops=task.value("flops"), extra_flops=task.value("extra_flops"),
                verifier_flops=task.value("verifier_flops"),
                avg_k=task.value("avg_expert_count"), samples=task.samples_count, source=str(run.path),
            ))
    return table


def _cells(row: Row) -> list[str]:
    def number(value: float | None, digits: int = 4) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return [row.model, row.method, row.settings, row.task, row.metric, number(row.accuracy), number(row.stderr),
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


#: sorts the leaderboard table by the clicked header: numbers as numbers, text as text, empty cells last;
#: a second click reverses the order (the header's aria-sort says which)
SORT_SCRIPT = """
document.querySelectorAll("table.leaderboard th").forEach((header, column) => {
  header.addEventListener("click", () => {
    const table = header.closest("table"), body = table.tBodies[0];
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(th => th.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const key = row => row.cells[column].textContent.trim();
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") return (x === "") - (y === "");
      const nx = Number(x), ny = Number(y);
      const order = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? order : -order;
    });
    rows.forEach(row => body.appendChild(row));
  });
});
"""


def to_html(table: Sequence[Row], images: dict[str, bytes], analyses: str = "") -> str:
    """The table (sortable by any column), the plots and (Markdown, shown as written) the analyses, in one
    self-contained page."""
    head = "".join(f'<th scope="col" title="sort by {html.escape(c)}">{html.escape(c)}</th>' for c in COLUMNS[:-1])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(row)[:-1]) + "</tr>" for row in table)
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in images.items()
    )
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;text-align:right}th{background:#f3f3f3;cursor:pointer;user-select:none}"
             "th[aria-sort=ascending]::after{content:' \\25B2'}th[aria-sort=descending]::after{content:' \\25BC'}"
             "td:nth-child(-n+5){text-align:left}img{max-width:720px}figure{display:inline-block;margin:1em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lm_eval_moe leaderboard</title>"
            f"<style>{style}</style></head><body><h1>lm_eval_moe leaderboard</h1>"
            f"<p>Click a column header to sort by it; click again to reverse.</p>"
            f'<table class="leaderboard"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{figures}'
            + (f"<h2>Analyses</h2><pre>{html.escape(analyses)}</pre>" if analyses else "")
            + f"<script>{SORT_SCRIPT}</script></body></html>")
