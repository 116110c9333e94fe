"""Run a check with a wall-clock bound that holds from any thread, in a helper process of our own.

math-verify bounds its sympy work with ``signal.alarm``; a signal only interrupts Python bytecode, so a
long computation inside C (sympy raising ``9^{9^{9}}``, a big-integer power) runs on past any alarm, in
the main thread too. Every bounded call therefore runs in a helper process (one per calling thread,
reused), and on time-out that process is killed and replaced: a runaway check can never hang the caller,
and one thread's time-out never disturbs another thread's call.

The helper starts from its own entry point (``python -m lm_eval_moe.scoring.helper_process``), never by
re-importing the caller's main module as multiprocessing's "spawn" does: a user's script without an
``if __name__ == "__main__":`` guard (a notebook, a script calling ``simple_evaluate``) gets the same
verdicts as the CLI. Its address space is capped (``HELPER_MEMORY_BYTES``), so a check that explodes in
memory fails alone instead of taking the host down.
"""

from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

HELPER_MEMORY_BYTES = 4 << 30
START_TIMEOUT_S = 120.0  # the helper's start (importing sympy and math-verify) on a loaded machine
_HEADER = struct.Struct("!Q")
MAX_REPLY_BYTES = 64 << 20


class CheckFailed(Exception):
    """A bounded call returned no value: it raised, or its helper process died."""


class CheckTimeout(CheckFailed):
    """A bounded call ran out of time."""


class _HelperLost(CheckFailed):
    """The helper process died or broke the protocol: it is replaced."""


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks, remaining = [], size
    while remaining:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise CheckTimeout
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise _HelperLost("the helper process died")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _import_path() -> str:
    """The caller's import path, so that the helper imports this package (and the checked function's
    module) from where the caller does, installed or not."""
    return os.pathsep.join(entry for entry in sys.path if entry and os.path.isdir(entry))


_preloaded: set[str] = set()


def preload(module: str) -> None:
    """Have every helper import ``module`` when it starts, so that a check's time bound is the check's alone
    (the first math-verify call would otherwise pay for importing sympy)."""
    _preloaded.add(module)


class _Helper:
    """One helper process: frames of ``(length, pickle)`` over its stdin and stdout."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": _import_path(), "LM_EVAL_MOE_HELPER_MEMORY": str(HELPER_MEMORY_BYTES),
               "LM_EVAL_MOE_HELPER_PRELOAD": ",".join(sorted(_preloaded))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lm_eval_moe.scoring.helper_process"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True, close_fds=True,
        )
        try:
            ready = self._reply(time.monotonic() + START_TIMEOUT_S)
        except CheckFailed:
            self.kill()
            raise _HelperLost("the helper process did not start") from None
        if ready != ("ok", "ready"):
            self.kill()
            raise _HelperLost(f"the helper process did not start: {ready[1]}")

    def _reply(self, deadline: float) -> tuple[str, Any]:
        fd = self.process.stdout.fileno()
        (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
        if size > MAX_REPLY_BYTES:
            raise _HelperLost(f"the helper's reply is {size} bytes")
        try:
            return pickle.loads(_read_exactly(fd, size, deadline))
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise _HelperLost(f"unreadable reply from the helper ({type(error).__name__})") from None

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        request = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.process.stdin.write(_HEADER.pack(len(request)) + request)
            self.process.stdin.flush()
        except OSError:
            raise _HelperLost("the helper process died") from None
        status, value = self._reply(time.monotonic() + timeout)
        if status == "ok":
            return value
        raise CheckFailed(value)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


_local = threading.local()
_helpers: set[_Helper] = set()
_helpers_lock = threading.Lock()


def _helper() -> _Helper:
    helper = getattr(_local, "helper", None)
    if helper is None or helper.process.poll() is not None:
        if helper is not None:
            _discard(helper)
        helper = _Helper()
        _local.helper = helper
        with _helpers_lock:
            _helpers.add(helper)
    return helper


def _discard(helper: _Helper) -> None:
    if getattr(_local, "helper", None) is helper:
        _local.helper = None
    with _helpers_lock:
        _helpers.discard(helper)
    helper.kill()


@atexit.register
def _shutdown() -> None:
    with _helpers_lock:
        helpers = list(_helpers)
    for helper in helpers:
        _discard(helper)


def call_bounded(fn: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
    """``fn(*args)`` within ``timeout`` seconds, or :class:`CheckTimeout`; :class:`CheckFailed` if it raised.
    ``fn`` must be a function of an importable module (not ``__main__``), ``args`` picklable."""
    if getattr(fn, "__module__", "__main__") == "__main__":
        raise TypeError(f"{fn!r}: a bounded call runs a function of an importable module, not of __main__")
    helper = _helper()
    try:
        return helper.call(fn, args, timeout)
    except (CheckTimeout, _HelperLost):
        _discard(helper)
        raise
