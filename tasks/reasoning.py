"""Prompts and per-sample scoring for the math and knowledge tasks.

Prompts are zero-shot chain of thought with the final answer in ``\\boxed{}`` (a letter for MMLU-redux)
and steps separated by a blank line, the step format both PRMs expect. They read the same with and
without ``--apply_chat_template``.

Scoring (``process_results``) returns, for every task, the same metric names so that group
aggregates are complete: ``exact_match`` (the selected answer), ``maj@k``, ``pass@k``, ``precision``
over the candidates (see :mod:`lm_eval_moe.scoring.metrics`), ``num_candidates``, plus the cost of the
request when the model reports it (our model classes do; lm-eval's own do not).

Candidates are, in order of precedence: the final candidates a search model attached to its
response; the ``repeats`` responses of the request (self-consistency: the selected answer is then
their majority); the single response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.filter import Filter

from lm_eval_moe.response import real_responses, response_meta
from lm_eval_moe.scoring import CHECKERS, Verdict, majority_index, sample_metrics

MATH_INSTRUCTION = (
    "Solve the following math problem step by step. Separate the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)
CHOICE_INSTRUCTION = (
    "Answer the following multiple choice question about {subject}. Think step by step, separating the "
    "steps with a blank line, then give the letter of the correct option within \\boxed{{}}."
)

#: Cost fields copied from a response's metadata into the sample metrics (summed over repeats).
COST_METRICS = (
    "generated_tokens", "prompt_tokens", "verifier_tokens", "routed_expert_tokens", "shared_expert_tokens",
    "flops", "extra_flops",
)


def math_prompt(doc: dict[str, Any]) -> str:
    return f"{MATH_INSTRUCTION}\n\nProblem: {doc['moe_question']}\n\nSolution:"


def choice_prompt(doc: dict[str, Any]) -> str:
    instruction = CHOICE_INSTRUCTION.format(subject=doc["moe_subject"])
    return f"{instruction}\n\nQuestion: {doc['moe_question']}\n\nSolution:"


def worked_solution(doc: dict[str, Any]) -> str:
    return doc["moe_solution"]


class KeepAll(Filter):
    """Keeps every response of a request: lm-eval's default filter keeps only the first, which would
    silently drop all but one of the ``repeats`` (self-consistency)."""

    def apply(self, resps: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[list[Any]]:
        return [real_responses(responses) for responses in resps]


def _select(verdicts: Sequence[Verdict]) -> Verdict:
    index = majority_index(verdicts)
    return verdicts[0] if index is None else verdicts[index]


def score_sample(doc: dict[str, Any], results: Sequence[Any], check: Callable[[str, str], Verdict]) -> dict[str, float]:
    if len(results) == 1 and isinstance(results[0], list):  # one request, all its repeats (KeepAll)
        results = results[0]
    gold = str(doc["moe_gold"])
    verdicts = [check(str(response), gold) for response in results]
    selected = verdicts[0] if len(verdicts) == 1 else _select(verdicts)
    search_candidates = response_meta(results[0]).get("candidates") if len(results) == 1 else None
    if search_candidates:
        candidates = [check(str(candidate["text"]), gold) for candidate in search_candidates]
    else:
        candidates = verdicts
    metrics = sample_metrics(selected, candidates)
    metas = [response_meta(response) for response in results]
    for name in COST_METRICS:
        values = [meta["cost"][name] for meta in metas if name in meta.get("cost", {})]
        if values:
            metrics[name] = float(sum(values))
    metrics.update(routing_metrics(metas[0]))
    return metrics


def routing_metrics(meta: dict[str, Any]) -> dict[str, float]:
    """Search and rerouting facts of a response, as sample metrics (read by the leaderboard plots)."""
    metrics = {}
    search = meta.get("search") or {}
    if "avg_expert_count" in search:
        metrics["avg_expert_count"] = float(search["avg_expert_count"])
    selected = meta.get("selected")
    if selected and selected.get("expert_count") is not None:
        k = selected["expert_count"]
        metrics["selected_expert_count"] = float(sum(k) / len(k)) if isinstance(k, list) else float(k)
    entropy = (meta.get("reroute") or {}).get("block_entropy") or []
    if entropy:
        metrics["router_entropy_first_block"] = float(entropy[0])
        metrics["router_entropy_last_block"] = float(entropy[-1])
    return metrics


def _processor(checker: str) -> Callable[[dict[str, Any], Sequence[Any]], dict[str, float]]:
    check = CHECKERS[checker]

    def process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float]:
        return score_sample(doc, results, check)

    process_results.__name__ = f"process_{checker}"
    return process_results


process_math = _processor("math")
process_numeric = _processor("numeric")
process_aime = _processor("aime")
process_choice = _processor("choice4")
