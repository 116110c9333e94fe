"""Benchmark data for our tasks: the hub datasets by default, local JSONL under ``LM_EVAL_MOE_DATA_DIR``.

Tasks name this module's :func:`load_benchmark` as their ``custom_dataset`` (lm-eval calls it with
the task's ``dataset_kwargs`` plus run metadata). Every document gets common fields so that prompts,
scorers and search models treat all benchmarks alike:

* ``moe_id``: a stable identifier; ``moe_question``: the problem as a verifier should see it;
* ``moe_gold``: the reference answer (string); ``moe_solution``: a worked solution ending in
  ``\\boxed{gold}`` (used as the few-shot target);
* ``moe_answer_key``: the answer checker of the benchmark (``lm_eval_moe.scoring.CHECKERS``), which the
  task's ``process_results`` judges with and a search votes with, or "" (code: programs are executed).

Split: ``test``. Few-shot examples come from the benchmark's separate pool where it has one (GSM8K's
training split, MBPP's prompt split, the demo's training problems), registered with
:mod:`lm_eval_moe.tasks.fewshot` without any test problem, else from the other test problems: no prompt ever
contains its own problem. C3PO's reference problems come from :func:`reference_pool`: a split disjoint from
the test set (GSM8K train, MBPP validation, as in the paper), or none. Every load records where the rows came
from (hub id, config and revision, or local file and sha256) in :mod:`lm_eval_moe.provenance`, which the
results carry (the task configs' ``custom_dataset`` entry: :class:`BenchmarkLoader`).

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

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from lm_eval_moe.problem_identity import problem_key
from lm_eval_moe.provenance import provenance, record_dataset
from lm_eval_moe.scoring.equivalence import aime_integer, parse_number
from lm_eval_moe.tasks import code_data
from lm_eval_moe.tasks.fewshot import register_pool

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


def _aime(question_key: str, answer_key: str, solution_key: str | None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def normalise(row: dict[str, Any]) -> dict[str, Any]:
        value = aime_integer(str(row[answer_key]))
        if value is None:
            raise TaskDataError(f"AIME answer {row[answer_key]!r} is not an integer 0..999")
        final = f"The final answer is $\\boxed{{{value}}}$."
        solution = (row.get(solution_key) or "").strip() if solution_key else ""
        return {
            "moe_question": row[question_key],
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
    hub_train_split: str | None = None  # the few-shot pool
    local_train: str | None = None
    keep: Callable[[dict[str, Any]], bool] | None = None
    keep_train: Callable[[dict[str, Any]], bool] | None = None
    hub_reference_split: str | None = None  # C3PO's reference problems (disjoint from the test split)
    local_reference: str | None = None
    keep_reference: Callable[[dict[str, Any]], bool] | None = None


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
                           hub_train_split="train", local_train="gsm8k/train.jsonl",
                           hub_reference_split="train", local_reference="gsm8k/train.jsonl"),
        "math500": Benchmark("HuggingFaceH4/MATH-500", "test", "math500/test.jsonl", _math500),
        "aime24": Benchmark("Maxwell-Jia/AIME_2024", "train", "aime24/aime_2024_problems.jsonl",
                            _aime("Problem", "Answer", "Solution")),
        "aime25": Benchmark("math-ai/aime25", "test", "aime25/test.jsonl", _aime("problem", "answer", None)),
        "svamp": Benchmark("tongyx361/svamp", "test", "svamp/SVAMP.jsonl", _svamp),
        "humaneval": Benchmark("openai/openai_humaneval", "test", "humaneval/HumanEval.jsonl", code_data.humaneval),
        "mbpp": Benchmark("google-research-datasets/mbpp", "test", "mbpp/sanitized-mbpp-test.jsonl", code_data.mbpp,
                          hub_name="sanitized", hub_train_split="prompt", local_train="mbpp/sanitized-mbpp.jsonl",
                          keep_train=lambda row: int(row["task_id"]) < 11,
                          hub_reference_split="validation", local_reference="mbpp/sanitized-mbpp.jsonl",
                          keep_reference=lambda row: 511 <= int(row["task_id"]) <= 600),
    }
    if name not in table:
        known = ", ".join(sorted([*table, "mmlu_redux", "livecodebench"]))
        raise TaskDataError(f"unknown benchmark {name!r}; known: {known}")
    return table[name]


#: each benchmark's answer checker (lm_eval_moe.scoring.CHECKERS): what its scoring and a search's votes read
ANSWER_KEYS = {
    "gsm8k": "numeric", "svamp": "numeric", "demo_arith": "numeric", "math500": "math", "aime24": "aime",
    "aime25": "aime", "mmlu_redux": "choice4", "humaneval": "", "mbpp": "", "livecodebench": "",
}


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
        return {"moe_id": f"{name}/{index}", "moe_answer_key": ANSWER_KEYS[name], **fields}

    return split.map(convert, with_indices=True)


DEMO_TEST_PROBLEMS = 200
DEMO_SEED = 20261122
def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_record(paths: list[Path], rows: int) -> dict[str, Any]:
    return {"source": "local", "files": {str(path): _file_sha256(path) for path in paths}, "rows": rows}


def _hub_record(path: str, name: str | None, split: str, dataset: datasets.Dataset) -> dict[str, Any]:
    """The hub commit the rows came from: datasets caches a download under a folder named by it."""
    folders = [Path(f["filename"]).parent.name for f in getattr(dataset, "cache_files", [])]
    revision = next((name for name in folders if re.fullmatch(r"[0-9a-f]{40}", name)), None)
    return {"source": "hub", "dataset": path, "config": name, "split": split,
            "revision": revision or "unresolved (not found in the cache path)",
            "fingerprint": getattr(dataset, "_fingerprint", None), "rows": len(dataset)}


def _demo_arith() -> datasets.DatasetDict:
    """The demo's held-out problems (never in its training data: see lm_eval_moe.demo.arith); few-shot
    examples come from its training problems."""
    test = _demo_rows(held_out=True, count=DEMO_TEST_PROBLEMS)
    register_pool("demo_arith", list(_demo_rows(held_out=False, count=50)), list(test))
    record_dataset("demo_arith", {"source": "generated", "generator": "lm_eval_moe.demo.arith.problems",
                                  "seed": DEMO_SEED + 1, "rows": len(test)})
    return datasets.DatasetDict({"test": test})


def _demo_rows(held_out: bool, count: int) -> datasets.Dataset:
    """Held-out (test) or training-distribution problems of the demo (disjoint: lm_eval_moe.demo.arith)."""
    from lm_eval_moe.demo.arith import problems

    return datasets.Dataset.from_list([
        {"moe_id": f"demo_arith/{i}", "moe_answer_key": ANSWER_KEYS["demo_arith"], "moe_question": p.question,
         "moe_gold": str(p.answer), "moe_solution": p.solution}
        for i, p in enumerate(problems(DEMO_SEED + held_out, count, held_out=held_out))
    ])


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
    record = (_local_record([Path(s) for s in sources], len(test)) if data_dir else
              {"source": "hub", "dataset": "livecodebench/code_generation_lite", "files": files, "revision": "main",
               "rows": len(test)})
    record_dataset("livecodebench", {**record, "release": release, "start_date": start_date, "end_date": end_date})
    return datasets.DatasetDict({"test": test})


def _local_split(data_dir: Path, relative: str) -> datasets.Dataset:
    path = data_dir / relative
    if not path.is_file():
        raise TaskDataError(f"{DATA_DIR_ENV}={data_dir} has no {relative} (expected layout: see lm_eval_moe/tasks/data.py)")
    return datasets.load_dataset("json", data_files={"test": str(path)}, split="test")


def _split(spec: Benchmark, hub_split: str | None, local: str | None, optional: bool) -> tuple[datasets.Dataset | None, dict]:
    """One split of a benchmark, from ``LM_EVAL_MOE_DATA_DIR`` or the hub, and its provenance record."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        root = Path(data_dir).expanduser()
        if local is None or (optional and not (root / local).is_file()):
            return None, {}
        rows = _local_split(root, local)
        return rows, _local_record([root / local], len(rows))
    if hub_split is None:
        return None, {}
    rows = datasets.load_dataset(spec.hub_path, spec.hub_name, split=hub_split)
    return rows, _hub_record(spec.hub_path, spec.hub_name, hub_split, rows)


