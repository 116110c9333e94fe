"""Parallel execution of many (problem, program) pairs, each in a fresh sandboxed check.

One worker thread per slot (default: the core count); each slot keeps one zygote (``sandbox.py``) that
forks a clean child per check, so a check costs a fork rather than new namespaces and a new interpreter. A
timeout is retried once, serially, after the parallel pass, because a loaded machine turns slow-but-correct
programs into false failures. An infrastructure failure (a zygote that will not start or clean up) is
retried once on a fresh zygote and otherwise reported as ``sandbox_error``, never as the model's failure;
nothing a sample does raises out of the runner.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from lm_eval_moe.scoring.code.judge import CodeProblem, ExecutionResult, judge
from lm_eval_moe.scoring.code.sandbox import Limits, Sandbox, SandboxMode, SandboxStartError, Zygote

logger = logging.getLogger(__name__)


class CodeRunner:
    def __init__(self, mode: SandboxMode = "auto", limits: Limits | None = None, workers: int | None = None) -> None:
        self.sandbox = Sandbox(mode, limits, workers)
        self.limits = self.sandbox.limits
        self.workers = self.sandbox.workers
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            self._slots.put(slot)
        self._zygotes: dict[int, Zygote] = {}
        self._lock = threading.Lock()

    def _zygote(self, slot: int) -> Zygote:
        with self._lock:
            zygote = self._zygotes.get(slot)
        if zygote is None or not zygote.alive:
            if zygote is not None:
                zygote.kill()
            zygote = self.sandbox.start(slot)
            with self._lock:
                self._zygotes[slot] = zygote
        return zygote

    def _run_on_slot(self, slot: int, problem: CodeProblem, program: str) -> ExecutionResult:
        for attempt in (1, 2):
            try:
                zygote = self._zygote(slot)
                channel = zygote.begin_check()
            except SandboxStartError as error:
                if attempt == 2:
                    return self._stamped(ExecutionResult("sandbox_error", detail=str(error)))
                logger.warning("sandbox start failed, retrying once: %s", error)
                continue
            try:
                result = judge(problem, program, channel, self.limits.wall_seconds)
            finally:
                channel.close()
                zygote.end_check()
            if result.outcome == "sandbox_error" and attempt == 1:
                logger.warning("sandbox failed on %s, retrying once on a fresh sandbox: %s", problem.task_id,
                               result.detail)
                zygote.kill()
                continue
            return self._stamped(result)
        raise AssertionError("unreachable")

    def _stamped(self, result: ExecutionResult) -> ExecutionResult:
        """Every verdict says which layers judged it; without file-system isolation the candidate could read
        the expected outputs, so the verdict is forgeable."""
        result.sandbox = self.sandbox.layers.describe()
        result.forgeable = result.forgeable or not self.sandbox.layers.filesystem_isolated
        return result

    def run(self, problem: CodeProblem, program: str) -> ExecutionResult:
        slot = self._slots.get()
        try:
            return self._run_on_slot(slot, problem, program)
        finally:
            self._slots.put(slot)

    def run_many(self, jobs: Sequence[tuple[CodeProblem, str]], progress: bool = True,
                 description: str = "executing code") -> list[ExecutionResult]:
        """Results in the order of ``jobs``; timeouts retried once, serially."""
        results: list[ExecutionResult] = []
        bar = tqdm(total=len(jobs), disable=not progress, desc=description)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self.run, problem, program) for problem, program in jobs]
            for future in futures:
                results.append(future.result())
                bar.update(1)
        bar.close()
        retries = [i for i, result in enumerate(results) if result.outcome == "timeout"]
        if retries:
            logger.info("retrying %d timed-out sample(s) serially", len(retries))
        for index in retries:
            retried = self.run(*jobs[index])
            retried.retried = True
            results[index] = retried
        return results

    def close(self) -> None:
        """Stop every zygote and remove this run's cgroups."""
        with self._lock:
            zygotes, self._zygotes = list(self._zygotes.values()), {}
        for zygote in zygotes:
            zygote.kill()
        self.sandbox.close()
