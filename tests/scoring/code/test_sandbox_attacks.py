"""The code sandbox and judge against the attacks of a hostile review, one class per test: forged names, a
silent downgrade, hangs, a sample that aborts the run, crashes and wrong verdicts, two runs on one host, and
io_uring / unbounded scratch space."""

import builtins
import json
import os
import shutil
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import lm_eval_moe.scoring.code.sandbox as sandbox_module
from lm_eval_moe.scoring.code import CodeProblem, CodeRunner, Limits, SandboxUnavailable
from lm_eval_moe.tasks.code_data import humaneval, mbpp, problem_from_doc
from conftest import BENCHMARK_DATA, REPO

DATA = BENCHMARK_DATA
LIMITS = Limits(cpu_seconds=3, wall_seconds=6, memory_bytes=1 << 30, processes=64, scratch_bytes=32 << 20)
ADD = CodeProblem("add", "check_function", entry_point="add",
                  test_code="def check(candidate):\n    assert candidate(1, 2) == 3\n")
GOOD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def runner():
    runner = CodeRunner("auto", LIMITS, workers=2)
    yield runner
    runner.close()


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).open()]


HUMANEVAL = {row["task_id"]: row for row in _rows("humaneval/HumanEval.jsonl")}
MBPP = {row["task_id"]: row for row in _rows("mbpp/sanitized-mbpp.jsonl")}


def _problem(dataset: str, task_id) -> tuple[CodeProblem, str]:
    """The judge's problem and the reference program of one benchmark row."""
    if dataset == "humaneval":
        row = HUMANEVAL[task_id]
        return problem_from_doc(humaneval(row)), row["prompt"] + row["canonical_solution"]
    row = MBPP[task_id]
    return problem_from_doc(mbpp(row)), row["code"]


# ---------------------------------------------------------------- forged names

#: each program rewires a name the benchmark's check calls (a prompt helper or a builtin) so that a wrong
#: answer would pass if the check resolved that name through the candidate
FORGERIES = [
    ("humaneval", "HumanEval/32", "def poly(xs, x):\n    return 0\ndef find_zero(xs):\n    return 0.0\n"),
    ("humaneval", "HumanEval/38", "def encode_cyclic(s):\n    return s\ndef decode_cyclic(s):\n    return s\n"),
    ("humaneval", "HumanEval/50", "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s\n"),
    ("humaneval", "HumanEval/2", "def abs(x):\n    return 0\ndef truncate_number(number):\n    return 0.5\n"),
    ("humaneval", "HumanEval/4", "def abs(x):\n    return 0\ndef mean_absolute_deviation(numbers):\n    return 9.0\n"),
    ("mbpp", 111, "def set(*a):\n    return 1\ndef common_in_nested_lists(lists):\n    return [0]\n"),
    ("mbpp", 140, "def set(*a):\n    return 1\ndef extract_singly(lists):\n    return [0]\n"),
    ("mbpp", 232, "def set(*a):\n    return 1\ndef larg_nnum(items, n):\n    return [0]\n"),
]


@pytest.mark.parametrize("dataset, task_id, program", FORGERIES, ids=[f"{d}-{t}" for d, t, _ in FORGERIES])
def test_a_candidate_cannot_rewire_names_the_check_calls(runner, dataset, task_id, program):
    problem, reference = _problem(dataset, task_id)
    assert runner.run(problem, reference).outcome == "passed"
    result = runner.run(problem, program)
    assert result.outcome in ("failed", "runtime_error"), (task_id, result.outcome, result.detail)


