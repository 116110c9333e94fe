"""What real runs hit: outputs that are long or degenerate, programs that flood the judge, checks that leave
state behind, hosts without namespaces, and data the judge must read. One class per test; each of these
failed on the sandbox before it (a run aborted, a verdict after 150 s, state read by the next check, model
code as root, an interpreter path refused, bubblewrap's error text lost)."""

import ctypes
import json
import os
import shutil
import sys
import textwrap
import time

import pytest

import lm_eval_moe.scoring.code.sandbox as sandbox_module
from lm_eval_moe.scoring.code import CodeProblem, CodeRunner, Limits, SandboxUnavailable
from lm_eval_moe.scoring.code.judge import short_repr

LIMITS = Limits(cpu_seconds=3, wall_seconds=6, memory_bytes=1 << 30, processes=64, scratch_bytes=32 << 20)
#: the verdict of a check comes at most this long after its wall-clock limit (docs/SANDBOX.md: the end of the
#: check plus the parse of one message of at most response_bytes); generous, for a loaded machine: the faults
#: these tests catch took minutes
MARGIN_S = 30.0
ADD = CodeProblem("add", "check_function", entry_point="add",
                  test_code="def check(candidate):\n    assert candidate(1, 2) == 3\n")
GOOD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def runner():
    runner = CodeRunner("auto", LIMITS, workers=2)
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def one_slot():
    """One worker slot: consecutive checks share its zygote, so what one leaves, the next would see."""
    runner = CodeRunner("auto", LIMITS, workers=1)
    yield runner
    runner.close()


# ---------------------------------------------------------------- one sample never aborts a run


BIG = 10 ** 5000


@pytest.mark.parametrize("program, outcome", [
    ("class Solution:\n    def power(self, n):\n        return [10 ** n]\n", "passed"),
    ("class Solution:\n    def power(self, n):\n        return [10 ** n + 1]\n", "failed"),
    ("class Solution:\n    def power(self, n):\n        return 10 ** n\n", "failed"),
])
def test_a_functional_answer_with_a_huge_integer_gets_its_own_verdict(runner, program, outcome):
    """LiveCodeBench expects such answers; the judge failed formatting them (str() of an int over 4,300 digits)
    and the run stopped."""
    problem = CodeProblem("big", "functional_io", entry_point="power", io_tests=(("5000", "[1" + "0" * 5000 + "]"),),
                          int_max_str_digits=0)
    result = runner.run(problem, program)
    assert result.outcome == outcome, result.detail
    assert short_repr(BIG).startswith("<an int of 16610 bits")


def test_a_sample_the_sandbox_cannot_judge_is_its_verdict_not_an_abort(runner):
    from lm_eval_moe.tasks.code import ExecuteCode, process_code

    broken = CodeProblem("broken", "functional_io", entry_point="f", io_tests=(("[1", "2"),))  # unreadable test data
    docs = [{"moe_problem": json.dumps({**CodeProblem("broken", "functional_io").__dict__, "entry_point": "f",
                                        "io_tests": [list(test) for test in broken.io_tests]}),
             "moe_prompt_code": ""}]
    [filtered] = ExecuteCode().apply([["def f(x):\n    return 2\n"]], docs)
    execution = filtered.records[0]["execution"]
    assert execution["outcome"] == "sandbox_error" and "test data is not readable" in execution["detail"]
    metrics = process_code(docs[0], [filtered])
    assert metrics["verdicts_sandbox_error"] == 1.0 and metrics["verdicts_passed"] == 0.0
    assert metrics["exact_match"] == 0.0


# ---------------------------------------------------------------- the deadline holds whatever arrives


def _timed(runner, problem, program):
    start = time.monotonic()
    result = runner.run(problem, program)
    return result, time.monotonic() - start


def test_data_that_keeps_arriving_never_extends_the_deadline(runner):
    """A program writing into the judge's channel a byte at a time, never a newline: before, every byte
    restarted the wait."""
    program = textwrap.dedent("""
        import os, time
        def add(a, b):
            while True:
                os.write(3, b"x")
                time.sleep(0.0005)
    """)
    result, seconds = _timed(runner, ADD, program)
    assert result.outcome == "timeout" and seconds < LIMITS.wall_seconds + MARGIN_S, (result.outcome, seconds)


