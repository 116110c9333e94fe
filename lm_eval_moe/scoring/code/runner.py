"""Parallel execution of many (problem, program) pairs in fresh sandboxes.

One worker thread per slot (default: the core count); each slot keeps one sandbox pre-started so that
its start-up overlaps the previous sample. Every sample gets a fresh sandbox that is killed (whole
process tree) afterwards. A timeout is retried once, serially, after the parallel pass, because a
loaded machine turns slow-but-correct programs into false failures. A sandbox that fails to start is
retried once and otherwise reported as ``sandbox_error`` (never as the model's failure).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from lm_eval_moe.scoring.code.judge import CodeProblem, ExecutionResult, judge
from lm_eval_moe.scoring.code.sandbox import Limits, Sandbox, SandboxMode, SandboxProcess, SandboxStartError

logger = logging.getLogger(__name__)


class CodeRunner:
    def __init__(self, mode: SandboxMode = "auto", limits: Limits | None = None, workers: int | None = None) -> None:
        self.sandbox = Sandbox(mode, limits, workers)
        self.limits = self.sandbox.limits
        self.workers = self.sandbox.workers
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            self._slots.put(slot)
        self._spares: dict[int, SandboxProcess | None] = {}
        self._lock = threading.Lock()

    def _take(self, slot: int, prestart: bool) -> SandboxProcess:
        with self._lock:
            spare = self._spares.pop(slot, None)
        if spare is None or spare.process.poll() is not None:
            if spare is not None:
                spare.kill()
            spare = self.sandbox.start(slot)
        if prestart:
            try:
                next_spare = self.sandbox.start(slot)
            except SandboxStartError:
                next_spare = None
            with self._lock:
                self._spares[slot] = next_spare
        return spare

    def _run_on_slot(self, slot: int, problem: CodeProblem, program: str, prestart: bool) -> ExecutionResult:
        for attempt in (1, 2):
            try:
                process = self._take(slot, prestart)
            except SandboxStartError as error:
                if attempt == 2:
                    return ExecutionResult("sandbox_error", detail=str(error))
                logger.warning("sandbox start failed, retrying once: %s", error)
                continue
            try:
                return judge(problem, program, process, self.limits.wall_seconds)
            finally:
                process.kill()
        raise AssertionError("unreachable")

    def run(self, problem: CodeProblem, program: str) -> ExecutionResult:
        slot = self._slots.get()
        try:
            return self._run_on_slot(slot, problem, program, prestart=False)
        finally:
            self._slots.put(slot)

    def _run_parallel(self, problem: CodeProblem, program: str) -> ExecutionResult:
        slot = self._slots.get()
        try:
            return self._run_on_slot(slot, problem, program, prestart=True)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: Sequence[tuple[CodeProblem, str]], progress: bool = True,
                 description: str = "executing code") -> list[ExecutionResult]:
        """Results in the order of ``jobs``; timeouts retried once, serially."""
        results: list[ExecutionResult] = []
        bar = tqdm(total=len(jobs), disable=not progress, desc=description)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self._run_parallel, problem, program) for problem, program in jobs]
            for future in futures:
                results.append(future.result())
                bar.update(1)
        bar.close()
        self.close_spares()
        retries = [i for i, result in enumerate(results) if result.outcome == "timeout"]
        if retries:
            logger.info("retrying %d timed-out sample(s) serially", len(retries))
        for index in retries:
            retried = self.run(*jobs[index])
            retried.retried = True
            results[index] = retried
        return results

    def close_spares(self) -> None:
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for spare in spares:
            if spare is not None:
                spare.kill()