def test_only_the_asked_functions_bind_to_the_candidate_in_every_problem():
    """Every HumanEval and MBPP problem (but the five judged inside the sandbox): the judge's namespace binds
    only the entry point (and, in MBPP, other functions of the reference solution that the asserts call) to
    the candidate; every other name the tests call (builtins, the prompt's helpers, the test's own
    definitions and imports) keeps the benchmark's meaning."""
    import builtins as python_builtins

    from lm_eval_moe.scoring.code.judge import CandidateProxy, bind_candidate, called_names, trusted_namespace

    wrong, several, trusted_calls = {}, {}, 0
    for dataset, ids in (("humaneval", HUMANEVAL), ("mbpp", MBPP)):
        for task_id in ids:
            problem, _ = _problem(dataset, task_id)
            if problem.in_sandbox:
                continue
            if problem.kind == "check_function":
                namespace = trusted_namespace((problem.trusted_code, "<prompt>"), (problem.test_code, "<check>"))
                tests = (problem.test_code,)
            else:
                namespace, tests = trusted_namespace((problem.setup_code, "<setup>")), problem.asserts
            bind_candidate(problem, namespace, channel=None, deadline=0.0)
            bound = {name for name, value in namespace.items() if isinstance(value, CandidateProxy)}
            asked = {problem.entry_point, *problem.candidate_functions}
            if bound != asked or "" in asked:
                wrong[task_id] = sorted(bound)
            if problem.candidate_functions:
                several[task_id] = sorted(asked)
            trusted_calls += any(name not in asked and (name in namespace or hasattr(python_builtins, name))
                                 for name in called_names(tests))
    assert wrong == {}
    assert trusted_calls >= 20  # the rule matters: these checks call builtins or helpers a candidate could shadow
    assert len(several) < 10, several


# ---------------------------------------------------------------- no silent downgrade


def test_an_installed_layer_that_fails_is_an_error_with_its_message(monkeypatch):
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    original = sandbox_module.Sandbox._bwrap
    monkeypatch.setattr(sandbox_module.Sandbox, "_bwrap", lambda self: [*original(self)[:-1], "--no-such-option", "--"])
    with pytest.raises(SandboxUnavailable, match="bwrap is installed but the sandbox fails with it.*no-such-option"):
        CodeRunner("auto", LIMITS, workers=1)


@pytest.fixture(scope="module")
def fallback_runner():
    """The sandbox on a machine without bubblewrap: the unshare fallback, as `auto` picks it."""
    if not shutil.which("unshare"):
        pytest.skip("util-linux unshare is not installed")
    which = shutil.which
    original = sandbox_module.shutil.which
    sandbox_module.shutil.which = lambda name: None if name == "bwrap" else which(name)
    try:
        runner = CodeRunner("auto", LIMITS, workers=2)
    finally:
        sandbox_module.shutil.which = original
    yield runner
    runner.close()


def test_an_absent_layer_is_named_in_every_verdict(fallback_runner):
    layers = fallback_runner.sandbox.layers
    assert layers.namespaces == "unshare" and "bwrap not installed" in layers.describe()
    result = fallback_runner.run(ADD, GOOD)
    assert result.outcome == "passed" and "namespaces=unshare" in result.sandbox
    assert "file system NOT isolated" in result.sandbox and result.forgeable  # it could read the expected output
    assert result.as_dict()["sandbox"] == result.sandbox


