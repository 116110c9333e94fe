"""Regression decision between a baseline and a current run, per task.

* Both runs logged samples on the same documents: a paired one-sided sign test on the per-document
  differences (for 0/1 metrics this is McNemar's exact test on the discordant pairs): a regression when the
  current run is worse with p < ``alpha`` and the mean drop is at least ``min_drop``.
* Otherwise: a one-sided z-test from the two standard errors, with the same two thresholds.

Unusable input (a task missing from the current run, a different task version, different documents or a
different task configuration) is reported as such and never silently compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lm_eval_moe.leaderboard.results import Run, TaskResult

#: Task-config keys whose difference makes two runs incomparable.
CONFIG_KEYS = ("num_fewshot", "generation_kwargs", "repeats", "test_split", "doc_to_text", "dataset_kwargs")


class UnusableComparison(ValueError):
    """The two runs cannot be compared for this task (the message says why)."""


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    metric: str
    baseline: float
    current: float
    test: str  # "paired sign test (n=...)" or "z-test from standard errors"
    p_value: float
    regression: bool

    @property
    def difference(self) -> float:
        return self.current - self.baseline


def _binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2)."""
    if trials == 0:
        return 1.0
    return sum(math.comb(trials, i) for i in range(successes, trials + 1)) / 2**trials


def paired_test(baseline: dict[int, float], current: dict[int, float]) -> tuple[float, int]:
    """One-sided p-value that current < baseline (sign test over documents whose values differ)."""
    worse = sum(current[d] < baseline[d] for d in baseline)
    better = sum(current[d] > baseline[d] for d in baseline)
    return _binomial_tail(worse, worse + better), worse + better


def z_test(baseline: float, baseline_se: float, current: float, current_se: float) -> float:
    spread = math.hypot(baseline_se, current_se)
    if spread == 0:
        return 0.0 if current < baseline else 1.0
    z = (current - baseline) / spread
    return 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z)


def _check_comparable(name: str, base: TaskResult, cur: TaskResult) -> None:
    if base.version != cur.version:
        raise UnusableComparison(f"task {name}: version {base.version} in the baseline, {cur.version} in the current run")
    differing = [key for key in CONFIG_KEYS if key in base.config and base.config.get(key) != cur.config.get(key)]
    if differing:
        raise UnusableComparison(f"task {name}: configuration differs in {', '.join(differing)}")
    if base.samples and cur.samples:
        if set(base.samples) != set(cur.samples):
            only = len(set(base.samples) ^ set(cur.samples))
            raise UnusableComparison(f"task {name}: the runs scored different documents ({only} doc ids differ)")
        hashes = [d for d in base.samples if base.samples[d].get("doc_hash") != cur.samples[d].get("doc_hash")]
        if hashes:
            raise UnusableComparison(f"task {name}: {len(hashes)} documents differ in content (doc_hash), e.g. doc {hashes[0]}")


def compare_task(name: str, base: TaskResult, cur: TaskResult, metric: str | None, alpha: float,
                 min_drop: float) -> TaskVerdict:
    _check_comparable(name, base, cur)
    key = base.metric_key(metric)
    if key is None or key not in cur.metrics:
        raise UnusableComparison(f"task {name}: metric {metric or 'accuracy'} is not reported by both runs")
    metric_name = key.split(",", 1)[0]
    baseline, current = base.metrics[key], cur.metrics[key]
    base_samples, cur_samples = base.sample_values(metric_name), cur.sample_values(metric_name)
    if base_samples and cur_samples and set(base_samples) == set(cur_samples):
        p_value, discordant = paired_test(base_samples, cur_samples)
        test = f"paired sign test ({discordant} differing of {len(base_samples)} docs)"
    else:
        if key not in base.stderr or key not in cur.stderr:
            raise UnusableComparison(f"task {name}: no per-sample results and no standard error for {key}")
        p_value = z_test(baseline, base.stderr[key], current, cur.stderr[key])
        test = "z-test from standard errors"
    regression = p_value < alpha and baseline - current >= min_drop and current < baseline
    return TaskVerdict(name, key, baseline, current, test, p_value, regression)


def compare(baseline: Run, current: Run, tasks: list[str] | None, metric: str | None, alpha: float,
            min_drop: float) -> list[TaskVerdict]:
    names = tasks or sorted(t for t in baseline.tasks if t not in baseline.groups)
    missing = [t for t in names if t not in current.tasks]
    if missing:
        raise UnusableComparison(f"task(s) missing from the current run: {', '.join(missing)}")
    unknown = [t for t in names if t not in baseline.tasks]
    if unknown:
        raise UnusableComparison(f"task(s) missing from the baseline run: {', '.join(unknown)}")
    return [compare_task(t, baseline.tasks[t], current.tasks[t], metric, alpha, min_drop) for t in names]
