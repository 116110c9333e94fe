"""The judge: a benchmark's own checks, run OUTSIDE the sandbox against a proxy of the candidate.

The candidate runs in the sandbox behind the bootstrap; the judge (this module, in the harness
process) executes the trusted test code of the dataset (HumanEval ``check(candidate)``, MBPP asserts,
LiveCodeBench comparisons) with ``candidate`` bound to a :class:`CandidateProxy`. Every call crosses
the process boundary as plain data, so an always-equal object, a patched comparison helper, a printed
"passed", an early exit or a walk up the stack cannot touch the verdict. Only the functions the task asks
for are bound to the candidate: the entry point, and the other functions of the reference solution that
the tests call (``CodeProblem.candidate_functions``); builtins, the prompt's helpers and the test's own
definitions stay the benchmark's, so a candidate that defines ``abs``, ``set`` or a prompt helper such as
``poly`` rewires nothing. Standard-input
problems are run per test case and their stdout is compared here. Problems whose tests need
candidate-defined objects run their assertions inside the sandbox instead, and their results say
``forgeable``. Nothing the sandbox sends can raise out of :func:`judge`: every failure is the sample's
verdict.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Literal

from lm_eval_moe.scoring.code.bootstrap import MEMORY_EXIT_CODE, OUTPUT_LIMIT_EXIT_CODE, NotPlainData, decode, encode
from lm_eval_moe.scoring.code.sandbox import (
    CheckChannel, ProtocolError, ResponseTooLarge, SandboxDied, SandboxTimeout,
)

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
    trusted_code: str = ""  # the benchmark's own code the tests may use (HumanEval's prompt: helpers, imports)
    candidate_functions: tuple[str, ...] = ()  # besides the entry point, functions the tests call that the task asks for


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
    sandbox: str = ""  # the layers that judged it

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
            "sandbox": self.sandbox,
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


def _died(error: SandboxDied) -> Stop:
    """The verdict of a check whose process ended mid-request, from its wait status."""
    status = error.wait_status
    if status is None:
        return Stop("runtime_error", "the candidate's process ended (status unknown)")
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        outcome = _SIGNAL_OUTCOMES.get(-code, "runtime_error")
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return Stop(outcome, f"the candidate's process was killed by {name}")
    return Stop("runtime_error", f"the candidate's process exited early (exit code {code})")


def _answer(channel: CheckChannel, message: dict[str, Any], deadline: float) -> dict[str, Any]:
    try:
        return channel.request(message, deadline)
    except SandboxTimeout:
        raise Stop("timeout", "wall-clock deadline exceeded") from None
    except SandboxDied as error:
        raise _died(error) from None
    except ResponseTooLarge:
        raise Stop("output_limit_exceeded", "the candidate's answer exceeded the response cap") from None
    except ProtocolError as error:
        raise Stop("runtime_error", f"protocol violation: {error}") from None


def _failure(response: dict[str, Any]) -> Stop | None:
    kind = response.get("error")
    if kind is None:
        return None
    message = f"{response.get('type', '')}: {response.get('message', '')}".strip(": ")[:2000]
    if kind in ("compile_error", "memory_exceeded", "output_limit_exceeded", "runtime_error"):
        return Stop(kind, message)
    return Stop("runtime_error", f"protocol violation: {message}")


class CandidateProxy:
    """Stands in for the candidate function in the judge's test code."""

    def __init__(self, channel: CheckChannel, target: str, deadline: float) -> None:
        self.channel, self.target, self.deadline = channel, target, deadline

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            payload = {"op": "call", "target": self.target, "args": encode(args), "kwargs": encode(kwargs)}
        except NotPlainData as error:
            raise Stop("sandbox_error", f"the test passes a non-plain argument ({error}); "
                                        "this problem needs in-sandbox tests") from None
        response = _answer(self.channel, payload, self.deadline)
        if "ok" in response:
            try:
                return decode(response["ok"])
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as error:
                raise Stop("runtime_error", f"protocol violation: undecodable result ({type(error).__name__})") from None
        kind = response.get("error")
        if kind == "exception":
            raise CandidateRaised(f"{response.get('type')}: {str(response.get('message'))[:2000]}")
        if kind in ("memory_exceeded", "output_limit_exceeded"):
            raise Stop(kind, str(response.get("message"))[:2000])
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


