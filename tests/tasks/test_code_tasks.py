"""Code tasks: reference solutions pass in the sandbox, wrong ones fail, LiveCodeBench rows decode
safely, extraction from chat answers, and the tasks through lm-eval."""

import base64
import json
import pickle
import zlib

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from conftest import LCB_SOLUTIONS, lcb_rows
from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.scoring.code import CodeRunner, Limits, extract_program
from lm_eval_moe.scoring.code.livecodebench import LiveCodeBenchDataError, decode_private_tests, row_problem
from lm_eval_moe.tasks import code as code_task
from lm_eval_moe.tasks.code_data import MBPP_IN_SANDBOX, mbpp, problem_from_doc
from lm_eval_moe.tasks.data import DATA_DIR_ENV, TaskDataError, load_benchmark
from lm_eval_moe.problem_identity import problem_key
from lm_eval_moe.tasks.fewshot import registered_pool


@pytest.fixture(scope="module")
def runner():
    return CodeRunner("auto", Limits(cpu_seconds=10, wall_seconds=30), workers=2)


@pytest.fixture(autouse=True)
def local_data(data_dir_with_lcb, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir_with_lcb))


def _run_docs(runner, docs, response_of):
    jobs = [(problem_from_doc(d), code_task.program_for(d, response_of(d))) for d in docs]
    return runner.run_many(jobs, progress=False)


def test_all_humaneval_reference_solutions_pass_and_stubs_fail(runner, capsys):
    docs = list(load_benchmark("humaneval")["test"])
    results = _run_docs(runner, docs, lambda d: d["moe_solution"])  # the solution as a fenced chat answer
    failures = [(d["moe_id"], r.outcome, r.detail) for d, r in zip(docs, results) if not r.passed]
    stubs = _run_docs(runner, docs, lambda d: "    raise NotImplementedError\n")
    empty = _run_docs(runner, docs, lambda d: "")
    with capsys.disabled():
        print(f"\n[canonical] HumanEval: {len(docs) - len(failures)}/{len(docs)} reference solutions pass; "
              f"{sum(r.passed for r in stubs)} stubs and {sum(r.passed for r in empty)} empty completions pass")
    assert len(docs) == 164 and failures == []
    assert not any(r.passed for r in stubs) and not any(r.passed for r in empty)


def test_all_mbpp_reference_solutions_pass_and_empty_ones_fail(runner, benchmark_data, capsys):
    rows = [json.loads(line) for line in (benchmark_data / "mbpp" / "sanitized-mbpp.jsonl").open()]
    docs = [mbpp(row) for row in rows]
    results = _run_docs(runner, docs, lambda d: d["moe_solution"])
    failures = [(r0["task_id"], r.outcome, r.detail) for r0, r in zip(rows, results) if not r.passed]
    forgeable = sorted(r0["task_id"] for r0, r in zip(rows, results) if r.forgeable)
    empty = _run_docs(runner, docs, lambda d: "")
    with capsys.disabled():
        print(f"\n[canonical] MBPP sanitized: {len(rows) - len(failures)}/{len(rows)} reference solutions pass "
              f"({len(forgeable)} judged inside the sandbox, forgeable: {forgeable}); "
              f"{sum(r.passed for r in empty)} empty programs pass")
    assert len(rows) == 427 and failures == []
    assert forgeable == sorted(MBPP_IN_SANDBOX) and not any(r.passed for r in empty)


def test_the_in_sandbox_list_is_exactly_what_the_proxy_cannot_judge(runner, benchmark_data):
    rows = [json.loads(line) for line in (benchmark_data / "mbpp" / "sanitized-mbpp.jsonl").open()]
    docs = []
    for row in rows:
        doc = mbpp(row)
        problem = json.loads(doc["moe_problem"])
        problem["in_sandbox"] = False
        docs.append({**doc, "moe_problem": json.dumps(problem)})
    results = _run_docs(runner, docs, lambda d: d["moe_solution"])
    assert {r0["task_id"] for r0, r in zip(rows, results) if not r.passed} == set(MBPP_IN_SANDBOX)


def test_mbpp_test_split_is_the_257_evaluation_problems_and_few_shot_comes_from_the_prompt_split():
    data = load_benchmark("mbpp")
    assert list(data) == ["test"] and len(data["test"]) == 257
    pool = registered_pool("mbpp")
    assert 1 <= len(pool) <= 10
    assert not {problem_key(d) for d in pool} & {problem_key(d) for d in data["test"]}


def test_livecodebench_rows_decode_and_judge(runner):
    docs = list(load_benchmark("livecodebench", release="release_v2")["test"])
    assert [json.loads(d["moe_problem"])["kind"] for d in docs] == ["stdio_io", "stdio_io", "functional_io"]
    by_id = {json.loads(d["moe_problem"])["task_id"]: d for d in docs}
    good = _run_docs(runner, docs, lambda d: f"```python\n{LCB_SOLUTIONS[json.loads(d['moe_problem'])['task_id']]}```")
    assert [r.outcome for r in good] == ["passed"] * 3, [r.detail for r in good]
    assert [len(r.tests) for r in good] == [3, 2, 3]  # public + private tests
    wrong = _run_docs(runner, docs, lambda d: "```python\nprint(0)\n```")
    assert not any(r.passed for r in wrong)
    # LiveCodeBench's numeric comparison: "1.5" matches "1.500" as Decimals
    assert by_id["abc002_b"] and good[1].tests[1].passed