def test_a_program_streaming_megabytes_without_a_newline_ends_in_time(runner):
    stdio = CodeProblem("flood", "stdio_io", io_tests=(("", "1\n"),))
    program = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(60):\n    sys.stdout.write(chunk)\n"
    result, seconds = _timed(runner, stdio, program)
    assert result.outcome == "output_limit_exceeded" and seconds < LIMITS.wall_seconds + MARGIN_S, (result, seconds)


def test_a_flood_into_the_judges_channel_ends_at_the_deadline():
    """The program writes into the judge's channel as fast as it can, never a newline, under a response cap far
    above what arrives before the deadline: before, the deadline was looked at only when no data was waiting
    (never, here), and each chunk rescanned everything received (quadratic): no verdict for minutes."""
    flood = CodeRunner("auto", Limits(cpu_seconds=3, wall_seconds=6, memory_bytes=1 << 30, processes=64,
                                      scratch_bytes=32 << 20, response_bytes=256 << 20), workers=1)
    program = textwrap.dedent("""
        import os
        def add(a, b):
            chunk = b"y" * (1 << 20)
            while True:
                os.write(3, chunk)
    """)
    try:
        result, seconds = _timed(flood, ADD, program)
    finally:
        flood.close()
    assert result.outcome in ("timeout", "output_limit_exceeded"), result.detail
    assert seconds < LIMITS.wall_seconds + MARGIN_S, seconds


def test_a_30_mib_answer_is_judged_within_the_limit(runner):
    program = "def add(a, b):\n    return 'z' * (30 << 20)\n"
    result, seconds = _timed(runner, ADD, program)
    assert result.outcome == "failed" and seconds < LIMITS.wall_seconds + MARGIN_S, (result.outcome, seconds)


# ---------------------------------------------------------------- every check starts from an empty world


LEAVE_STATE = textwrap.dedent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    rt = ctypes.CDLL("librt.so.1", use_errno=True)

    class IpcPerm(ctypes.Structure):
        _fields_ = [("key", ctypes.c_int), ("uid", ctypes.c_uint), ("gid", ctypes.c_uint), ("cuid", ctypes.c_uint),
                    ("cgid", ctypes.c_uint), ("mode", ctypes.c_ushort), ("pad1", ctypes.c_ushort),
                    ("seq", ctypes.c_ushort), ("pad2", ctypes.c_ushort), ("unused1", ctypes.c_ulong),
                    ("unused2", ctypes.c_ulong)]

    class ShmidDs(ctypes.Structure):
        _fields_ = [("perm", IpcPerm), ("segsz", ctypes.c_size_t), ("atime", ctypes.c_long),
                    ("dtime", ctypes.c_long), ("ctime", ctypes.c_long), ("cpid", ctypes.c_int),
                    ("lpid", ctypes.c_int), ("nattch", ctypes.c_ulong), ("unused4", ctypes.c_ulong),
                    ("unused5", ctypes.c_ulong)]

    def add(a, b):
        segment = libc.shmget(0x4C4D45, 4096, 0o1666)  # IPC_CREAT | 0666
        assert segment >= 0, ctypes.get_errno()
        info = ShmidDs()
        assert libc.shmctl(segment, 2, ctypes.byref(info)) == 0  # IPC_STAT
        info.perm.uid = info.perm.uid + 1  # give it away: its owner is no longer the check's uid
        libc.shmctl(segment, 1, ctypes.byref(info))  # IPC_SET
        queue = rt.mq_open(b"/lm_eval_moe_left", os.O_CREAT | os.O_RDWR, 0o600, None)
        assert queue >= 0, ctypes.get_errno()
        top = os.open(".", os.O_RDONLY)
        for _ in range(600):  # a chain of directories far longer than PATH_MAX (4096)
            os.mkdir("d" * 40)
            os.chdir("d" * 40)
        with open("filler", "wb") as handle:
            handle.write(b"0" * (20 << 20))  # most of the 32 MiB scratch: ENOSPC for the next check if it stays
        os.fchdir(top)
        return a + b
""")

FIND_STATE = textwrap.dedent("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    rt = ctypes.CDLL("librt.so.1", use_errno=True)

    def add(a, b):
        left = []
        if libc.shmget(0x4C4D45, 0, 0) >= 0:
            left.append("shared memory")
        if rt.mq_open(b"/lm_eval_moe_left", os.O_RDWR, 0, None) >= 0:
            left.append("message queue")
        for place in ("/tmp", "/dev/shm", os.getcwd(), os.path.dirname(os.getcwd())):
            try:
                left += [os.path.join(place, name) for name in os.listdir(place) if name.startswith("ddd")]
            except OSError:
                pass
        with open("room", "wb") as handle:
            handle.write(b"1" * (24 << 20))  # fits only in an emptied scratch
        return a + b if not left else str(left)
""")