def called_names(tests: tuple[str, ...]) -> list[str]:
    """Names the tests call directly (``f(...)``), in order of appearance."""
    called: dict[str, None] = {}
    for test in tests:
        try:
            tree = parse_trusted(test)
        except SyntaxError:
            continue
        for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)),
                           key=lambda n: (n.lineno, n.col_offset)):
            called.setdefault(node.func.id, None)
    return list(called)


def trusted_namespace(*sources: tuple[str, str]) -> dict[str, Any]:
    """The benchmark's own code (prompt helpers, test imports and definitions), run in the judge; each source
    with the file name its tracebacks show."""
    namespace: dict[str, Any] = {}
    for source, filename in sources:
        if source:
            exec(_compile_trusted(source, filename), namespace)
    return namespace


def _compile_trusted(source: str, filename: str, flags: int = 0) -> Any:
    with _AST_LOCK, warnings.catch_warnings():  # the datasets' invalid escapes ("\w") are theirs, not ours
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return compile(source, filename, "exec", flags)


def parse_trusted(source: str) -> ast.Module:
    """``ast.parse`` of benchmark code, thread-safe and quiet about the dataset's own style warnings."""
    return _compile_trusted(source, "<unknown>", ast.PyCF_ONLY_AST)


def bind_candidate(problem: CodeProblem, namespace: dict[str, Any], channel: CheckChannel, deadline: float) -> None:
    """Bind to the candidate only what the task asks it to write: the entry point and the problem's other
    candidate functions. Every other name keeps its trusted meaning."""
    for name in {problem.entry_point, *problem.candidate_functions} - {""}:
        namespace[name] = CandidateProxy(channel, name, deadline)


MAX_TEST_INT_DIGITS = 1_000_000  # digits of one integer in a benchmark's test data


def _test_int(digits: str) -> int:
    """An integer of the benchmark's test data, whatever its length: ``int()`` refuses more than 4,300 digits
    (Python's guard against quadratic conversion), and LiveCodeBench expects such answers."""
    if len(digits) <= 4000:
        return int(digits)
    if len(digits) > MAX_TEST_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits in the test data")
    with localcontext() as context:
        context.prec = len(digits) + 1
        return int(Decimal(digits))


def load_test_value(text: str) -> Any:
    """A JSON value of the benchmark's own test data (LiveCodeBench's inputs and outputs), big integers
    included. Malformed data is this sample's ``sandbox_error`` with its reason, never an exception."""
    try:
        return json.loads(text, parse_int=_test_int)
    except (ValueError, RecursionError, TypeError) as error:
        raise Stop("sandbox_error", f"the benchmark's test data is not readable ({type(error).__name__}: "
                                    f"{str(error)[:200]})") from None


def short_repr(value: Any, limit: int = 100) -> str:
    """``repr`` cut to ``limit`` characters, for any value: an integer of more than 4,300 digits (which
    ``repr`` refuses) or a structure nested too deep is described instead of raising."""
    try:
        text = repr(value)
    except (ValueError, RecursionError, MemoryError):
        text = f"<an int of {value.bit_length()} bits" if isinstance(value, int) else f"<a {type(value).__name__}"
        text += ", too large to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def judge(problem: CodeProblem, program: str, channel: CheckChannel, wall_seconds: float) -> ExecutionResult:
    """Load ``program`` into the sandboxed check behind ``channel`` and run the problem's tests against it.
    Never raises: whatever the sandbox sends or does becomes this sample's verdict."""
    start = time.monotonic()
    deadline = start + wall_seconds
    tests: list[TestDetail] = []
    try:
        try:
            ready = channel.receive(deadline)
        except (SandboxTimeout, SandboxDied, ResponseTooLarge, ProtocolError) as error:
            raise Stop("sandbox_error", f"the check did not start ({type(error).__name__}: {error})") from None
        if not ready.get("ready"):
            raise Stop("sandbox_error", f"the check answered {str(ready)[:200]} instead of ready")
        loaded = _answer(channel, {
            "op": "load", "source": program, "preamble": problem.preamble,
            "mode": "stdio" if problem.kind == "stdio_io" else "function",
            "recursion_limit": problem.recursion_limit, "int_max_str_digits": problem.int_max_str_digits,
        }, deadline)
        failure = _failure(loaded)
        if failure is not None:
            raise failure
        callables = loaded.get("callables")
        callables = {name for name in callables if isinstance(name, str)} if isinstance(callables, list) else set()
        outcome = _run_tests(problem, channel, callables, deadline, tests)
        detail = next((t.message for t in tests if not t.passed), "")
    except Stop as stop:
        outcome, detail = stop.outcome, stop.detail
    except Exception as error:  # noqa: BLE001 - a bug of ours must not end the run: this sample's verdict
        outcome, detail = "sandbox_error", f"judge failure: {type(error).__name__}: {str(error)[:500]}"
    return ExecutionResult(outcome, tests, detail, problem.in_sandbox, time.monotonic() - start)


