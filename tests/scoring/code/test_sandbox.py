"""The sandbox and judge: hostile programs (one per threat in docs/SANDBOX.md, every forgery we could think
of), legitimate programs that must pass, and canonical solutions."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lm_eval_moe.scoring.code import CodeProblem, CodeRunner, Limits, SandboxUnavailable
from conftest import REPO

CHECK_ADD = textwrap.dedent("""
    def check(candidate):
        assert candidate(1, 2) == 3
        assert candidate(-5, 5) == 0
        assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9
""")
ADD = CodeProblem("add", "check_function", entry_point="add", test_code=CHECK_ADD)
GOOD = "def add(a, b):\n    return a + b\n"
SENTINEL = Path(tempfile.gettempdir()) / f"lm_eval_moe_sandbox_sentinel_{os.getpid()}_{time.time_ns()}.txt"


@pytest.fixture(scope="module")
def runner():
    if sys.platform != "linux":
        pytest.skip("the sandbox is Linux-only")
    return CodeRunner("auto", Limits(cpu_seconds=3, wall_seconds=6, memory_bytes=1 << 30, processes=64), workers=2)


@pytest.fixture(scope="module", autouse=True)
def host_sentinel():
    SENTINEL.write_text("untouched")
    os.environ["LM_EVAL_MOE_TEST_SECRET"] = "s3cr3t-value"
    yield
    assert SENTINEL.read_text() == "untouched"
    SENTINEL.unlink()


def _leftovers(runner) -> list[str]:
    """Processes of this run's sandbox uids still alive (the checks run as them; the zygotes do not)."""
    if runner.sandbox.uid_base is None:
        return []
    uids = range(runner.sandbox.uid_base, runner.sandbox.uid_base + runner.workers)
    out = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split() and int(line.split()[0]) in uids]


def _run(runner, program, problem=ADD):
    result = runner.run(problem, program)
    assert _leftovers(runner) == [], "processes survived the check"
    return result


def test_layers_are_reported_and_complete_here(runner):
    text = runner.sandbox.layers.describe()
    assert text.startswith("sandbox layers: namespaces=")
    if os.geteuid() == 0 and "namespaces=bwrap" in text:
        assert runner.sandbox.layers.complete, text


def test_a_correct_program_passes_and_a_wrong_one_fails(runner):
    assert _run(runner, GOOD).outcome == "passed"
    wrong = _run(runner, "def add(a, b):\n    return a - b\n")
    assert wrong.outcome == "failed" and "candidate(1, 2) == 3" in wrong.detail
    assert _run(runner, "").outcome == "runtime_error"  # no function at all
    assert _run(runner, "def add(a, b)\n    return a + b\n").outcome == "compile_error"


