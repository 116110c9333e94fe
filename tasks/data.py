"""Benchmark data for our tasks: the hub datasets by default, local JSONL under ``LM_EVAL_MOE_DATA_DIR``.

Tasks name this module's :func:`load_benchmark` as their ``custom_dataset`` (lm-eval calls it with
the task's ``dataset_kwargs`` plus run metadata). Every document gets common fields so that prompts,
scorers and search models treat all benchmarks alike:

* ``moe_id``: a stable identifier; ``moe_question``: the problem as a verifier should see it;
* ``moe_gold``: the reference answer (string); ``moe_solution``: a worked solution ending in
  ``\\boxed{gold}`` (used as the few-shot target).

Splits: ``test``, and ``fewshot`` = the benchmark's training split where it has one (GSM8K), else the
test split itself (lm-eval's sampler never shows a problem its own solution).

Local layout (as in ``tests/data``, the copies the tests use; see README)::

    $LM_EVAL_MOE_DATA_DIR/gsm8k/test.jsonl            (+ optional gsm8k/train.jsonl)
    $LM_EVAL_MOE_DATA_DIR/math500/test.jsonl
    $LM_EVAL_MOE_DATA_DIR/aime24/aime_2024_problems.jsonl
    $LM_EVAL_MOE_DATA_DIR/aime25/test.jsonl
    $LM_EVAL_MOE_DATA_DIR/svamp/SVAMP.jsonl
    $LM_EVAL_MOE_DATA_DIR/mmlu_redux/annotation_csv_snapshot/<subject>.jsonl
    $LM_EVAL_MOE_DATA_DIR/humaneval/HumanEval.jsonl
    $LM_EVAL_MOE_DATA_DIR/mbpp/sanitized-mbpp-test.jsonl  (+ optional mbpp/sanitized-mbpp.jsonl: few-shot
                                                          examples are its task ids 1-10, the prompt split)
    $LM_EVAL_MOE_DATA_DIR/livecodebench/test.jsonl .. test6.jsonl  (the hub files, original fields)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from lm_eval_moe.scoring.equivalence import aime_integer, parse_number
from lm_eval_moe.tasks import code_data

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "LM_EVAL_MOE_DATA_DIR"


class TaskDataError(ValueError):
    """A benchmark file or row that cannot be used as is."""


def _number_text(value: Any) -> str:
    number = parse_number(value if isinstance(value, (int, float)) else str(value))
    if number is None:
        raise TaskDataError(f"answer {value!r} is not a number")
    return str(number.numerator) if number.denominator == 1 else str(value)


def _gsm8k(row: dict[str, Any]) -> dict[str, Any]:
    solution, separator, answer = row["answer"].rpartition("####")
    if not separator:
        raise TaskDataError(f"GSM8K answer has no '####' line: {row['answer'][-80:]!r}")
    gold = _number_text(answer.strip())
    steps = [re.sub(r"<<[^>]*>>", "", line).strip() for line in solution.strip().splitlines() if line.strip()]
    worked = "\n\n".join(steps + [f"The final answer is $\\boxed{{{gold}}}$."])
    return {"moe_question": row["question"], "moe_gold": gold, "moe_solution": worked}


def _math500(row: dict[str, Any]) -> dict[str, Any]:
    if not str(row.get("answer", "")).strip():
        raise TaskDataError("MATH-500 row without an answer")
    return {"moe_question": row["problem"], "moe_gold": row["answer"], "moe_solution": row["solution"]}


def _aime(problem_key: str, answer_key: str, solution_key: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def normalise(row: dict[str, Any]) -> dict[str, Any]:
        value = aime_integer(str(row[answer_key]))
        if value is None:
            raise TaskDataError(f"AIME answer {row[answer_key]!r} is not an integer 0..999")
        final = f"The final answer is $\\boxed{{{value}}}$."
        solution = (row.get(solution_key) or "").strip() if solution_key else ""
        return {
            "moe_question": row[problem_key],
            "moe_gold": str(value),
            "moe_solution": f"{solution}\n\n{final}" if solution else final,
        }

    return normalise


def _svamp(row: dict[str, Any]) -> dict[str, Any]:
    gold = _number_text(row["Answer"])
    question = f"{row['Body'].strip()} {row['Question'].strip()}"
    solution = f"We compute {row['Equation'].strip()} = {gold}.\n\nThe final answer is $\\boxed{{{gold}}}$."
    return {"moe_question": question, "moe_gold": gold, "moe_solution": solution}


LETTERS = "ABCDEFGHIJ"


def _mmlu(subject: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def normalise(row: dict[str, Any]) -> dict[str, Any]:
        choices = list(row["choices"])
        answer = row["answer"]
        if len(choices) != 4 or not isinstance(answer, int) or not 0 <= answer < 4:
            raise TaskDataError(f"MMLU-redux row needs 4 choices and an answer index 0..3, got {len(choices)} / {answer!r}")
        options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
        gold = LETTERS[answer]
        return {
            "moe_question": f"{row['question'].strip()}\n\n{options}",
            "moe_gold": gold,
            "moe_solution": f"The answer is $\\boxed{{{gold}}}$.",
            "moe_subject": subject.replace("_", " "),
        }

    return normalise


def _mmlu_ok(row: dict[str, Any]) -> bool:
    """MMLU-redux keeps only questions annotated ok; the annotation files spell it several ways."""
    return str(row.get("error_type") or "").strip().lower().replace(" ", "_") == "ok"


@dataclass(frozen=True)
class Benchmark:
    hub_path: str
    hub_test_split: str
    local_test: str
    normalise: Callable[[dict[str, Any]], dict[str, Any]]
    hub_name: str | None = None
    hub_train_split: str | None = None
    local_train: str | None = None
    keep: Callable[[dict[str, Any]], bool] | None = None
    keep_train: Callable[[dict[str, Any]], bool] | None = None


def _benchmark(name: str, subject: str | None) -> Benchmark:
    if name == "mmlu_redux":
        if not subject:
            raise TaskDataError("benchmark mmlu_redux needs a subject")
        return Benchmark(
            "edinburgh-dawg/mmlu-redux-2.0", "test", f"mmlu_redux/annotation_csv_snapshot/{subject}.jsonl",
            _mmlu(subject), hub_name=subject, keep=_mmlu_ok,
        )
    table = {
        "gsm8k": Benchmark("openai/gsm8k", "test", "gsm8k/test.jsonl", _gsm8k, hub_name="main",
                           hub_train_split="train", local_train="gsm8k/train.jsonl"),
        "math500": Benchmark("HuggingFaceH4/MATH-500", "test", "math500/test.jsonl", _math500),
        "aime24": Benchmark("Maxwell-Jia/AIME_2024", "train", "aime24/aime_2024_problems.jsonl",
                            _aime("Problem", "Answer", "Solution")),
        "aime25": Benchmark("math-ai/aime25", "test", "aime25/test.jsonl", _aime("problem", "answer", None)),
        "svamp": Benchmark("tongyx361/svamp", "test", "svamp/SVAMP.jsonl", _svamp),
        "humaneval": Benchmark("openai/openai_humaneval", "test", "humaneval/HumanEval.jsonl", code_data.humaneval),
        "mbpp": Benchmark("google-research-datasets/mbpp", "test", "mbpp/sanitized-mbpp-test.jsonl", code_data.mbpp,
                          hub_name="sanitized", hub_train_split="prompt", local_train="mbpp/sanitized-mbpp.jsonl",
                          keep_train=lambda row: int(row["task_id"]) < 11),
    }
    if name not in table:
        known = ", ".join(sorted([*table, "mmlu_redux", "livecodebench"]))
        raise TaskDataError(f"unknown benchmark {name!r}; known: {known}")
    return table[name]


def _normalise(
    name: str, normalise: Callable[[dict[str, Any]], dict[str, Any]], split: datasets.Dataset, origin: str,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> datasets.Dataset:
    if keep is not None:
        split = split.filter(keep)

    def convert(row: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            fields = normalise(row)
        except (TaskDataError, KeyError, TypeError, ValueError) as error:
            raise TaskDataError(f"{name}: row {index} of {origin} is malformed: {error}") from None
        return {"moe_id": f"{name}/{index}", **fields}

    return split.map(convert, with_indices=True)


DEMO_TEST_PROBLEMS = 200
DEMO_SEED = 20261122


def _demo_arith() -> datasets.DatasetDict:
    """The demo's held-out problems (never in its training data: see lm_eval_moe.demo.arith)."""
    from lm_eval_moe.demo.arith import problems

    def rows(held_out: bool, count: int) -> datasets.Dataset:
        return datasets.Dataset.from_list([
            {"moe_id": f"demo_arith/{i}", "moe_question": p.question, "moe_gold": str(p.answer), "moe_solution": p.solution}
            for i, p in enumerate(problems(DEMO_SEED + held_out, count, held_out=held_out))
        ])

    return datasets.DatasetDict({"test": rows(True, DEMO_TEST_PROBLEMS), "fewshot": rows(False, 50)})


