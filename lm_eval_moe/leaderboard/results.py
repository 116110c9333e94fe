"""Reading lm-eval results (``--output_path`` folders or ``results_*.json`` files) into runs.

A run is one ``results_<time>.json`` with, when ``--log_samples`` was on, its ``samples_<task>_<time>.jsonl``
files beside it. Works for any lm-eval model (common fields) and reads our extras where present: the
settings in ``config.lm_eval_moe`` and per-sample metrics such as ``flops`` or ``avg_expert_count``.
Unusable input raises :class:`ResultsError` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lm_eval_moe.model_args import expert_count_label
from lm_eval_moe.response import RECORDS_KEY
from lm_eval_moe.verifiers.settings import VERIFIER_FREE


class ResultsError(ValueError):
    """Input that cannot be turned into a results table (the message names the file)."""


#: Metrics tried, in order, as a task's accuracy: ours first, then lm-eval's usual names.
ACCURACY_METRICS = ("exact_match", "pass@1", "acc", "acc_norm", "pass_at_1")
#: Preferred filters when a metric is reported under several.
FILTER_PREFERENCE = ("extract_answer", "none", "strict-match", "flexible-extract", "custom-extract", "get-answer")


def sample_records(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a logged sample's responses: its ``moe_records``, or in samples files written before
    lm_eval_moe 0.1.0 kept them there, the JSON records in ``filtered_resps``; none for other tasks."""
    if isinstance(sample.get(RECORDS_KEY), list):
        return [record for record in sample[RECORDS_KEY] if isinstance(record, dict)]
    responses = (sample.get("filtered_resps") or [[]])[0]
    records = []
    for response in responses if isinstance(responses, list) else []:
        try:
            record = json.loads(response) if isinstance(response, str) else response
        except json.JSONDecodeError:
            return []
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass
class TaskResult:
    name: str
    metrics: dict[str, float]  # "metric,filter" -> value
    stderr: dict[str, float]
    version: Any
    samples_count: int | None
    config: dict[str, Any]
    samples: dict[int, dict[str, Any]] = field(default_factory=dict)  # doc_id -> logged sample

    @cached_property
    def first_records(self) -> list[dict[str, Any]]:
        """Our logged record (``lm_eval_moe.response.SampleRecord``) of each sample's first response; samples
        of other tasks give none. Parsed once."""
        return [records[0] for records in map(sample_records, self.samples.values()) if records]

    def metric_key(self, metric: str | None = None) -> str | None:
        """The "metric,filter" key for ``metric`` (or the first accuracy metric present)."""
        names = [metric] if metric else list(ACCURACY_METRICS)
        for name in names:
            keys = [k for k in self.metrics if k.split(",", 1)[0] == name]
            if keys:
                return min(keys, key=lambda k: (FILTER_PREFERENCE.index(k.split(",", 1)[1])
                                                if k.split(",", 1)[1] in FILTER_PREFERENCE else 99, k))
        return None

    def value(self, metric: str) -> float | None:
        key = self.metric_key(metric)
        return None if key is None else self.metrics[key]

    def sample_values(self, metric: str) -> dict[int, float]:
        key = self.metric_key(metric)
        if key is None:
            return {}
        name, filter_name = key.split(",", 1)
        return {doc_id: float(s[name]) for doc_id, s in self.samples.items()
                if name in s and s.get("filter", filter_name) == filter_name and s[name] is not None}


@dataclass
class Run:
    path: Path
    model: str
    method: str
    settings: dict[str, Any]
    tasks: dict[str, TaskResult]
    groups: set[str]
    gen_kwargs: Any = None  # the run's --gen_kwargs

    @property
    def label(self) -> str:
        return f"{self.model} / {self.method}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _model_name(config: dict[str, Any]) -> str:
    args = config.get("model_args")
    if isinstance(args, dict):
        pretrained = args.get("pretrained")
    else:
        pretrained = next((part.split("=", 1)[1] for part in str(args or "").split(",") if part.startswith("pretrained=")), None)
    return str(pretrained or config.get("model") or "unknown")


def _method(config: dict[str, Any]) -> str:
    ours = config.get("lm_eval_moe") or {}
    label = ours.get("strategy") or ours.get("model_class") or config.get("model") or "unknown"
    if ours.get("model_class") == "moe_reroute":
        label = "reroute"
    if ours.get("reroute"):
        label += "+reroute"
    if ours.get("verifier") in VERIFIER_FREE and ours.get("strategy") != "self_consistency":
        label += f"+{ours['verifier']}"  # a search without a PRM is another method than with one
    counts, default = ours.get("expert_count"), ours.get("default_expert_count")
    if counts and counts != default and not ours.get("strategy"):  # a k sweep: one row per k
        label += f" k={expert_count_label(counts)}"
    return str(label)


def _load_samples(path: Path, task: str) -> dict[int, dict[str, Any]]:
    stamp = path.stem.removeprefix("results_")
    files = list(path.parent.glob(f"samples_{task}_{stamp}.jsonl"))
    samples: dict[int, dict[str, Any]] = {}
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as error:
                raise ResultsError(f"{file}: line {number} is not valid JSON ({error.msg}); truncated file?") from None
            samples[int(sample["doc_id"])] = sample
    return samples


def load_run(path: Path, with_samples: bool = True) -> Run:
    """One results file; ``with_samples=False`` skips reading the per-sample files (aggregates only)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); truncated file?") from None
    except OSError as error:
        raise ResultsError(f"{path}: cannot read ({error.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not data["results"]:
        raise ResultsError(f"{path}: no 'results' section: not an lm-eval results file")
    config = data.get("config") or {}
    groups = set((data.get("groups") or {}).keys()) | set((data.get("group_subtasks") or {}).keys())
    tasks = {}
    for name, values in data["results"].items():
        metrics, stderr = {}, {}
        for key, value in values.items():
            number = _number(value)
            if number is None or "," not in key:
                continue
            metric, filter_name = key.split(",", 1)
            if metric.endswith("_stderr"):
                stderr[f"{metric.removesuffix('_stderr')},{filter_name}"] = number
            else:
                metrics[key] = number
        count = (data.get("n-samples") or {}).get(name, {})
        tasks[name] = TaskResult(
            name=name, metrics=metrics, stderr=stderr, version=(data.get("versions") or {}).get(name),
            samples_count=count.get("effective") if isinstance(count, dict) else None,
            config=(data.get("configs") or {}).get(name, {}),
            samples=_load_samples(path, name) if with_samples and name not in groups else {},
        )
    settings = dict(config.get("lm_eval_moe") or {})
    return Run(path, _model_name(config), _method(config), settings, tasks, groups, config.get("gen_kwargs"))


def load_runs(inputs: list[str | Path]) -> list[Run]:
    """Every results file in the given folders (searched recursively) and files."""
    runs = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            files = sorted(path.rglob("results_*.json"))
            if not files:
                raise ResultsError(f"{path}: folder holds no lm-eval results_*.json file")
        elif path.is_file():
            files = [path]
        else:
            raise ResultsError(f"{path}: no such file or folder")
        runs += [load_run(file) for file in files]
    return runs
