"""Lazy registration of lm_eval_moe's models and tasks with the stock ``lm_eval``.

lm-eval 0.4.13 has no plugin discovery, so ``lm_eval_moe.pth`` (and, on Pythons that run PEP 829 entry
points instead of ``.pth`` import lines, ``lm_eval_moe.start``) calls :func:`install` at interpreter start. That only puts an import observer on ``sys.meta_path`` and imports nothing but this module
(measured by ``benchmarks/bench_hook_import.py``: well under 2 ms); the observer waits until lm-eval's own
modules are imported and then

* registers our model names as lazy ``"module:Class"`` placeholders, after importing
  ``lm_eval.models`` first: lm-eval registers its built-ins only into an EMPTY registry, so
  registering ours first would hide ``hf``, ``dummy``, ...;
* wraps ``TaskManager.__init__`` so that our packaged task folder is searched whenever lm-eval's
  built-in tasks are, before the user's ``--include_path`` (which can therefore override ours);
* wraps ``simple_evaluate`` so that ``--gen_kwargs`` our model classes would not honour are refused before
  any checkpoint loads (``model_wrappers/preflight.py``), and our tasks' ``higher_is_better`` lists only the
  metrics they reported;
* wraps ``make_table`` so that the printed table of our tasks shows the measures that apply to the run
  (``lm_eval_moe/printed_results.py``); the results JSON keeps every metric.

An lm-eval that discovers the ``lm_eval.models`` / ``lm_eval.tasks`` entry points itself (declared in
setup.cfg) gets nothing from this hook for that group, so nothing is registered twice. Where neither file is
run (``python -S``, some embedded interpreters), call :func:`lm_eval_moe.register`.

The hook never raises into the user's program; a failure to register is a visible warning.
"""

import sys

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
_EVALUATOR_MODULE = "lm_eval.evaluator"
_UTILS_MODULE = "lm_eval.utils"


def tasks_dir():
    """Folder holding our task YAMLs (a ``pathlib.Path``), or None."""
    from importlib.util import find_spec
    from pathlib import Path

    spec = find_spec("lm_eval_moe.tasks")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def lm_eval_discovers_models() -> bool:
    """lm-eval loads ``lm_eval.models`` entry points itself (``registry.load_plugins``, lm-eval PR #4013)."""
    from lm_eval.api import registry

    return callable(getattr(registry, "load_plugins", None))


def lm_eval_discovers_tasks() -> bool:
    """lm-eval's task manager loads ``lm_eval.tasks`` entry points itself (plugin task registration)."""
    from lm_eval.tasks import manager

    names = [*vars(manager), *vars(manager.TaskManager)]
    return any("plugin" in name.lower() for name in names)


def register_models() -> None:
    if lm_eval_discovers_models():
        return
    import lm_eval.models  # noqa: F401  (registers the built-ins first; see module docstring)
    from lm_eval.api.registry import model_registry

    for name, target in MODEL_TARGETS.items():
        if name not in model_registry:
            model_registry.register(name, target=target)


def register_tasks() -> None:
    import functools
    from pathlib import Path

    from lm_eval.tasks import manager

    init = manager.TaskManager.__init__
    if getattr(init, "_lm_eval_moe_wrapped", False) or lm_eval_discovers_tasks():
        return
    ours = tasks_dir()
    if ours is None:
        raise RuntimeError("the lm_eval_moe.tasks package (our task YAMLs) is not installed")

    @functools.wraps(init)
    def __init__(self, *args, include_path=None, include_defaults: bool = True, **kwargs):
        if include_defaults:
            given = [] if include_path is None else (
                list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
            )
            if all(Path(p).resolve() != ours.resolve() for p in given):
                include_path = [ours, *given]
        init(self, *args, include_path=include_path, include_defaults=include_defaults, **kwargs)

    __init__._lm_eval_moe_wrapped = True  # type: ignore[attr-defined]
    manager.TaskManager.__init__ = __init__


def wrap_simple_evaluate() -> None:
    import functools
    import inspect

    from lm_eval import evaluator

    original = evaluator.simple_evaluate
    if getattr(original, "_lm_eval_moe_wrapped", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def simple_evaluate(*args, **kwargs):
        from lm_eval_moe.model_wrappers.preflight import check_run
        from lm_eval_moe.printed_results import prune_higher_is_better

        given = signature.bind_partial(*args, **kwargs).arguments
        check_run(given.get("model"), given.get("model_args"), given.get("gen_kwargs"))
        results = original(*args, **kwargs)
        if isinstance(results, dict):
            prune_higher_is_better(results)
        return results

    simple_evaluate._lm_eval_moe_wrapped = True  # type: ignore[attr-defined]
    evaluator.simple_evaluate = simple_evaluate


def wrap_make_table() -> None:
    import functools

    from lm_eval import utils

    original = utils.make_table
    if getattr(original, "_lm_eval_moe_wrapped", False):
        return

    @functools.wraps(original)
    def make_table(result_dict, column: str = "results", sort_results: bool = False):
        try:
            from lm_eval_moe.printed_results import hidden_note, printed_view

            view, note = printed_view(result_dict, column), hidden_note(result_dict, column)
        except Exception as error:  # noqa: BLE001 - a table lm-eval can print beats none
            import warnings

            warnings.warn(f"lm_eval_moe could not shorten the results table ({error!r}); printing all of it",
                          RuntimeWarning, stacklevel=2)
            view, note = result_dict, ""
        return original(view, column, sort_results) + note

    make_table._lm_eval_moe_wrapped = True  # type: ignore[attr-defined]
    utils.make_table = make_table


AFTER_IMPORT = {
    _REGISTRY_MODULE: register_models,
    _TASK_MANAGER_MODULE: register_tasks,
    _EVALUATOR_MODULE: wrap_simple_evaluate,
    _UTILS_MODULE: wrap_make_table,
}


def _run_visibly(action) -> None:
    """Run a registration; a failure is a warning naming the way out, never an exception."""
    try:
        action()
    except Exception as error:  # noqa: BLE001 - never break the user's lm_eval run because of our hook
        import warnings

        warnings.warn(
            f"lm_eval_moe could not register with lm-eval ({action.__name__}: {type(error).__name__}: {error}); "
            "our models and tasks may be missing. Call lm_eval_moe.register() after importing lm_eval to retry.",
            RuntimeWarning, stacklevel=2,
        )


class _AfterImportObserver:
    """A ``sys.meta_path`` entry that finds nothing itself; it wraps the real loader of a watched
    module to act once that module has run. (Duck-typed: importing ``importlib.abc`` for the base class
    would cost milliseconds on every interpreter start.)"""

    def find_spec(self, fullname: str, path, target=None):
        action = AFTER_IMPORT.get(fullname)
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

        def exec_then_register(module) -> None:
            exec_module(module)
            _run_visibly(action)

        loader.exec_module = exec_then_register
        return spec


def install() -> None:
    """Entry point of the .pth file: register now if lm-eval is already loaded, else on import."""
    if any(isinstance(f, _AfterImportObserver) for f in sys.meta_path):
        return
    for name, action in AFTER_IMPORT.items():
        if name in sys.modules:
            _run_visibly(action)
    sys.meta_path.insert(0, _AfterImportObserver())
