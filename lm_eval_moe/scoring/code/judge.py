"""The judge: a benchmark's own checks, run OUTSIDE the sandbox against a proxy of the candidate.

The candidate runs in the sandbox behind the bootstrap; the judge (this module, in the harness
process) executes the trusted test code of the dataset (HumanEval ``check(candidate)``, MBPP asserts,
LiveCodeBench comparisons) with ``candidate`` bound to a :class:`CandidateProxy`. Every call crosses
the process boundary as plain data, so an always-equal object, a patched comparison helper, a printed
"passed", an early exit or a walk up the stack cannot touch the verdict. Standard-input problems are
run per test case and their stdout is compared here. Problems whose tests need candidate-defined
objects run their assertions inside the sandbox instead, and their results say ``forgeable``.
"""

from __future__ import annotations

import ast
import json
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from lm_eval_moe.scoring.code.bootstrap import MEMORY_EXIT_CODE, NotPlainData, decode, encode
from lm_eval_moe.scoring.code.sandbox import ResponseTooLarge, SandboxDied, SandboxProcess, SandboxTimeout

OUTCOMES = (
    "passed", "failed", "timeout", "runtime_error", "compile_error", "memory_exceeded", "output_limit_exceeded",
    "sandbox_error",
)
ProblemKind = Literal["check_function", "assert_list", "functional_io", "stdio_io"]


@dataclass(frozen=True)
class CodeProblem:
    """What the judge needs of one benchmark problem."""

    task_id: str
    kind: ProblemKind
    entry_point: str = ""  # HumanEval function / LiveCodeBench method name
    test_code: str = ""  # HumanEval: defines check(candidate)
    asserts: tuple[str, ...] = ()  # MBPP
    setup_code: str = ""  # MBPP test_imports
    io_tests: tuple[tuple[str, str], ...] = ()  # LiveCodeBench (input, expected output)
    preamble: str = ""  # prepended to the candidate program (LiveCodeBench's common imports)
    recursion_limit: int | None = None
    int_max_str_digits: int | None = None
    in_sandbox: bool = False  # the tests need candidate-defined objects: forgeable fallback


@dataclass
class TestDetail:
    name: str
    passed: bool
    message: str = ""


@dataclass
class ExecutionResult:
    outcome: str
    tests: list[TestDetail] = field(default_factory=list)
    detail: str = ""
    forgeable: bool = False
    seconds: float = 0.0
    retried: bool = False

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "detail": self.detail,
            "forgeable": self.forgeable,
            "seconds": round(self.seconds, 3),
            "retried": self.retried,
            "tests": [{"name": t.name, "passed": t.passed, "message": t.message} for t in self.tests],
        }


class CandidateRaised(Exception):
    """The candidate function raised (test code may expect that, so this is an ordinary Exception)."""


class Stop(BaseException):
    """Ends the judging of a sample (timeout, crash, memory, protocol): a BaseException so that test
    code catching ``Exception`` cannot swallow it."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


_SIGNAL_OUTCOMES = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output_limit_exceeded"}


def _signal_of(code: int | None) -> int | None:
    """The signal that ended a process: negative codes from Popen, 128 + N from bubblewrap's init."""
    if code is None:
        return None
    if code < 0:
        return -code
    if 128 < code < 128 + 65:
        return code - 128
    return None


def _died(error: SandboxDied) -> Stop:
    number = _signal_of(error.exit_code)
    if number is not None:
        outcome = _SIGNAL_OUTCOMES.get(number, "runtime_error")
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return Stop(outcome, f"the candidate's process was killed by {name}")
    return Stop("runtime_error", f"the candidate's process exited early (exit code {error.exit_code})")


def _answer(process: SandboxProcess, message: dict[str, Any], deadline: float) -> dict[str, Any]:
    try:
        return process.request(message, deadline)
    except SandboxTimeout:
        raise Stop("timeout", "wall-clock deadline exceeded") from None
    except SandboxDied as error:
        raise _died(error) from None
    except ResponseTooLarge:
        raise Stop("output_limit_exceeded", "the candidate's answer exceeded the response cap") from None


