"""Prompts, execution and scoring for the code tasks (HumanEval, MBPP sanitized, LiveCodeBench).

:class:`ExecuteCode` is the task's lm-eval filter (``extract_answer``, as the answer tasks name theirs): it
sees every response of the task at once, so all programs (every ``repeats`` response and every final candidate
of a search model) run in parallel in the sandbox (:mod:`lm_eval_moe.scoring.code`). ``filtered_resps`` holds
the program of the selected response; ``process_results`` gets one record per response (the text, its execution
verdict: outcome, per-test details, forgeable or not, and those of the candidates) and logs them as the
sample's ``moe_records``. Verdicts are per sample, always: whatever goes wrong while checking one program (a sandbox
failure that a retry did not cure included) is that sample's verdict with its reason, and a warning counts
them; the run stops only when the sandbox cannot start at all, which :data:`load_code_benchmark` finds out
while the task loads, before any sample is generated.

Metrics: ``exact_match`` (the selected, i.e. first, response passes), ``coverage`` (any candidate
passes), ``precision`` (the share of candidates that pass), ``num_candidates``, with ``repeats`` the
unbiased ``pass@k`` over the responses (:mod:`lm_eval_moe.scoring.metrics`; a search's candidates are not
independent samples), ``forgeable`` (the verdict came from in-sandbox assertions), ``verdicts_<outcome>``
(summed: how many samples got each verdict, ``sandbox_error`` included; such a sample counts as not passed),
and the request's cost when the model reports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from lm_eval.api.filter import Filter

from lm_eval_moe.response import (
    RECORDS_KEY, FilteredResponse, SampleRecord, real_responses, record_metrics, request_records, sample_record,
)
from lm_eval_moe.scoring.code import OUTCOMES, ExecutionResult, extract_program, shared_runner
from lm_eval_moe.scoring.metrics import candidate_metrics
from lm_eval_moe.tasks.code_data import problem_from_doc
from lm_eval_moe.tasks.data import BenchmarkLoader

logger = logging.getLogger(__name__)

MBPP_INSTRUCTION = "You are an expert Python programmer, and here is your task: "
LCB_INSTRUCTION = (
    "You will be given a question (problem specification) and will generate a correct Python program that "
    "matches the specification and passes all tests."
)
LCB_STDIN_FORMAT = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the "
    "sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, "
    "it reads the inputs, runs the algorithm and writes output to STDOUT."
)
LCB_STARTER_FORMAT = (
    "You will use the following starter code to write the solution to the problem and enclose your code "
    "within delimiters."
)


def humaneval_prompt(doc: dict[str, Any]) -> str:
    return doc["moe_prompt_code"]


def mbpp_prompt(doc: dict[str, Any]) -> str:
    return f"{MBPP_INSTRUCTION}{doc['moe_question']}\n\nWrite the solution in a Python code block.\n```python\n"


def livecodebench_prompt(doc: dict[str, Any]) -> str:
    starter = doc.get("moe_starter_code") or ""
    if starter:
        format_block = f"### Format: {LCB_STARTER_FORMAT}\n```python\n{starter}\n```"
    else:
        format_block = f"### Format: {LCB_STDIN_FORMAT}\n```python\n# YOUR CODE HERE\n```"
    return (f"{LCB_INSTRUCTION}\n\n### Question:\n{doc['moe_question']}\n\n{format_block}\n\n"
            "### Answer: (use the provided format with backticks)\n\n")


def reference_solution(doc: dict[str, Any]) -> str:
    return doc["moe_solution"]


def program_for(doc: dict[str, Any], response: str) -> str:
    """The program to run for a response: a fenced or complete program as is (after the prompt's code,
    which provides imports and helpers it may rely on), or the prompt continued by the completion."""
    problem = problem_from_doc(doc)
    code, complete = extract_program(response, problem.entry_point)
    prompt_code = doc.get("moe_prompt_code") or ""
    if not prompt_code:
        return code
    return f"{prompt_code}\n{code}" if complete else prompt_code + code


class ExecuteCode(Filter):
    """Runs every response (and search candidate) of a task in the sandbox, all in parallel; lm-eval logs the
    program of each request's selected (first) response in ``filtered_resps``, as its own code tasks log the
    program they test."""

    def apply(self, resps: Sequence[Sequence[Any]], docs: Sequence[dict[str, Any]]) -> list[FilteredResponse]:
        jobs: dict[tuple[str, str], int] = {}
        plan: list[list[tuple[SampleRecord, list[tuple[str, str]]]]] = []
        problems = {}
        for responses, doc in zip(resps, docs):
            problem = problem_from_doc(doc)
            problems[problem.task_id] = problem
            per_doc = []
            for response in real_responses(responses):
                record = sample_record(response)
                texts = [record["response"]] + [str(c["text"]) for c in record["candidates"]]
                keys = []
                for text in texts:
                    key = (problem.task_id, program_for(doc, text))
                    jobs.setdefault(key, len(jobs))
                    keys.append(key)
                per_doc.append((record, keys))
            plan.append(per_doc)
        ordered = sorted(jobs, key=jobs.get)
        results = shared_runner().run_many([(problems[task], program) for task, program in ordered],
                                           description=f"executing {len(ordered)} programs")
        by_key = dict(zip(ordered, results))
        broken = [(key[0], result.detail) for key, result in by_key.items() if result.outcome == "sandbox_error"]
        if broken:
            logger.warning("%d of %d program(s) could not be judged (sandbox_error, each its sample's verdict and "
                           "counted in verdicts_sandbox_error), e.g. %s: %s", len(broken), len(by_key), *broken[0])
        filtered = []
        for per_doc in plan:
            records = [self._executed(record, [by_key[key] for key in keys]) for record, keys in per_doc]
            _, selected_program = per_doc[0][1][0]  # the first response's own program (not a candidate's)
            filtered.append(FilteredResponse(selected_program, records))
        return filtered

    @staticmethod
    def _executed(record: SampleRecord, executions: list[ExecutionResult]) -> SampleRecord:
        record["execution"] = executions[0].as_dict()
        for candidate, execution in zip(record["candidates"], executions[1:]):
            candidate["execution"] = execution.as_dict()
        return record


def _passed(record: dict[str, Any]) -> bool:
    return record["execution"]["outcome"] == "passed"


def process_code(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """``process_results`` of the code tasks; the records go to the logged sample (:data:`RECORDS_KEY`)."""
    records = request_records(results)
    metrics: dict[str, Any] = {"exact_match": float(_passed(records[0]))}
    if len(records) == 1 and records[0]["candidates"]:  # a search's final candidates: not independent
        metrics.update(candidate_metrics([_passed(c) for c in records[0]["candidates"]], independent=False))
    else:
        metrics.update(candidate_metrics([_passed(r) for r in records], independent=True))
    metrics["forgeable"] = float(records[0]["execution"]["forgeable"])
    outcome = records[0]["execution"]["outcome"]
    metrics.update({f"verdicts_{kind}": float(kind == outcome) for kind in OUTCOMES})
    metrics.update(record_metrics(records))
    metrics[RECORDS_KEY] = records
    return metrics


def total(values: Sequence[float]) -> float:
    """The ``verdicts_*`` aggregation: a count over the task's samples."""
    return float(sum(values))


class CodeBenchmarkLoader(BenchmarkLoader):
    """``custom_dataset`` of the code tasks: the benchmark, after starting the sandbox, so that a machine
    that cannot run model-written code safely is refused while the task loads, before any sample is
    generated (and the sandbox's layers are recorded in the results' provenance)."""

    def __call__(self, benchmark: str, subject: str | None = None, **kwargs: Any) -> Any:
        shared_runner()
        return super().__call__(benchmark, subject, **kwargs)


load_code_benchmark = CodeBenchmarkLoader("lm_eval_moe.tasks.code.load_code_benchmark")
