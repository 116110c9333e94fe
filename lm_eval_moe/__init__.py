"""lm_eval_moe: test-time methods for Mixture-of-Experts LLMs on top of lm-evaluation-harness.

Kept import-free on purpose: the installed ``.pth`` hook imports this package on every Python start.
"""

__version__ = "0.1.0"


def register() -> None:
    """Make lm-eval see our models and tasks in this process (the .pth hook does it automatically)."""
    from lm_eval_moe._lm_eval_hook import register_models, register_tasks

    register_models()
    register_tasks()
