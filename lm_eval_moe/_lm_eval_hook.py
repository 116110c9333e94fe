"""Lazy registration of lm_eval_moe's models and tasks with the stock ``lm_eval``.

lm-eval 0.4.13 has no plugin discovery, so ``lm_eval_moe.pth`` calls :func:`install` at interpreter
start. It only inserts an import observer to ``sys.meta_path`` (about a millisecond); the observer
waits until lm-eval's own modules are imported and then

* registers our model names as lazy ``"module:Class"`` placeholders, after importing
  ``lm_eval.models`` first: lm-eval registers its built-ins only into an EMPTY registry, so
  registering ours first would hide ``hf``, ``dummy``, ...;
* wraps ``TaskManager.__init__`` so that our packaged task folder is searched whenever lm-eval's
  built-in tasks are, before the user's ``--include_path`` (which can therefore override ours).

Nothing here may raise into the user's program: failures are logged at debug level.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

logger = logging.getLogger(__name__)

#: Every model name this package adds to lm-eval, in one place.
MODEL_TARGETS: dict[str, str] = {
    "moe_hf": "lm_eval_moe.model_wrappers.moe_hf:MoEHFLM",
    "moe_search": "lm_eval_moe.model_wrappers.moe_search:MoESearchLM",
    "moe_des": "lm_eval_moe.model_wrappers.moe_search:MoEDESLM",
    "moe_reroute": "lm_eval_moe.model_wrappers.moe_reroute:MoERerouteLM",
    "moe_c3po": "lm_eval_moe.model_wrappers.moe_c3po:MoEC3POLM",
}

_REGISTRY_MODULE = "lm_eval.api.registry"
_TASK_MANAGER_MODULE = "lm_eval.tasks.manager"


def tasks_dir() -> Path | None:
    """Folder holding our task YAMLs, found without importing anything heavy."""
    spec = importlib.util.find_spec("lm_eval_moe.tasks")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def register_models() -> None:
    import lm_eval.models  # noqa: F401  (registers the built-ins first; see module docstring)
    from lm_eval.api.registry import model_registry

    for name, target in MODEL_TARGETS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def register_tasks() -> None:
    from lm_eval.tasks import manager

    init = manager.TaskManager.__init__
    if getattr(init, "_lm_eval_moe_wrapped", False):
        return
    ours = tasks_dir()
    if ours is None:
        return

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, include_path: Any = None, include_defaults: bool = True, **kwargs: Any):
        if include_defaults:
            given = [] if include_path is None else (
                list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
            )
            if all(Path(p).resolve() != ours.resolve() for p in given):
                include_path = [ours, *given]
        init(self, *args, include_path=include_path, include_defaults=include_defaults, **kwargs)

    __init__._lm_eval_moe_wrapped = True  # type: ignore[attr-defined]
    manager.TaskManager.__init__ = __init__


_AFTER_IMPORT: dict[str, Callable[[], None]] = {
    _REGISTRY_MODULE: register_models,
    _TASK_MANAGER_MODULE: register_tasks,
}


def _run_quietly(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # never break the user's lm_eval run because of our hook
        logger.debug("lm_eval_moe: lm-eval hook %s failed", action.__name__, exc_info=True)


class _AfterImportObserver(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a watched module to act once it has run."""

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None):
        action = _AFTER_IMPORT.get(fullname)
        if action is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            _run_quietly(action)

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Entry point of the .pth file: register now if lm-eval is already loaded, else on import."""
    if any(isinstance(f, _AfterImportObserver) for f in sys.meta_path):
        return
    for name, action in _AFTER_IMPORT.items():
        if name in sys.modules:
            _run_quietly(action)
    sys.meta_path.insert(0, _AfterImportObserver())
