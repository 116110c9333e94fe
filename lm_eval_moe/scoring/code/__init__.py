"""Sandboxed execution of model-written code and the judge that grades it (docs/SANDBOX.md).

Settings (environment variables, read once per process by :func:`shared_runner`):
``LM_EVAL_MOE_SANDBOX`` = auto (default: bubblewrap, else unshare, else refused) | strict (every layer or
refused) | allow_no_namespaces (the explicit opt-in to run without namespaces, as an unprivileged uid) |
none (debugging: no isolation); ``LM_EVAL_MOE_CODE_WORKERS`` (default: the
core count); ``LM_EVAL_MOE_CODE_CPU_SECONDS`` (default 10) and ``LM_EVAL_MOE_CODE_WALL_SECONDS``
(default 30) per sample; ``LM_EVAL_MOE_CODE_MEMORY_MB`` (default 4096).
"""

from __future__ import annotations

import os
import threading

from lm_eval_moe.provenance import record_sandbox
from lm_eval_moe.scoring.code.extract import extract_program
from lm_eval_moe.scoring.code.judge import OUTCOMES, CodeProblem, ExecutionResult, TestDetail
from lm_eval_moe.scoring.code.runner import CodeRunner
from lm_eval_moe.scoring.code.sandbox import Limits, Sandbox, SandboxUnavailable

_runner: CodeRunner | None = None
_lock = threading.Lock()


def shared_runner() -> CodeRunner:
    """The process-wide runner (probing the sandbox once)."""
    global _runner
    with _lock:
        if _runner is None:
            limits = Limits(
                cpu_seconds=int(os.environ.get("LM_EVAL_MOE_CODE_CPU_SECONDS", 10)),
                wall_seconds=float(os.environ.get("LM_EVAL_MOE_CODE_WALL_SECONDS", 30)),
                memory_bytes=int(os.environ.get("LM_EVAL_MOE_CODE_MEMORY_MB", 4096)) << 20,
            )
            workers = os.environ.get("LM_EVAL_MOE_CODE_WORKERS")
            _runner = CodeRunner(
                mode=os.environ.get("LM_EVAL_MOE_SANDBOX", "auto"),  # type: ignore[arg-type]
                limits=limits,
                workers=int(workers) if workers else None,
            )
            record_sandbox({"mode": _runner.sandbox.mode, "layers": _runner.sandbox.layers.describe(),
                            "file_system_isolated": _runner.sandbox.layers.filesystem_isolated})
        return _runner


__all__ = [
    "OUTCOMES", "CodeProblem", "CodeRunner", "ExecutionResult", "Limits", "Sandbox", "SandboxUnavailable",
    "TestDetail", "extract_program", "shared_runner",
]
