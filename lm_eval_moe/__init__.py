"""lm_eval_moe: test-time methods for Mixture-of-Experts LLMs on top of lm-evaluation-harness.

Kept import-free on purpose: the installed ``.pth`` hook imports this package on every Python start.
"""

__version__ = "0.1.0"


def register() -> None:
    """Make lm-eval see our models and tasks in this process.

    The installed ``lm_eval_moe.pth`` hook (and its PEP 829 ``lm_eval_moe.start`` companion) does this
    automatically when lm-eval is imported. Call it yourself where neither is run (``python -S``, embedded interpreters, some frozen or
    sandboxed environments): after ``import lm_eval_moe; lm_eval_moe.register()``, ``--model moe_des``
    and the ``moe_*`` tasks resolve as usual. Calling it twice registers nothing twice.
    """
    from lm_eval_moe._lm_eval_hook import AFTER_IMPORT

    for action in AFTER_IMPORT.values():
        action()