def test_nothing_a_check_leaves_reaches_the_next_one(one_slot):
    """A SysV segment given to another owner, a POSIX message queue and a directory chain deeper than
    PATH_MAX (holding 20 MiB) all survived into the next check before."""
    assert one_slot.run(ADD, LEAVE_STATE).outcome == "passed"
    result = one_slot.run(ADD, FIND_STATE)
    assert result.outcome == "passed", result.detail
    assert one_slot.run(ADD, GOOD).outcome == "passed"


# ---------------------------------------------------------------- no namespaces: refused, or unprivileged


@pytest.fixture
def no_namespace_tools(monkeypatch):
    which = shutil.which
    monkeypatch.setattr(sandbox_module.shutil, "which",
                        lambda name: None if name in ("bwrap", "unshare") else which(name))


def test_without_namespaces_code_is_refused_unless_the_user_opts_in(no_namespace_tools):
    with pytest.raises(SandboxUnavailable, match="LM_EVAL_MOE_SANDBOX=allow_no_namespaces"):
        CodeRunner("auto", LIMITS, workers=1)


def _root_ipc_segment() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.shmget(0, 4096, 0o1600)  # IPC_PRIVATE, owned by root


def test_the_opt_in_runs_as_an_unprivileged_uid_and_touches_nothing_of_the_host(no_namespace_tools, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the uid drop is what is tested: needs root")
    libc = ctypes.CDLL(None, use_errno=True)
    segment = _root_ipc_segment()
    owned = tmp_path / "root_owned.txt"
    owned.write_text("root's")
    owned.chmod(0o644)
    tmp_path.chmod(0o755)
    runner = CodeRunner("allow_no_namespaces", LIMITS, workers=1)
    try:
        layers = runner.sandbox.layers
        assert layers.namespaces == "none" and layers.uid_drop and "opted in" in layers.describe()
        probe = CodeProblem("probe", "check_function", entry_point="probe",
                            test_code="def check(candidate):\n    assert candidate() == [False, False, True]\n")
        program = textwrap.dedent(f"""
            import os
            def probe():
                def can(action):
                    try:
                        action()
                        return True
                    except OSError:
                        return False
                return [can(lambda: open("/etc/shadow").read()),
                        can(lambda: open({str(owned)!r}, "w").write("model's")),
                        os.getuid() != 0]
        """)
        result = runner.run(probe, program)
        assert result.outcome == "passed" and result.forgeable and "opted in" in result.sandbox, result.detail
        assert runner.run(ADD, GOOD).outcome == "passed"
    finally:
        runner.close()
        still_there = libc.shmctl(segment, 2, ctypes.byref(ctypes.create_string_buffer(128))) == 0  # IPC_STAT
        libc.shmctl(segment, 0, None)
    assert still_there, "a check's cleanup removed the host's own IPC object"
    assert owned.read_text() == "root's"


# ---------------------------------------------------------------- starting the sandbox


def test_an_interpreter_path_with_dot_dot_is_resolved(monkeypatch, tmp_path):
    """Started as ``../venv/bin/python``: bubblewrap executes the path as given, from ``/``, where the folder
    before ``..`` does not exist."""
    detour = tmp_path / "not_in_the_sandbox"
    detour.mkdir()
    dotted = os.path.join(str(detour), "..", os.path.relpath(sys.executable, str(tmp_path)))
    assert ".." in dotted and os.path.samefile(dotted, sys.executable)
    monkeypatch.setattr(sandbox_module.sys, "executable", dotted)
    runner = CodeRunner("auto", LIMITS, workers=1)
    try:
        assert runner.run(ADD, GOOD).outcome == "passed"
    finally:
        runner.close()


def test_a_layer_that_fails_always_reports_its_own_error_text(monkeypatch):
    """bubblewrap's message was lost about half the time (read before the process had ended)."""
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    original = sandbox_module.Sandbox._bwrap
    monkeypatch.setattr(sandbox_module.Sandbox, "_bwrap", lambda self: [*original(self)[:-1], "--no-such-option", "--"])
    for _ in range(20):
        with pytest.raises(SandboxUnavailable, match="bwrap is installed but the sandbox fails.*no-such-option"):
            CodeRunner("auto", LIMITS, workers=1)