def _livecodebench(release: str, start_date: str | None, end_date: str | None) -> datasets.DatasetDict:
    """LiveCodeBench code generation: a release (cumulative ``release_vN`` or a delta ``vN``) and an
    optional contest-date window (ISO dates, inclusive)."""
    try:
        files = code_data.lcb_files(release)
    except ValueError as error:
        raise TaskDataError(str(error)) from None
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        paths = [Path(data_dir).expanduser() / "livecodebench" / name for name in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise TaskDataError(f"{DATA_DIR_ENV}={data_dir} lacks {', '.join(missing)} (LiveCodeBench {release})")
        sources = [str(p) for p in paths]
    else:
        sources = [f"hf://datasets/livecodebench/code_generation_lite/{name}" for name in files]
    rows = datasets.load_dataset("json", data_files={"test": sources}, split="test")

    def in_window(row: dict[str, Any]) -> bool:
        date = str(row.get("contest_date") or "")[:10]
        return (start_date is None or date >= start_date) and (end_date is None or date <= end_date)

    test = _normalise("livecodebench", code_data.livecodebench, rows, f"LiveCodeBench {release}", keep=in_window)
    if len(test) == 0:
        raise TaskDataError(f"no LiveCodeBench {release} problem between {start_date} and {end_date}")
    return datasets.DatasetDict({"test": test, "fewshot": test})


def _local_split(data_dir: Path, relative: str) -> datasets.Dataset:
    path = data_dir / relative
    if not path.is_file():
        raise TaskDataError(f"{DATA_DIR_ENV}={data_dir} has no {relative} (expected layout: see lm_eval_moe/tasks/data.py)")
    return datasets.load_dataset("json", data_files={"test": str(path)}, split="test")


def load_benchmark(
    benchmark: str,
    subject: str | None = None,
    release: str = "release_v6",
    start_date: str | None = None,
    end_date: str | None = None,
    **_run_metadata: Any,
) -> datasets.DatasetDict:
    """``custom_dataset`` for our task YAMLs (extra keyword arguments are lm-eval run metadata;
    LiveCodeBench reads ``release``, ``start_date`` and ``end_date`` from ``--metadata``)."""
    if benchmark == "livecodebench":
        return _livecodebench(str(release), start_date, end_date)
    if benchmark == "demo_arith":
        return _demo_arith()
    spec = _benchmark(benchmark, subject)
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        root = Path(data_dir).expanduser()
        test, origin = _local_split(root, spec.local_test), str(root / spec.local_test)
        train = _local_split(root, spec.local_train) if spec.local_train and (root / spec.local_train).is_file() else None
    else:
        hub = datasets.load_dataset(spec.hub_path, spec.hub_name)
        test, origin = hub[spec.hub_test_split], f"{spec.hub_path}[{spec.hub_test_split}]"
        train = hub[spec.hub_train_split] if spec.hub_train_split else None
    test = _normalise(benchmark, spec.normalise, test, origin, spec.keep)
    if train is not None:
        fewshot = _normalise(benchmark, spec.normalise, train, f"{origin} (train)", spec.keep_train)
    else:
        fewshot = test
        logger.debug("%s has no training split: few-shot examples come from other test problems", benchmark)
    return datasets.DatasetDict({"test": test, "fewshot": fewshot})