def _run_tests(problem: CodeProblem, channel: CheckChannel, callables: set[str], deadline: float,
               tests: list[TestDetail]) -> str:
    if problem.in_sandbox:
        response = _answer(channel, {"op": "run_asserts", "tests": [problem.setup_code, *problem.asserts]}, deadline)
        if not isinstance(response.get("ok"), list):
            raise _failure(response) or Stop("runtime_error", "protocol violation")
        for test, result in zip(problem.asserts, response["ok"][1:]):
            ok = isinstance(result, dict) and result.get("passed") is True
            message = "" if ok or not isinstance(result, dict) else str(result.get("message", ""))[:300]
            tests.append(TestDetail(test[:200], ok, message))
        return "passed" if len(tests) == len(problem.asserts) and all(t.passed for t in tests) else "failed"
    if problem.kind == "check_function":
        if problem.entry_point not in callables:
            raise Stop("runtime_error", f"the program defines no function {problem.entry_point!r}")
        namespace = trusted_namespace((problem.trusted_code, "<prompt>"), (problem.test_code, "<check>"))
        bind_candidate(problem, namespace, channel, deadline)
        try:
            namespace["check"](namespace[problem.entry_point])
            tests.append(TestDetail("check", True))
        except CandidateRaised as error:
            tests.append(TestDetail("check", False, f"the candidate raised {error}"))
            return "runtime_error"
        except Exception as error:  # noqa: BLE001 - a failed assertion or comparison in the test
            tests.append(TestDetail("check", False, _assert_line(error, problem.test_code) or type(error).__name__))
        return "passed" if tests[-1].passed else "failed"
    if problem.kind == "assert_list":
        namespace = trusted_namespace((problem.setup_code, "<setup>"))
        bind_candidate(problem, namespace, channel, deadline)
        first_failure = "passed"
        for test in problem.asserts:
            try:
                exec(_compile_trusted(test, "<test>"), namespace)
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
        proxy = CandidateProxy(channel, target, deadline)
        for index, (given, expected) in enumerate(problem.io_tests):
            args = [load_test_value(line) for line in given.split("\n") if line.strip()]
            try:
                produced = proxy(*args)
            except CandidateRaised as error:
                tests.append(TestDetail(f"test {index}", False, f"the candidate raised {error}"))
                return "runtime_error"
            if isinstance(produced, tuple):
                produced = list(produced)
            ok = produced == load_test_value(expected)
            tests.append(TestDetail(f"test {index}", ok,
                                    "" if ok else f"expected {expected[:100]!r}, got {short_repr(produced)}"))
            if not ok:
                return "failed"
        return "passed"
    for index, (given, expected) in enumerate(problem.io_tests):  # stdio_io
        response = _answer(channel, {"op": "run_stdio", "stdin": given, "output_cap": 16 << 20}, deadline)
        if "ok" not in response or not isinstance(response["ok"], dict):
            raise _failure(response) or Stop("runtime_error", "protocol violation")
        run = response["ok"]
        if run.get("truncated"):
            raise Stop("output_limit_exceeded", f"test {index}: output exceeded 16 MiB")
        if run.get("exit_code") != 0:
            code = run.get("exit_code")
            outcome = _SIGNAL_OUTCOMES.get(-code, "runtime_error") if isinstance(code, int) and code < 0 else "runtime_error"
            if code == MEMORY_EXIT_CODE:
                outcome = "memory_exceeded"
            elif code == OUTPUT_LIMIT_EXIT_CODE:
                outcome = "output_limit_exceeded"
            tests.append(TestDetail(f"test {index}", False, f"exit code {code}"))
            return outcome
        ok = compare_stdout(str(run.get("stdout", "")), expected)
        tests.append(TestDetail(f"test {index}", ok, "" if ok else f"wrong output for test {index}"))
        if not ok:
            return "failed"
    return "passed"
