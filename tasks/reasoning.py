"""Prompts and per-sample scoring for the math and knowledge tasks.

Prompts are zero-shot chain of thought with the final answer in ``\\boxed{}`` (a letter for MMLU-redux)
and steps separated by a blank line, the step format both PRMs expect. They read the same with and
without ``--apply_chat_template``.

The filter (:class:`ExtractAnswer`, ``extract_answer``) reads and judges every response; ``filtered_resps``
holds the selected answer, as in lm-eval's own answer tasks. Scoring (``process_results``): ``exact_match``
(the selected answer), ``coverage`` (any candidate correct), ``precision``, ``num_candidates`` and, when the
candidates are independent samples, unbiased ``pass@k`` and ``maj@k`` (see :mod:`lm_eval_moe.scoring.metrics`), plus the cost of the request when the
model reports it (our model classes do; lm-eval's own do not).

Candidates are either the final candidates a search model attached to its response (not independent),
or the responses of the request: its ``repeats`` (self-consistency: the selected answer is then their
majority) or the single response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from lm_eval.api.filter import Filter

from lm_eval_moe.response import (
    RECORDS_KEY, FilteredResponse, SampleRecord, real_responses, record_metrics, request_records, sample_record,
)
from lm_eval_moe.scoring import CHECKERS, Verdict, majority_index, sample_metrics

MATH_INSTRUCTION = (
    "Solve the following math problem step by step. Separate the steps with a blank line, "
    "and put your final answer within \\boxed{}."
)
CHOICE_INSTRUCTION = (
    "Answer the following multiple choice question about {subject}. Think step by step, separating the "
    "steps with a blank line, then give the letter of the correct option within \\boxed{{}}."
)


def math_prompt(doc: dict[str, Any]) -> str:
    return f"{MATH_INSTRUCTION}\n\nProblem: {doc['moe_question']}\n\nSolution:"


def choice_prompt(doc: dict[str, Any]) -> str:
    instruction = CHOICE_INSTRUCTION.format(subject=doc["moe_subject"])
    return f"{instruction}\n\nQuestion: {doc['moe_question']}\n\nSolution:"


def worked_solution(doc: dict[str, Any]) -> str:
    return doc["moe_solution"]


#: ``filtered_resps`` of a request whose selected response states no answer (lm-eval's regex filters' word).
NO_ANSWER = "[invalid]"


def judge(records: Sequence[SampleRecord], doc: dict[str, Any]) -> None:
    """Give each record, and each of its candidates, the ``verdict`` of the document's checker (once)."""
    check = CHECKERS[doc["moe_answer_key"]]
    gold = str(doc["moe_gold"])
    for record in records:
        texts = [(record, record["response"]), *((candidate, candidate["text"]) for candidate in record["candidates"])]
        for item, text in texts:
            if "verdict" not in item:
                item["verdict"] = asdict(check(str(text), gold))


def selected_verdict(records: Sequence[SampleRecord]) -> Verdict:
    """The request's answer: its response's, or with ``repeats`` their majority (self-consistency)."""
    verdicts = [Verdict(**record["verdict"]) for record in records]
    index = majority_index(verdicts) if len(verdicts) > 1 else 0
    return verdicts[index or 0]


class ExtractAnswer(Filter):
    """The answer each request states, read by its document's checker, as lm-eval logs it in
    ``filtered_resps`` (the selected response's: with ``repeats``, their majority); every response (lm-eval's
    default filter would keep only the first of the ``repeats``) travels on in the records, judged."""

    def apply(self, resps: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[FilteredResponse]:
        filtered = []
        for responses, doc in zip(resps, docs):
            records = [sample_record(response) for response in real_responses(responses)]
            judge(records, doc)
            filtered.append(FilteredResponse(selected_verdict(records).answer or NO_ANSWER, records))
        return filtered


def process_answer(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """``process_results`` of the answer tasks: judged by the document's own checker (``moe_answer_key``),
    the one a search votes with; the records go to the logged sample (:data:`RECORDS_KEY`)."""
    records = request_records(results)
    judge(records, doc)
    selected = selected_verdict(records)
    if len(records) == 1 and records[0]["candidates"]:  # a search's final candidates: not independent
        candidates = [Verdict(**candidate["verdict"]) for candidate in records[0]["candidates"]]
        metrics: dict[str, Any] = sample_metrics(selected, candidates, independent=False)
    else:
        metrics = sample_metrics(selected, [Verdict(**record["verdict"]) for record in records], independent=True)
    metrics.update(record_metrics(records))
    metrics[RECORDS_KEY] = records
    return metrics