def _failure(response: dict[str, Any]) -> Stop | None:
    kind = response.get("error")
    if kind is None:
        return None
    message = f"{response.get('type', '')}: {response.get('message', '')}".strip(": ")
    if kind in ("compile_error", "memory_exceeded"):
        return Stop(kind, message)
    if kind == "runtime_error":
        outcome = "output_limit_exceeded" if "File too large" in message else "runtime_error"
        return Stop(outcome, message)
    return Stop("runtime_error", f"protocol violation: {message}")


class CandidateProxy:
    """Stands in for the candidate function in the judge's test code."""

    def __init__(self, process: SandboxProcess, target: str, deadline: float) -> None:
        self.process, self.target, self.deadline = process, target, deadline

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            payload = {"op": "call", "target": self.target, "args": encode(args), "kwargs": encode(kwargs)}
        except NotPlainData as error:
            raise Stop("sandbox_error", f"the test passes a non-plain argument ({error}); "
                                        "this problem needs in-sandbox tests") from None
        response = _answer(self.process, payload, self.deadline)
        if "ok" in response:
            try:
                return decode(response["ok"])
            except (ValueError, TypeError, KeyError, OverflowError) as error:
                raise Stop("runtime_error", f"protocol violation: undecodable result ({error})") from None
        kind = response.get("error")
        if kind == "exception":
            raise CandidateRaised(f"{response.get('type')}: {response.get('message')}")
        if kind == "memory_exceeded":
            raise Stop("memory_exceeded", str(response.get("message")))
        if kind == "not_plain":
            raise Stop("runtime_error", f"the candidate returned no plain data: {response.get('message')}")
        raise _failure(response) or Stop("runtime_error", "protocol violation")


def _assert_line(error: BaseException, source: str) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename in ("<test>", "<check>")]
    if frames and frames[-1].lineno:
        lines = source.splitlines()
        if 0 < frames[-1].lineno <= len(lines):
            return lines[frames[-1].lineno - 1].strip()[:300]
    return str(error)[:300]


#: CPython 3.11 before 3.11.8 (gh-106905) corrupts the AST constructor's recursion counter when several
#: threads parse at once ("SystemError: AST constructor recursion depth mismatch", seen once in a full run)
_AST_LOCK = threading.Lock()


def _referenced_names(tests: tuple[str, ...]) -> set[str]:
    names: set[str] = set()
    for test in tests:
        try:
            with _AST_LOCK:
                tree = ast.parse(test)
        except SyntaxError:
            continue
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names


def compare_stdout(produced: str, expected: str) -> bool:
    """LiveCodeBench's stdio rule: strip, compare line by line; a mismatched line still matches when
    its whitespace-separated tokens are equal as Decimals."""
    produced_lines = [line.strip() for line in produced.strip().splitlines()]
    expected_lines = [line.strip() for line in expected.strip().splitlines()]
    if len(produced_lines) != len(expected_lines):
        return False
    for got, want in zip(produced_lines, expected_lines):
        if got == want:
            continue
        got_tokens, want_tokens = got.split(), want.split()
        if len(got_tokens) != len(want_tokens):
            return False
        try:
            if any(Decimal(a) != Decimal(b) for a, b in zip(got_tokens, want_tokens)):
                return False
        except InvalidOperation:
            return False
    return True


def judge(problem: CodeProblem, program: str, process: SandboxProcess, wall_seconds: float) -> ExecutionResult:
    """Load ``program`` into the sandboxed ``process`` and run the problem's tests against it."""
    start = time.monotonic()
    deadline = start + wall_seconds
    tests: list[TestDetail] = []
    forgeable = problem.in_sandbox
    try:
        loaded = _answer(process, {
            "op": "load", "source": program, "preamble": problem.preamble,
            "mode": "stdio" if problem.kind == "stdio_io" else "function",
            "recursion_limit": problem.recursion_limit, "int_max_str_digits": problem.int_max_str_digits,
        }, deadline)
        failure = _failure(loaded)
        if failure is not None:
            raise failure
        callables = set(loaded.get("callables") or [])
        outcome = _run_tests(problem, process, callables, deadline, tests)
        detail = next((t.message for t in tests if not t.passed), "")
    except Stop as stop:
        outcome, detail = stop.outcome, stop.detail
    return ExecutionResult(outcome, tests, detail, forgeable, time.monotonic() - start)


