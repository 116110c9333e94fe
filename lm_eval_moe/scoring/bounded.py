"""Run a check with a wall-clock bound that holds from any thread.

math-verify bounds its sympy work with ``signal.alarm``; a signal only interrupts Python bytecode, so a
long computation inside C (sympy raising ``9^{9^{9}}``, a big-integer power) runs on past any alarm, in
the main thread too. Every bounded call therefore runs in a helper process (spawned once per calling
thread, reused), and on time-out that process is killed and replaced: a runaway check can never hang the
caller, and one thread's time-out never disturbs another thread's call.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import multiprocessing
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CheckFailed(Exception):
    """A bounded call returned no value: it raised, or its helper process died."""


class CheckTimeout(CheckFailed):
    """A bounded call ran out of time."""


_local = threading.local()
_pools: set[concurrent.futures.ProcessPoolExecutor] = set()
_pools_lock = threading.Lock()


def _helper_pool() -> concurrent.futures.ProcessPoolExecutor:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        _local.pool = pool
        with _pools_lock:
            _pools.add(pool)
    return pool


def _discard(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    if getattr(_local, "pool", None) is pool:
        _local.pool = None
    with _pools_lock:
        _pools.discard(pool)
    for process in list(getattr(pool, "_processes", {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown() -> None:
    with _pools_lock:
        pools = list(_pools)
    for pool in pools:
        _discard(pool)


def call_bounded(fn: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
    """``fn(*args)`` within ``timeout`` seconds, or :class:`CheckTimeout`; :class:`CheckFailed` if it raised.
    ``fn`` and ``args`` must be picklable (a module-level function)."""
    pool = _helper_pool()
    try:
        future = pool.submit(fn, *args)
    except RuntimeError:  # a pool broken by an earlier failure of this thread
        _discard(pool)
        pool = _helper_pool()
        future = pool.submit(fn, *args)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        _discard(pool)
        raise CheckTimeout from None
    except concurrent.futures.process.BrokenProcessPool:
        _discard(pool)
        raise CheckFailed("the helper process died") from None
    except Exception as error:  # noqa: BLE001 - what the checked function raised
        raise CheckFailed(f"{type(error).__name__}: {error}") from None
