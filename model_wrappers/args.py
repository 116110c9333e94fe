"""Parsing of lm-eval ``--model_args`` values into typed settings, with errors that name the value.

``--model_args a=1,b=true`` reaches the model as Python values already converted by lm-eval
(ints, floats, bools, strings); JSON model args can also pass lists.
"""

from __future__ import annotations

from typing import Any


class ModelArgError(ValueError):
    """A model argument with a value outside what it accepts."""


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ModelArgError(f"model arg {name}={value!r}: expected true or false")


def parse_expert_count(value: Any) -> int | list[int] | None:
    """``expert_count``: an int (every MoE layer), a per-layer list (JSON model args, or
    colon-separated ``4:4:6:6`` since commas separate model args), or ``default``/None."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "default", "none")):
        return None
    if isinstance(value, bool):
        raise ModelArgError(f"model arg expert_count={value!r}: expected an integer or a per-layer list")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [parse_int("expert_count", v) for v in value]
    if isinstance(value, str):
        parts = value.replace(" ", "").split(":")
        counts = [parse_int("expert_count", p) for p in parts]
        return counts[0] if len(counts) == 1 else counts
    raise ModelArgError(f"model arg expert_count={value!r}: expected an integer or a per-layer list like 4:4:6:6")


def parse_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer") from None
    if not number.is_integer():
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer")
    return int(number)


def parse_renormalize(value: Any) -> bool | None:
    """``renormalize``: ``model`` (the family's own rule, default), ``true`` or ``false``."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "model"):
        return None
    try:
        return parse_bool("renormalize", value)
    except ModelArgError:
        raise ModelArgError(f"model arg renormalize={value!r}: expected model, true or false") from None


def parse_backend(value: Any) -> str:
    """``backend``: ``hf`` (transformers, default) or ``vllm``."""
    if value not in ("hf", "vllm"):
        raise ModelArgError(f"model arg backend={value!r}: expected hf or vllm")
    return value