def _run_tests(problem: CodeProblem, process: SandboxProcess, callables: set[str], deadline: float,
               tests: list[TestDetail]) -> str:
    if problem.in_sandbox:
        response = _answer(process, {"op": "run_asserts", "tests": [problem.setup_code, *problem.asserts]}, deadline)
        if "ok" not in response:
            raise _failure(response) or Stop("runtime_error", "protocol violation")
        results = response["ok"][1:] if isinstance(response["ok"], list) else []
        for test, result in zip(problem.asserts, results):
            ok = isinstance(result, dict) and result.get("passed") is True
            tests.append(TestDetail(test[:200], ok, "" if ok else str(result.get("message", ""))[:300]))
        return "passed" if len(tests) == len(problem.asserts) and all(t.passed for t in tests) else "failed"
    if problem.kind == "check_function":
        if problem.entry_point not in callables:
            raise Stop("runtime_error", f"the program defines no function {problem.entry_point!r}")
        namespace: dict[str, Any] = {}
        exec(compile(problem.test_code, "<check>", "exec"), namespace)
        for name in _referenced_names((problem.test_code,)) & callables:  # helpers the test calls (poly, ...)
            namespace.setdefault(name, CandidateProxy(process, name, deadline))
        try:
            namespace["check"](CandidateProxy(process, problem.entry_point, deadline))
            tests.append(TestDetail("check", True))
        except CandidateRaised as error:
            tests.append(TestDetail("check", False, f"the candidate raised {error}"))
            return "runtime_error"
        except Exception as error:  # noqa: BLE001 - a failed assertion or comparison in the test
            tests.append(TestDetail("check", False, _assert_line(error, problem.test_code) or type(error).__name__))
        return "passed" if tests[-1].passed else "failed"
    if problem.kind == "assert_list":
        namespace = {}
        exec(compile(problem.setup_code, "<setup>", "exec"), namespace)
        for name in _referenced_names(problem.asserts) & callables:
            namespace[name] = CandidateProxy(process, name, deadline)
        first_failure = "passed"
        for test in problem.asserts:
            try:
                exec(compile(test, "<test>", "exec"), namespace)
                tests.append(TestDetail(test[:200], True))
            except CandidateRaised as error:
                tests.append(TestDetail(test[:200], False, f"the candidate raised {error}"))
                first_failure = "runtime_error" if first_failure == "passed" else first_failure
            except Exception as error:  # noqa: BLE001
                tests.append(TestDetail(test[:200], False, _assert_line(error, test) or type(error).__name__))
                first_failure = "failed" if first_failure == "passed" else first_failure
        return first_failure
    if problem.kind == "functional_io":
        target = f"Solution.{problem.entry_point}" if "Solution" in callables else problem.entry_point
        proxy = CandidateProxy(process, target, deadline)
        for index, (given, expected) in enumerate(problem.io_tests):
            args = [json.loads(line) for line in given.split("\n") if line.strip()]
            try:
                produced = proxy(*args)
            except CandidateRaised as error:
                tests.append(TestDetail(f"test {index}", False, f"the candidate raised {error}"))
                return "runtime_error"
            if isinstance(produced, tuple):
                produced = list(produced)
            ok = produced == json.loads(expected)
            tests.append(TestDetail(f"test {index}", ok, "" if ok else f"expected {expected[:100]!r}, got {str(produced)[:100]!r}"))
            if not ok:
                return "failed"
        return "passed"
    for index, (given, expected) in enumerate(problem.io_tests):  # stdio_io
        response = _answer(process, {"op": "run_stdio", "stdin": given, "output_cap": 16 << 20}, deadline)
        if "ok" not in response or not isinstance(response["ok"], dict):
            raise _failure(response) or Stop("runtime_error", "protocol violation")
        run = response["ok"]
        if run.get("truncated"):
            raise Stop("output_limit_exceeded", f"test {index}: output exceeded 16 MiB")
        if run.get("exit_code") != 0:
            code = run.get("exit_code")
            number = _signal_of(code) if isinstance(code, int) else None
            outcome = _SIGNAL_OUTCOMES.get(number, "runtime_error") if number else "runtime_error"
            if code == MEMORY_EXIT_CODE:
                outcome = "memory_exceeded"
            tests.append(TestDetail(f"test {index}", False, f"exit code {code}"))
            return outcome
        ok = compare_stdout(str(run.get("stdout", "")), expected)
        tests.append(TestDetail(f"test {index}", ok, "" if ok else f"wrong output for test {index}"))
        if not ok:
            return "failed"
    return "passed"