def test_livecodebench_release_and_date_selection():
    assert len(load_benchmark("livecodebench", release="release_v1")["test"]) == 2
    assert len(load_benchmark("livecodebench", release="v2")["test"]) == 1
    assert len(load_benchmark("livecodebench", release="release_v2", start_date="2024-09-01")["test"]) == 2
    with pytest.raises(TaskDataError, match="release_v9"):
        load_benchmark("livecodebench", release="release_v9")
    with pytest.raises(TaskDataError, match="lacks .*test3.jsonl"):
        load_benchmark("livecodebench", release="release_v3")


class _Exploit:
    def __reduce__(self):
        return (print, ("owned",))


def test_private_tests_decode_without_resolving_any_global():
    row = lcb_rows()[0]
    tests = decode_private_tests(row["private_test_cases"])
    assert len(tests) == 2
    text = json.dumps(tests)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # every protocol the dataset could have been written with
        encoded = base64.b64encode(zlib.compress(pickle.dumps(text, protocol=protocol))).decode()
        assert decode_private_tests(encoded) == tests, protocol
    for payload in (pickle.dumps(_Exploit()), pickle.dumps(["a list"]), pickle.dumps(("a", "b")),
                    pickle.dumps(_Exploit(), protocol=0), b"cos\nsystem\n(S'true'\ntR.", b"\x80\x04\x95"):
        with pytest.raises(LiveCodeBenchDataError):
            decode_private_tests(base64.b64encode(zlib.compress(payload)).decode())
    bomb = base64.b64encode(zlib.compress(b"\0" * (64 << 20))).decode()
    with pytest.raises(LiveCodeBenchDataError):  # not a pickle at all, and decompression stops at the bound
        decode_private_tests(bomb)
    with pytest.raises(LiveCodeBenchDataError, match="base64"):
        decode_private_tests("not base64 at all!")
    with pytest.raises(ValueError, match="no test case"):
        row_problem({**row, "public_test_cases": "[]", "private_test_cases": ""})


@pytest.mark.parametrize(
    "response, expected, complete",
    [
        ("Here you go:\n```python\ndef f(x):\n    return x\n```\nDone.", "def f(x):\n    return x\n", True),
        ("```python\nimport math\n```\nand\n```python\ndef f(x):\n    return 1\n```", "def f(x):\n    return 1\n", True),
        ("```\ndef f(x):\n    return 2\n", "def f(x):\n    return 2\n", True),  # unclosed fence
        ("    return x + 1\n\nprint(f(2))\nassert f(1) == 2\n", "    return x + 1\n", False),
        ("    return x\n```\nExplanation: ...", "    return x\n", False),
        ("def f(x):\n    return 3\n\nThis works because", "def f(x):\n    return 3\n", True),
    ],
)
def test_code_extraction(response, expected, complete):
    assert extract_program(response, "f") == (expected, complete)


def test_code_tasks_run_on_a_tiny_model_with_group_aggregates(tiny_model_dir):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4, max_length=2048)
    out = simple_evaluate(
        model=lm, tasks=["moe_code"], limit=2, log_samples=True, gen_kwargs="max_gen_toks=16", confirm_run_unsafe_code=True,
        task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir()), metadata={"release": "release_v2"}),
    )
    for task in ("moe_humaneval", "moe_mbpp", "moe_livecodebench", "moe_code"):
        for metric in ("exact_match", "pass@1", "coverage", "precision"):
            assert f"{metric},extract_answer" in out["results"][task], (task, metric)
    sample = out["samples"]["moe_humaneval"][0]
    record = sample["moe_records"][0]
    # filtered_resps: the program that was run, as lm-eval's own code tasks log it
    assert sample["filtered_resps"] == [code_task.program_for(sample["doc"], record["response"])]
    execution = record["execution"]
    assert execution["outcome"] in ("failed", "runtime_error", "compile_error") and execution["tests"] is not None
    assert sample["generated_tokens"] > 0


def _payload(text: str) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(text, protocol=4), 9)).decode()


@pytest.mark.parametrize("shape", ["deep_nesting", "empty_objects", "bare_numbers", "huge_integer", "not_a_list",
                                   "memo_opcodes", "trailing_text"])
def test_hostile_private_tests_are_refused_with_one_error_in_bounded_memory(shape):
    """An 84 KiB payload cost 26 s and 277 MiB before its refusal, and RecursionError / JSONDecodeError
    escaped the module's own error."""
    import time
    import tracemalloc

    from lm_eval_moe.scoring.code.livecodebench import LiveCodeBenchDataError

    n = 8 << 20
    encoded = {
        "deep_nesting": lambda: _payload("[" * n),
        "empty_objects": lambda: _payload("[" + "{}," * (n // 3) + "{}]"),
        "bare_numbers": lambda: _payload("[" + "0," * (n // 2) + "0]"),
        "huge_integer": lambda: _payload("[" + "9" * n + "]"),
        "not_a_list": lambda: _payload('{"input": "1"}'),
        "memo_opcodes": lambda: base64.b64encode(zlib.compress(b"\x80\x04" + b"\x94" * n + b".", 9)).decode(),
        "trailing_text": lambda: _payload('[{"input": "1", "output": "2", "testtype": "stdin"}] and more'),
    }[shape]()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(LiveCodeBenchDataError):
            decode_private_tests(encoded)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 4 * n + (16 << 20), (shape, peak)  # the decompressed text and its string, nothing built from it
    assert time.perf_counter() - start < 60, shape  # a bound a loaded machine keeps: these take well under 1 s
