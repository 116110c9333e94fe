"""What a result was computed with: this package's version and commit, the libraries' versions, where
every benchmark's rows came from (recorded by ``lm_eval_moe.tasks.data`` as it loads them) and, when code
was executed, the sandbox's mode and layers.

Results carry it twice: our model classes add it to ``results["config"]["lm_eval_moe"]["provenance"]``,
and every task's config in the results holds it as its ``custom_dataset`` entry (so results of lm-eval's
own models on our tasks carry it as well).
"""

from __future__ import annotations

import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
#: Written by setup.py into built (non-editable) installs: the commit the package was built from.
BUILD_COMMIT_FILE = PACKAGE_DIR / "_build_commit.txt"
GIT_TIMEOUT_S = 5.0

_DATASETS: dict[str, dict[str, Any]] = {}
_SANDBOX: dict[str, Any] = {}


def record_dataset(name: str, record: dict[str, Any]) -> None:
    _DATASETS[name] = dict(record)


def record_sandbox(record: dict[str, Any]) -> None:
    """How model-written code is executed in this process (mode and active layers, an opt-in included)."""
    _SANDBOX.clear()
    _SANDBOX.update(record)


def datasets() -> dict[str, dict[str, Any]]:
    """Where the rows of every benchmark loaded in this process came from."""
    return {name: dict(record) for name, record in _DATASETS.items()}


def git_commit(folder: Path) -> str | None:
    """HEAD of the git checkout holding ``folder`` (``-dirty`` when tracked files differ), or None."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if changes else head


@cache
def package_commit() -> str:
    """The commit of this package: its live checkout (editable installs), else the build's stamp."""
    live = git_commit(PACKAGE_DIR)
    if live:
        return live
    if BUILD_COMMIT_FILE.is_file():
        return BUILD_COMMIT_FILE.read_text().strip()
    return "unknown (not a git checkout, no build stamp)"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@cache
def software() -> dict[str, str]:
    return {
        "lm_eval_moe": _version("lm_eval_moe"), "lm_eval_moe_commit": package_commit(),
        "lm_eval": _version("lm_eval"), "torch": _version("torch"), "transformers": _version("transformers"),
        "datasets": _version("datasets"),
    }


def provenance() -> dict[str, Any]:
    record = {"software": software(), "datasets": datasets()}
    if _SANDBOX:
        record["code_sandbox"] = dict(_SANDBOX)
    return record
