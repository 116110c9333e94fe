"""lm_eval_moe: test-time methods for Mixture-of-Experts LLMs on top of lm-evaluation-harness.

Kept import-free on purpose: the installed ``.pth`` hook imports this package on every Python start.
"""

__version__ = "0.1.0"


def register() -> None:
    """Make lm-eval see our models and tasks in this process.

    The installed ``lm_eval_moe.pth`` hook does this automatically when lm-eval is imported. Call it
    yourself where ``.pth`` files are not run (``python -S``, embedded interpreters, some frozen or
    sandboxed environments): after ``import lm_eval_moe; lm_eval_moe.register()``, ``--model moe_des``
    and the ``moe_*`` tasks resolve as usual. Calling it twice registers nothing twice.
    """
    from lm_eval_moe._lm_eval_hook import register_models, register_tasks

    register_models()
    register_tasks()