def _load_benchmark(
    benchmark: str,
    subject: str | None = None,
    release: str = "release_v6",
    start_date: str | None = None,
    end_date: str | None = None,
    **_run_metadata: Any,
) -> datasets.DatasetDict:
    if benchmark == "livecodebench":
        return _livecodebench(str(release), start_date, end_date)
    if benchmark == "demo_arith":
        return _demo_arith()
    spec = _benchmark(benchmark, subject)
    raw, record = _split(spec, spec.hub_test_split, spec.local_test, optional=False)
    test = _normalise(benchmark, spec.normalise, raw, benchmark, spec.keep)
    train, train_record = _split(spec, spec.hub_train_split, spec.local_train, optional=True)
    if train is not None:
        pool = _normalise(benchmark, spec.normalise, train, f"{benchmark} (few-shot pool)", spec.keep_train)
        removed = register_pool(benchmark, list(pool), list(test))
        if removed:
            logger.info("%s: %d few-shot pool problems also in the test set are never used", benchmark, removed)
        record = {**record, "fewshot_pool": {**train_record, "rows": len(pool) - removed}}
    record_dataset(f"{benchmark}/{subject}" if subject else benchmark, {**record, "rows": len(test)})
    return datasets.DatasetDict({"test": test})


class BenchmarkLoader:
    """``custom_dataset`` of our task YAMLs: loads a benchmark (keyword arguments beyond the task's
    ``dataset_kwargs`` are lm-eval run metadata; LiveCodeBench reads ``release``, ``start_date`` and
    ``end_date`` from ``--metadata``).

    lm-eval writes a task's callables into the results as their source code; an object has none, so
    lm-eval writes its ``str()``: here the provenance of the run (package version and commit, library
    versions, every loaded benchmark's source and hash). Every results file of our tasks carries it,
    whichever model produced it.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, benchmark: str, subject: str | None = None, **kwargs: Any) -> datasets.DatasetDict:
        return _load_benchmark(benchmark, subject, **kwargs)

    def __str__(self) -> str:
        return json.dumps({"loader": self.name, **provenance()}, sort_keys=True)


load_benchmark = BenchmarkLoader("lm_eval_moe.tasks.data.load_benchmark")


#: C3PO reference problems of the demo: training-distribution problems (the demo's test problems are held out).
DEMO_REFERENCE_PROBLEMS = 500


def reference_pool(benchmark: str) -> datasets.Dataset:
    """C3PO's reference problems: a split disjoint from the test set (the paper's GSM8K train, MBPP
    validation; the demo's training distribution); any problem whose question is also a test question is
    dropped."""
    if benchmark == "demo_arith":
        pool = _demo_rows(held_out=False, count=DEMO_REFERENCE_PROBLEMS)
    else:
        spec = _benchmark(benchmark, None)
        raw, _ = _split(spec, spec.hub_reference_split, spec.local_reference, optional=True)
        if raw is None:
            raise TaskDataError(f"{benchmark} has no split disjoint from its test set for C3PO references "
                                "(available for: gsm8k (train), mbpp (validation), demo_arith (training problems))")
        pool = _normalise(benchmark, spec.normalise, raw, f"{benchmark} (references)", spec.keep_reference)
    test_keys = {problem_key(doc) for doc in load_benchmark(benchmark)["test"]}
    return pool.filter(lambda doc: problem_key(doc) not in test_keys)
