"""Checks of an lm-eval run's settings made before any checkpoint loads.

lm-eval builds the model before it reads the tasks and hands ``--gen_kwargs`` to the model only with each
request, so a misspelt generation kwarg would surface after the policy and the verifier loaded (a minute on
a real MoE), or not at all. ``lm_eval_moe/_lm_eval_hook.py`` calls :func:`check_run` at the top of
``simple_evaluate``.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.registry import get_model
from lm_eval.utils import simple_parse_args_string

from lm_eval_moe.model_wrappers.base import MoEHFLMBase


def model_class(model: Any) -> type[MoEHFLMBase] | None:
    """Our model class behind ``model`` (a registered name or a built model), or None for other models."""
    if isinstance(model, MoEHFLMBase):
        return type(model)
    if not isinstance(model, str):
        return None
    try:
        cls = get_model(model)
    except (KeyError, ValueError, ImportError):
        return None  # lm-eval reports an unknown or uninstalled model itself
    return cls if isinstance(cls, type) and issubclass(cls, MoEHFLMBase) else None


def check_run(model: Any, model_args: Any, gen_kwargs: Any) -> None:
    """Refuse ``gen_kwargs`` (a ``--gen_kwargs`` string or dict) that our model class would not honour under
    ``model_args``; other models are left to lm-eval."""
    if not gen_kwargs:
        return
    cls = model_class(model)
    if cls is None:
        return
    kwargs = simple_parse_args_string(gen_kwargs) if isinstance(gen_kwargs, str) else dict(gen_kwargs)
    if isinstance(model, MoEHFLMBase):
        args = dict(model.model_args)
    else:
        args = simple_parse_args_string(model_args) if isinstance(model_args, str) else dict(model_args or {})
    cls.check_gen_kwargs(kwargs, args)
