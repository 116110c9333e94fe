"""What lm-eval prints and records of our tasks: the measures that apply to the run, the rest in the JSON.

Our tasks report every measure they can compute (accuracy, pass@k / maj@k, cost, time, memory, routing facts,
code verdict counts), which makes lm-eval's printed table 15-45 rows per task. :func:`printed_view` gives
``lm_eval.utils.make_table`` the headline instead: accuracy (``exact_match``), coverage and pass@k / maj@k
when a request has several candidates (a search's, or its repeats), samples the sandbox could not judge, and one
``cost`` line (per-sample means). :func:`prune_higher_is_better` keeps the results' ``higher_is_better`` to
the metrics the run reported. Tasks are ours when their results carry ``moe_records``; others print as lm-eval
prints them.
"""

from __future__ import annotations

import copy
from typing import Any

from lm_eval_moe.response import RECORDS_KEY

#: per-sample means shown on the cost line, with their words
COST_PARTS = (("generated_tokens", "{:.0f} generated"), ("verifier_tokens", "{:.0f} verifier"),
              ("flops", "{:.3g} policy FLOPs"), ("extra_flops", "{:.3g} rerouting FLOPs"),
              ("verifier_flops", "{:.3g} verifier FLOPs"), ("wall_seconds", "{:.2f} s"))


def _name_and_filter(key: str) -> tuple[str, str]:
    name, _, filter_name = key.partition(",")
    return name, filter_name


def our_entries(result_dict: dict[str, Any]) -> set[str]:
    """Our tasks in the results, and the groups all of whose tasks are ours."""
    tasks = {name for column in ("results", "groups") for name, metrics in result_dict.get(column, {}).items()
             if any(_name_and_filter(key)[0] == RECORDS_KEY for key in metrics)}
    subtasks = result_dict.get("group_subtasks", {})

    def all_ours(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in tasks:
            return True
        members = subtasks.get(name)
        return bool(members) and name not in seen and all(all_ours(m, seen | {name}) for m in members)

    return tasks | {group for group in subtasks if all_ours(group)}


def _shown(name: str, metrics: dict[str, Any], filter_name: str) -> bool:
    """Accuracy always; coverage, pass@k and maj@k when a request had several candidates (a group, which has
    no candidate count, when they say more than its accuracy); sandbox failures when there were any."""
    if name == "exact_match":
        return True
    value = metrics.get(f"{name},{filter_name}")
    if name == "coverage" or name.startswith(("pass@", "maj@")):
        candidates = metrics.get(f"num_candidates,{filter_name}")
        if candidates is None:
            return value != metrics.get(f"exact_match,{filter_name}")
        return candidates > 1
    return name == "verdicts_sandbox_error" and bool(value)


def cost_line(metrics: dict[str, Any], filter_name: str) -> str | None:
    """Per-sample means: tokens generated (and read by a verifier), FLOPs (the policy's, rerouting's updates, the
    verifier's), wall time."""
    values = {name: metrics.get(f"{name},{filter_name}") for name, _ in COST_PARTS}
    parts = [words.format(values[name]) for name, words in COST_PARTS
             if isinstance(values[name], (int, float)) and values[name]]
    if not parts:
        return None
    tokens = [part for part in parts if part.endswith(("generated", "verifier"))]
    rest = [part for part in parts if part not in tokens]
    return ", ".join([" + ".join(tokens) + " tokens"] * bool(tokens) + rest) + " per sample"


def concise(metrics: dict[str, Any]) -> dict[str, Any]:
    """One task's (or group's) results reduced to the measures that apply, plus its cost line."""
    kept = {key: value for key, value in metrics.items() if "," not in key}
    filters = {_name_and_filter(key)[1] for key in metrics if "," in key}
    for filter_name in sorted(filters):
        for key, value in metrics.items():
            name, key_filter = _name_and_filter(key)
            if key_filter == filter_name and _shown(name.removesuffix("_stderr"), metrics, filter_name):
                kept[key] = value
        line = cost_line(metrics, filter_name)
        if line:
            kept[f"cost,{filter_name}"] = line
    return kept


def printed_view(result_dict: dict[str, Any], column: str = "results") -> dict[str, Any]:
    """A copy of lm-eval's results for ``make_table`` with our entries reduced (:func:`concise`)."""
    ours = our_entries(result_dict)
    if column not in result_dict or not ours & set(result_dict[column]):
        return result_dict
    view = copy.copy(result_dict)
    view[column] = {name: concise(metrics) if name in ours else metrics
                    for name, metrics in result_dict[column].items()}
    return view


def hidden_note(result_dict: dict[str, Any], column: str = "results") -> str:
    """The line under a reduced table saying where the rest is."""
    ours = our_entries(result_dict) & set(result_dict.get(column, {}))
    if not ours:
        return ""
    hidden = max(sum(1 for key in result_dict[column][name] if "," in key and "_stderr," not in key)
                 - sum(1 for key in concise(result_dict[column][name]) if "," in key and "_stderr," not in key)
                 for name in ours)
    if hidden <= 0:
        return ""
    return (f"lm_eval_moe: the measures that apply to this run; up to {hidden} more per task (time, memory, routing, "
            "per-verdict counts) are in the results JSON, and each response's record in the samples' moe_records.\n")


def prune_higher_is_better(results: dict[str, Any]) -> None:
    """Keep ``higher_is_better`` of our entries to the measures they reported (not the records' count)."""
    ours = our_entries(results)
    reported = {name: {_name_and_filter(key)[0] for key in metrics}
                for column in ("results", "groups") for name, metrics in results.get(column, {}).items()}
    for name, directions in results.get("higher_is_better", {}).items():
        if name in ours and isinstance(directions, dict):
            results["higher_is_better"][name] = {metric: value for metric, value in directions.items()
                                                 if metric in reported.get(name, set()) and metric != RECORDS_KEY}