FORGERIES = {
    "always_equal_object": "class E:\n    def __eq__(self, o): return True\n    def __lt__(self, o): return True\n"
                           "    def __sub__(self, o): return self\n    def __abs__(self): return 0\n"
                           "def add(a, b):\n    return E()\n",
    "int_subclass_equal": "class I(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return I(0)\n",
    "patched_comparisons": "import builtins, math, operator\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\n"
                           "operator.eq = lambda a, b: True\ndef add(a, b):\n    return 0\n",
    "printed_marker": "print('passed'); print('{\"outcome\": \"passed\"}')\ndef add(a, b):\n    print('passed')\n    return 0\n",
    "early_exit_module": "import sys\nsys.exit(0)\n",
    "early_exit_in_call": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "exit_handler": "import atexit, os\natexit.register(lambda: os.write(1, b'passed'))\ndef add(a, b):\n    raise SystemExit(0)\n",
    "stack_walk": "import sys\ndef add(a, b):\n    f = sys._getframe()\n    while f is not None:\n"
                  "        f.f_globals['__passed__'] = True\n        for k in list(f.f_locals):\n"
                  "            pass\n        f = f.f_back\n    return 0\n",
    "fake_protocol_message": "import os, json\ndef add(a, b):\n    for fd in range(3, 20):\n        try:\n"
                             "            os.write(fd, b'{\"ok\": {\"t\": true}}\\n{\"ok\": true}\\n')\n"
                             "        except OSError:\n            pass\n    return 0\n",
    "patched_bootstrap_encoder": "import sys\nboot = sys.modules['__main__']\nboot.encode = lambda v, depth=0: {'i': '3'}\n"
                                 "def add(a, b):\n    return 0\n",
    "generator_result": "def add(a, b):\n    yield a + b\n",
    "raise_instead": "def add(a, b):\n    raise AssertionError('passed')\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgeries_never_pass(runner, name):
    result = _run(runner, FORGERIES[name])
    assert result.outcome != "passed", (name, result)
    assert result.outcome in ("failed", "runtime_error"), (name, result.outcome, result.detail)
    assert _run(runner, GOOD).outcome == "passed"  # the harness is alive, the next sample unaffected


HOSTILE = {  # program -> acceptable outcomes
    "infinite_loop": ("def add(a, b):\n    while True:\n        pass\n", {"timeout"}),
    "sleep_forever": ("import time\ndef add(a, b):\n    time.sleep(1000)\n", {"timeout"}),
    "memory_bomb": ("def add(a, b):\n    x = bytearray(50 * 10**9)\n    return 3\n", {"memory_exceeded"}),
    "memory_growth": ("def add(a, b):\n    x = []\n    while True:\n        x.append(' ' * 10**7)\n",
                      {"memory_exceeded", "timeout"}),
    "fork_bomb": ("import os\ndef add(a, b):\n    while True:\n        try:\n            os.fork()\n"
                  "        except OSError:\n            pass\n", {"timeout", "runtime_error"}),
    "daemon": ("import os, time\ndef add(a, b):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
               "            time.sleep(1000)\n        os._exit(0)\n    return a + b\n", {"passed"}),
    "kill_parent": ("import os, signal\ndef add(a, b):\n    for pid in (os.getppid(), 1, -1):\n        try:\n"
                    "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return a + b\n",
                    {"passed", "runtime_error"}),
    "huge_output": ("import sys\ndef add(a, b):\n    while True:\n        sys.stdout.write('x' * 10**6)\n",
                    {"output_limit_exceeded", "timeout", "runtime_error"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_are_contained(runner, name):
    program, allowed = HOSTILE[name]
    start = time.monotonic()
    result = _run(runner, program)
    assert result.outcome in allowed, (name, result.outcome, result.detail)
    assert time.monotonic() - start < 90  # the limits, a retry of a timeout and the clean-up, on a loaded machine
    assert _run(runner, GOOD).outcome == "passed"


PROBE = CodeProblem("probe", "check_function", entry_point="probe", test_code="def check(candidate):\n    candidate()\n")


def _probe_values(runner, body):
    """Run ``body`` in the sandbox; it returns a dict of observations (plain data) we check here."""
    check = "def check(candidate):\n    global OBSERVED\n    OBSERVED = candidate()\n"
    problem = CodeProblem("probe", "check_function", entry_point="probe", test_code=check)
    captured = {}

    import lm_eval_moe.scoring.code.judge as judge_module

    original = judge_module.CandidateProxy.__call__

    def spy(self, *args, **kwargs):
        captured["value"] = original(self, *args, **kwargs)
        return captured["value"]

    judge_module.CandidateProxy.__call__ = spy
    try:
        result = _run(runner, "def probe():\n" + textwrap.indent(textwrap.dedent(body), "    "), problem)
    finally:
        judge_module.CandidateProxy.__call__ = original
    assert result.outcome == "passed", result.detail
    return captured["value"]


def test_secrets_files_network_and_privileges_are_out_of_reach(runner):
    seen = _probe_values(runner, f"""
        import os, socket, resource, ctypes
        out = {{}}
        out['env'] = dict(os.environ)
        out['uid'] = os.getuid()
        out['pid'] = os.getpid()
        out['root_listing'] = sorted(os.listdir('/'))
        def attempt(fn):
            try:
                fn()
                return 'allowed'
            except BaseException as e:
                return type(e).__name__
        out['read_repo'] = attempt(lambda: open({str(Path(__file__).resolve())!r}).read())
        out['read_host_tmp'] = attempt(lambda: open({str(SENTINEL)!r}).read())
        out['write_host_tmp'] = attempt(lambda: open({str(SENTINEL)!r}, 'w').write('pwned'))
        out['write_usr'] = attempt(lambda: open('/usr/pwned', 'w'))
        out['delete_python'] = attempt(lambda: os.unlink(os.path.realpath('/usr/bin/env')))
        out['inet_socket'] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('1.1.1.1', 80)))
        out['unix_socketpair'] = attempt(lambda: socket.socketpair())
        out['raise_cpu_limit'] = attempt(lambda: resource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6)))
        out['read_limits'] = attempt(lambda: resource.getrlimit(resource.RLIMIT_CPU))
        libc = ctypes.CDLL(None, use_errno=True)
        out['ptrace'] = libc.ptrace(16, 1, 0, 0)
        out['unshare'] = libc.unshare(0x10000000)
        out['proc_pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
        out['host_home'] = attempt(lambda: os.listdir('/root'))
        return out
    """)
    assert "LM_EVAL_MOE_TEST_SECRET" not in seen["env"] and set(seen["env"]) <= {"PATH", "HOME", "LANG", "PWD",
                                                                                   "PYTHONDONTWRITEBYTECODE", "TMPDIR"}
    if runner.sandbox.layers.namespaces == "bwrap":
        assert seen["read_repo"] != "allowed" and seen["read_host_tmp"] != "allowed"
    else:  # the fallbacks say so instead of pretending
        assert "NOT isolated" in runner.sandbox.layers.describe()
    # /tmp inside is a private tmpfs: writing there is fine, the host's file must stay as it was
    assert SENTINEL.read_text() == "untouched"
    assert seen["write_usr"] != "allowed" and seen["delete_python"] != "allowed"
    assert seen["inet_socket"] != "allowed" and seen["unix_socketpair"] == "allowed"
    assert seen["raise_cpu_limit"] != "allowed" and seen["read_limits"] == "allowed"
    assert seen["ptrace"] == -1 and seen["unshare"] == -1
    if runner.sandbox.layers.namespaces == "bwrap":
        # own PID namespace: bubblewrap's init, the zygote and the check itself; nothing of the host
        assert len(seen["proc_pids"]) <= 3 and seen["pid"] in seen["proc_pids"] and 1 in seen["proc_pids"]
        assert "work" not in seen["root_listing"] or seen["read_repo"] != "allowed"
        assert seen["host_home"] in ("allowed", "PermissionError")  # only the bound interpreter is visible
    if os.geteuid() == 0:  # a uid of this run's own block, one per worker slot
        assert runner.sandbox.uid_base <= seen["uid"] < runner.sandbox.uid_base + runner.workers


LEGIT_CHECK = "def check(candidate):\n    assert candidate() == 'ok'\n"
LEGIT = {
    "threads": """
        import threading
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(8)]
        [t.start() for t in threads]; [t.join() for t in threads]
        return 'ok' if sorted(results) == [i * i for i in range(8)] else 'bad'
    """,
    "multiprocessing": """
        import multiprocessing
        with multiprocessing.get_context('fork').Pool(2) as pool:
            values = pool.map(abs, [-1, -2, -3])
        return 'ok' if values == [1, 2, 3] else 'bad'
    """,
    "subprocess": """
        import subprocess, sys
        out = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout
        return 'ok' if out.strip() == '42' else out
    """,
    "temp_files": """
        import tempfile, os
        with tempfile.NamedTemporaryFile('w+', delete=False) as f:
            f.write('data'); name = f.name
        text = open(name).read(); os.unlink(name)
        return 'ok' if text == 'data' else 'bad'
    """,
    "deep_recursion": """
        import sys
        sys.setrecursionlimit(10**6)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        return 'ok' if depth(100000) == 100000 else 'bad'
    """,
    "huge_integers": """
        import sys
        sys.set_int_max_str_digits(0)
        return 'ok' if len(str(3 ** 200000)) == 95425 else 'bad'
    """,
}


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_legitimate_programs_pass(runner, name):
    problem = CodeProblem(name, "check_function", entry_point="probe", test_code=LEGIT_CHECK)
    program = "def probe():\n" + textwrap.indent(textwrap.dedent(LEGIT[name]), "    ")
    result = _run(runner, program, problem)
    assert result.outcome == "passed", (name, result.detail)


def test_stdio_programs_read_stdin_and_print_unicode_and_big_numbers(runner):
    program = "import sys\nn = int(sys.stdin.readline())\nprint('héllo ✓', n * 2)\nsys.set_int_max_str_digits(0)\nprint(7 ** 5000)\n"
    expected = f"héllo ✓ 42\n{7 ** 5000}\n"
    problem = CodeProblem("stdio", "stdio_io", io_tests=(("21\n", expected), ("1\n", expected)))
    result = _run(runner, program, problem)
    assert result.outcome == "failed" and [t.passed for t in result.tests] == [True, False]
    looping = CodeProblem("stdio", "stdio_io", io_tests=(("", "x"),))
    assert _run(runner, "while True:\n    pass\n", looping).outcome == "timeout"


def test_a_correct_solution_still_passes_under_load(runner):
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        program = "def add(a, b):\n    total = 0\n    for _ in range(2 * 10**6):\n        total += 1\n    return a + b\n"
        results = runner.run_many([(ADD, program)] * 4, progress=False)
    finally:
        for burner in burners:
            burner.kill()
    assert all(r.outcome == "passed" for r in results), [r.outcome for r in results]


def test_an_interpreter_under_tmp_keeps_every_layer(tmp_path):
    """A venv in a temporary checkout (under /tmp, as a fresh clone in a temporary folder has it): bubblewrap
    binds the interpreter on top of the sandbox's private /tmp instead of hiding it under that tmpfs."""
    import sysconfig

    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    assert str(python).startswith(tempfile.gettempdir())
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{REPO}\n")
    code = textwrap.dedent(f"""
        from lm_eval_moe.scoring.code import CodeProblem, CodeRunner
        runner = CodeRunner("auto", workers=1)
        problem = CodeProblem("add", "check_function", entry_point="add", test_code={CHECK_ADD!r})
        print(runner.sandbox.layers.namespaces, runner.run(problem, {GOOD!r}).outcome)
    """)
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["bwrap", "passed"]


def test_strict_mode_refuses_a_missing_layer(monkeypatch):
    import lm_eval_moe.scoring.code.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)  # no bwrap, prlimit, unshare, setpriv
    with pytest.raises(SandboxUnavailable, match="sandbox mode strict"):
        sandbox_module.Sandbox("strict", workers=1)


def test_none_mode_says_so(caplog):
    from lm_eval_moe.scoring.code.sandbox import Sandbox

    with caplog.at_level("WARNING"):
        sandbox = Sandbox("none", workers=1)
        sandbox.start(0).kill()
    assert "NO ISOLATION" in sandbox.layers.describe()
    assert any("WITHOUT isolation" in r.message for r in caplog.records)


def test_outcome_details_serialise(runner):
    result = _run(runner, "def add(a, b):\n    return a - b\n")
    payload = json.loads(json.dumps(result.as_dict()))
    assert payload["outcome"] == "failed" and payload["tests"][0]["passed"] is False


def test_parallel_runs_keep_order(runner):
    jobs = [(ADD, GOOD), (ADD, "def add(a, b):\n    return 0\n")] * 3
    assert [r.outcome for r in runner.run_many(jobs, progress=False)] == ["passed", "failed"] * 3


def test_threads_can_share_one_runner(runner):
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(runner.run(ADD, GOOD).outcome)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["passed"] * 3
