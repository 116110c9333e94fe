"""Prompts and per-sample scoring for the math and knowledge tasks.

Prompts are zero-shot chain of thought with the final answer in ``\\boxed{}`` (a letter for MMLU-redux)
and steps separated by a blank line, the step format both PRMs expect. They read the same with and
without ``--apply_chat_template``.

Scoring (``process_results``): ``exact_match`` (the selected answer), ``coverage`` (any candidate
correct), ``precision``, ``num_candidates`` and, when the candidates are independent samples, unbiased
``pass@k`` and ``maj@k`` (see :mod:`lm_eval_moe.scoring.metrics`), plus the cost of the request when the
model reports it (our model classes do; lm-eval's own do not).

Candidates are either the final candidates a search model attached to its response (not independent),
or the responses of the request: its ``repeats`` (self-consistency: the selected answer is then their
majority) or the single response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lm_eval.api.filter import Filter

from lm_eval_moe.response import SampleRecord, real_responses, record_metrics, request_records, sample_record
from lm_eval_moe.scoring import CHECKERS, Verdict, majority_index, sample_metrics
from lm_eval_moe.scoring.checkers import AnswerChecker

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


class KeepAll(Filter):
    """Keeps every response of a request, each as a :class:`~lm_eval_moe.response.SampleRecord` (so the
    logged samples keep a search's candidates): lm-eval's default filter keeps only the first response,
    which would silently drop all but one of the ``repeats`` (self-consistency)."""

    def apply(self, resps: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[list[SampleRecord]]:
        return [[sample_record(response) for response in real_responses(responses)] for responses in resps]


def _select(verdicts: Sequence[Verdict]) -> Verdict:
    index = majority_index(verdicts)
    return verdicts[0] if index is None else verdicts[index]


def score_sample(doc: dict[str, Any], results: Sequence[Any], check: AnswerChecker) -> dict[str, float]:
    records = request_records(results)
    gold = str(doc["moe_gold"])
    verdicts = [check(record["response"], gold) for record in records]
    selected = verdicts[0] if len(verdicts) == 1 else _select(verdicts)
    if len(records) == 1 and records[0]["candidates"]:  # a search's final candidates: not independent
        candidates = [check(str(candidate["text"]), gold) for candidate in records[0]["candidates"]]
        metrics = sample_metrics(selected, candidates, independent=False)
    else:
        metrics = sample_metrics(selected, verdicts, independent=True)
    metrics.update(record_metrics(records))
    return metrics


def process_answer(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """``process_results`` of the answer tasks: judged by the document's own checker (``moe_answer_key``),
    the one a search votes with."""
    return score_sample(doc, results, CHECKERS[doc["moe_answer_key"]])