def test_the_fallback_runs_from_an_installation_its_uid_cannot_read(monkeypatch, tmp_path):
    """A checkout and venv inside a 0700 folder (``mktemp -d``, as CI makes it): the check's dropped uid cannot
    open anything there, so the fallback must not need to (the bootstrap travels on the command line)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root (the uid drop) and util-linux unshare")
    private = Path(tempfile.mkdtemp(prefix="lm_eval_moe_private_"))
    try:
        private.chmod(0o700)
        (private / "python").symlink_to(os.path.realpath(sys.executable))
        shutil.copy(sandbox_module.BOOTSTRAP, private / "bootstrap.py")
        monkeypatch.setattr(sandbox_module, "BOOTSTRAP", private / "bootstrap.py")
        monkeypatch.setattr(sandbox_module.sys, "executable", str(private / "python"))
        which = shutil.which
        monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None if name == "bwrap" else which(name))
        runner = CodeRunner("auto", LIMITS, workers=1)
        try:
            assert runner.sandbox.layers.namespaces == "unshare" and runner.sandbox.layers.uid_drop
            assert runner.run(ADD, GOOD).outcome == "passed"
            assert runner.run(ADD, GOOD.replace("a + b", "a - b")).outcome == "failed"
        finally:
            runner.close()
    finally:
        shutil.rmtree(private)


def test_no_file_of_a_sample_outlives_it(fallback_runner, runner):
    """Files a sample writes in its own directory, in /tmp, /dev/shm, and its captured output: gone after it."""
    marker = f"lm_eval_moe_leftover_{uuid.uuid4().hex}"
    places = [tempfile.gettempdir(), "/dev/shm", "."]
    program = textwrap.dedent(f"""
        import os
        for place in {places!r}:
            try:
                with open(os.path.join(place, {marker!r}), "w") as handle:
                    handle.write("x" * 1000)
            except OSError:
                pass
        print("some output of the candidate")
        def add(a, b):
            return a + b
    """)
    for each in (fallback_runner, runner):
        assert each.run(ADD, program).outcome == "passed"
    left = [str(path) for place in (tempfile.gettempdir(), "/dev/shm") for path in Path(place).glob(f"*{marker}*")]
    left += [str(path) for path in Path(tempfile.gettempdir()).glob("candidate_output_*")]
    assert left == []


def test_code_tasks_declare_unsafe_code():
    import yaml

    common = (REPO / "tasks" / "code" / "_moe_code_common.yaml").read_text()
    assert yaml.safe_load(common.replace("!function", "")).get("unsafe_code") is True


# ---------------------------------------------------------------- hangs and aborts


def test_a_candidate_that_stops_reading_cannot_block_the_judge(runner):
    """The candidate answers, then stops its own process; the judge's next request (larger than any socket
    buffer) must time out at the deadline instead of blocking for ever."""
    problem = CodeProblem("stop", "check_function", entry_point="stop",
                          test_code="def check(candidate):\n    candidate('x')\n    candidate('y' * 2**23)\n")
    program = textwrap.dedent("""
        import os, signal, sys, threading, time
        def stop(text):
            main = threading.main_thread().ident
            def watch():  # stop once the bootstrap waits for the next request: it is never read
                while True:
                    frame = sys._current_frames().get(main)
                    if frame is not None and frame.f_code.co_name == "receive":
                        os.kill(os.getpid(), signal.SIGSTOP)
                    time.sleep(0.001)
            threading.Thread(target=watch, daemon=True).start()
            return 1
    """)
    results = []
    thread = threading.Thread(target=lambda: results.append(runner.run(problem, program)))
    started = time.monotonic()
    thread.start()
    thread.join(LIMITS.wall_seconds + 20)
    assert not thread.is_alive(), "the judge blocked on its write"
    assert results[0].outcome == "timeout" and time.monotonic() - started < LIMITS.wall_seconds + 30


@pytest.mark.parametrize("garbage", [
    b"[" * 200000 + b"\n",  # nested deeper than any parser's recursion limit
    b'{"ok": ' + b'{"l": [' * 100000 + b"\n",
    b"\xff\xfe not json\n",
    b'"a string, not an object"\n',
    b'{"ok": {"i": "' + b"9" * 2_000_000 + b'"}}\n',  # a number the codec refuses to decode
    b'{"ok": {"d": [[{"l": []}, {"n": null}]]}}\n',  # an unhashable key
], ids=["deep_array", "deep_value", "binary", "not_an_object", "huge_number", "unhashable_key"])
def test_a_malformed_message_is_the_samples_verdict_not_an_abort(runner, garbage):
    program = ("import os\n"
               "def add(a, b):\n"
               f"    os.write(3, {garbage!r})\n"
               "    os._exit(0)\n")
    results = runner.run_many([(ADD, GOOD), (ADD, program), (ADD, GOOD)], progress=False)
    assert [r.outcome for r in results] == ["passed", "runtime_error", "passed"], [r.detail for r in results]


# ---------------------------------------------------------------- crashes and wrong verdicts


def test_a_correct_program_returning_a_huge_int_passes(runner):
    problem = CodeProblem("power", "check_function", entry_point="power",
                          test_code="def check(candidate):\n    assert candidate(7, 20000) == 7 ** 20000\n")
    assert (7 ** 20000).bit_length() > 4300 * 3.33  # beyond Python's default int-to-decimal limit (4,300 digits)
    result = runner.run(problem, "def power(a, b):\n    return a ** b\n")
    assert result.outcome == "passed", result.detail


def test_huge_output_is_an_output_limit_not_a_runtime_error(runner):
    small = CodeRunner("auto", Limits(cpu_seconds=5, wall_seconds=10, file_bytes=1 << 20), workers=1)
    try:
        result = small.run(ADD, "def add(a, b):\n    print('x' * (4 << 20))\n    return a + b\n")
    finally:
        small.close()
    assert result.outcome == "output_limit_exceeded", (result.outcome, result.detail)


def test_cpu_timeouts_in_the_fallback_are_timeouts_and_retried(fallback_runner):
    looping = "def add(a, b):\n    while True:\n        pass\n"
    (result,) = fallback_runner.run_many([(ADD, looping)], progress=False)
    assert result.outcome == "timeout" and result.retried, (result.outcome, result.detail)


# ---------------------------------------------------------------- two runs on one host


def test_two_runs_never_share_uids_or_cgroups_or_kill_each_others_samples():
    first = CodeRunner("auto", LIMITS, workers=2)
    second = CodeRunner("auto", LIMITS, workers=2)
    try:
        if os.geteuid() == 0:
            one = range(first.sandbox.uid_base, first.sandbox.uid_base + 2)
            two = range(second.sandbox.uid_base, second.sandbox.uid_base + 2)
            assert not set(one) & set(two)
        paths = lambda runner: {str(p) for slot in runner.sandbox.cgroups.slots.values() for p in slot.values()}  # noqa: E731
        assert not paths(first) & paths(second)
        slow = CodeProblem("slow", "check_function", entry_point="slow",
                           test_code="def check(candidate):\n    assert candidate() == 'done'\n")
        results = []
        thread = threading.Thread(target=lambda: results.append(
            first.run(slow, "import time\ndef slow():\n    time.sleep(1.5)\n    return 'done'\n")))
        thread.start()
        hostile = ("import os, signal\ndef add(a, b):\n    for pid in range(2, 32768):\n        try:\n"
                   "            if pid != os.getpid():\n                os.kill(pid, signal.SIGKILL)\n"
                   "        except OSError:\n            pass\n    return a + b\n")
        for _ in range(6):  # the other run kills everything it can and cleans up after each check, many times
            assert second.run(ADD, hostile).outcome == "passed"
        thread.join(30)
        assert results and results[0].outcome == "passed", results and results[0].detail
    finally:
        first.close()
        second.close()
    for runner in (first, second):
        assert all(not Path(p).exists() for slot in runner.sandbox.cgroups.slots.values() for p in slot.values())


# ---------------------------------------------------------------- io_uring and scratch space


def test_io_uring_is_denied(runner):
    problem = CodeProblem("uring", "check_function", entry_point="uring",
                          test_code="def check(candidate):\n    assert candidate() == -1\n")
    program = ("import ctypes\n"
               "def uring():\n"
               "    libc = ctypes.CDLL(None, use_errno=True)\n"
               "    params = ctypes.create_string_buffer(120)\n"
               "    return libc.syscall(425, 8, params)  # io_uring_setup\n")
    assert runner.run(problem, program).outcome == "passed"


def test_the_private_tmp_is_size_bounded(runner):
    if runner.sandbox.layers.namespaces != "bwrap":
        pytest.skip("the private tmpfs is bubblewrap's")
    problem = CodeProblem("fill", "check_function", entry_point="fill",
                          test_code="def check(candidate):\n    assert candidate() == 'full'\n")
    program = ("import errno\n"
               "def fill():\n"
               "    try:\n"
               "        with open('/tmp/big', 'wb') as handle:\n"
               "            for _ in range(256):\n"
               "                handle.write(b'x' * (1 << 20))\n"
               "    except OSError as error:\n"
               "        return 'full' if error.errno == errno.ENOSPC else str(error)\n"
               "    return 'wrote 256 MiB'\n")
    assert LIMITS.scratch_bytes < 256 << 20
    assert runner.run(problem, program).outcome == "passed"


def test_builtins_that_checks_call_exist():
    """The forgery table names real builtins, so the bound-name rule is what stops them."""
    assert all(hasattr(builtins, name) for name in ("abs", "set", "sum", "range", "tuple"))
