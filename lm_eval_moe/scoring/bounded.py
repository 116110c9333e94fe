"""Run a check with a wall-clock bound from any thread or process.

math-verify bounds its sympy work with ``signal.alarm``, which only works in a process's main thread
(elsewhere it raises). We disable math-verify's own timeouts and bound calls ourselves:

* main thread: a real-time interval timer (``SIGALRM``) that raises :class:`CheckTimeout`;
* any other thread: the call runs in a helper process (spawned once, reused), and on time-out that
  process is killed and replaced, so a runaway sympy simplification can never hang the caller.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CheckTimeout(Exception):
    """A bounded call ran out of time."""


_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _alarm_handler(signum: int, frame: Any) -> None:
    raise CheckTimeout


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _call_with_alarm(fn: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
    previous_handler = signal.signal(signal.SIGALRM, _alarm_handler)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # re-arm an outer timer with what it had left
            signal.setitimer(signal.ITIMER_REAL, *previous_timer)


def _helper_pool() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _discard_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown() -> None:
    if _pool is not None:
        _discard_pool(_pool)


def call_bounded(fn: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
    """``fn(*args)`` within ``timeout`` seconds, or :class:`CheckTimeout`. ``fn`` and ``args`` must be
    picklable (a module-level function) for calls from non-main threads."""
    if _in_main_thread():
        return _call_with_alarm(fn, args, timeout)
    pool = _helper_pool()
    future = pool.submit(fn, *args)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        _discard_pool(pool)
        raise CheckTimeout from None
    except concurrent.futures.process.BrokenProcessPool:
        _discard_pool(pool)
        raise
