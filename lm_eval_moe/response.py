"""How a response and its facts travel through lm-eval, and how they reach the logged samples.

lm-eval passes model outputs to the task's filters unchanged, so a ``str`` subclass
(:class:`MoEResponse`) carries per-request facts (cost, chosen k, search candidates) from the model to
the task. The tasks' filters turn a request's responses into one :class:`FilteredResponse`: as text, what a
stock task of the kind logs in ``filtered_resps`` (the extracted answer, the program that is run); as
``.records``, one record per response (text, candidates, verdicts, cost, routing) for ``process_results``,
which hands them on as the sample's ``moe_records`` (:data:`RECORDS_KEY`), so ``--log_samples`` keeps every
final candidate without hiding the answer from lm-eval's tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MoEResponse(str):
    """``str`` with a ``meta`` dict; behaves as the plain text everywhere else."""

    meta: dict[str, Any]

    def __new__(cls, text: str, meta: dict[str, Any] | None = None) -> MoEResponse:
        obj = super().__new__(cls, text)
        obj.meta = dict(meta or {})
        return obj

    def __reduce__(self):  # keep the metadata through pickling (lm-eval's request cache)
        return (MoEResponse, (str(self), self.meta))


def response_meta(response: Any) -> dict[str, Any]:
    """Metadata of a model response, or an empty dict for plain strings (e.g. lm-eval's ``hf``)."""
    return getattr(response, "meta", None) or {}


#: Meta key marking a response to lm-eval's data-parallel padding (not a real sample of the request).
PADDING = "data_parallel_padding"


def real_responses(responses: Sequence[Any]) -> list[Any]:
    """A request's responses without data-parallel padding (see ``model_wrappers.base.padding_mask``)."""
    return [response for response in responses if not response_meta(response).get(PADDING)]


#: One response as the task scores and logs it: ``response`` (the text), ``candidates`` (a search's final
#: candidates: text, expert_count, score, step_scores, step_count, finish_reason, answer), ``cost``,
#: ``resources`` (its share of its batch's wall time and memory), ``routing``, ``search_steps`` (per step of a
#: step-wise search: expansions, k statistics, the k of each kept state) and ``pathways`` (rerouting with
#: pathway_stats: edit distance, router confidence per layer); answer tasks add each text's ``verdict``, code
#: tasks each program's ``execution``.
SampleRecord = dict[str, Any]

#: The logged sample's key (a "metric" of ``process_results``) holding the records of the request's responses.
RECORDS_KEY = "moe_records"


class FilteredResponse(str):
    """A request after the task's filter: the text lm-eval logs in ``filtered_resps`` (what a stock task of
    the kind holds there), with the records of the request's responses for ``process_results``."""

    records: list[SampleRecord]

    def __new__(cls, text: str, records: list[SampleRecord]) -> FilteredResponse:
        obj = super().__new__(cls, text)
        obj.records = records
        return obj

    def __reduce__(self):  # keep the records through pickling (data-parallel gathers)
        return (FilteredResponse, (str(self), self.records))


def records_logged(values: Sequence[list[SampleRecord]]) -> float:
    """Aggregation of :data:`RECORDS_KEY` in the results: how many responses the samples file records."""
    return float(sum(len(records) for records in values))


def sample_record(response: Any) -> SampleRecord:
    meta = response_meta(response)
    return dict(
        response=str(response),
        candidates=[dict(candidate) for candidate in meta.get("candidates", [])],
        cost=dict(meta.get("cost", {})),
        resources=dict(meta.get("resources", {})),
        routing=routing_facts(meta),
        search_steps=[dict(step) for step in (meta.get("search") or {}).get("steps", [])],
        pathways=dict((meta.get("reroute") or {}).get("pathways") or {}),
    )


def request_records(results: Sequence[Any]) -> list[SampleRecord]:
    """The records of a request's responses as ``process_results`` receives them: those our filter attached,
    or plain responses (another filter chain: one text, or the list of the request's texts) turned into
    records."""
    if len(results) == 1 and isinstance(results[0], FilteredResponse):
        return results[0].records
    responses = results[0] if len(results) == 1 and isinstance(results[0], list) else list(results)
    return [sample_record(response) for response in real_responses(responses)]


#: Cost fields of a response's metadata reported as sample metrics (summed over a request's repeats).
COST_METRICS = (
    "generated_tokens", "prompt_tokens", "verifier_tokens", "routed_expert_tokens", "shared_expert_tokens",
    "flops", "extra_flops", "verifier_flops",
)


#: Time and memory of a response (lm_eval_moe/resources.py): wall time summed over a request's repeats,
#: peaks the largest.
RESOURCE_METRICS = {"wall_seconds": sum, "peak_rss_mb": max, "cuda_peak_mb": max}


def record_metrics(records: Sequence[SampleRecord]) -> dict[str, float]:
    """The cost, time and memory of a request's responses and the routing facts of the first."""
    metrics = {}
    for name in COST_METRICS:
        values = [record["cost"][name] for record in records if name in record["cost"]]
        if values:
            metrics[name] = float(sum(values))
    for name, combine in RESOURCE_METRICS.items():
        values = [record["resources"][name] for record in records if name in record.get("resources", {})]
        if values:
            metrics[name] = float(combine(values))
    metrics.update(records[0]["routing"])
    return metrics


def routing_facts(meta: dict[str, Any]) -> dict[str, float]:
    """Search and rerouting facts of a response, as sample metrics (read by the leaderboard plots)."""
    facts = {}
    search = meta.get("search") or {}
    if "avg_expert_count" in search:
        facts["avg_expert_count"] = float(search["avg_expert_count"])
    selected = meta.get("selected")
    if selected and selected.get("expert_count") is not None:
        k = selected["expert_count"]
        facts["selected_expert_count"] = float(sum(k) / len(k)) if isinstance(k, list) else float(k)
    entropy = (meta.get("reroute") or {}).get("block_entropy") or []
    if entropy:
        facts["router_entropy_first_block"] = float(entropy[0])
        facts["router_entropy_last_block"] = float(entropy[-1])
    pathways = (meta.get("reroute") or {}).get("pathways") or {}
    if pathways:
        facts["pathway_edit_distance"] = float(pathways["edit_distance"])
        facts["pathway_changed_fraction"] = float(pathways["changed_fraction"])
        for when in ("before", "after"):
            layers = pathways[f"confidence_{when}"]
            facts[f"router_confidence_{when}"] = float(sum(layers) / len(layers))
    return facts
