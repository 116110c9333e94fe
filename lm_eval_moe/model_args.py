"""The model-arg grammar: lm-eval ``--model_args`` values into typed settings, with errors that name the value.

``--model_args a=1,b=true`` reaches a model as Python values already converted by lm-eval (ints, floats,
bools, strings; a negative int may arrive as a float); JSON model args can also pass lists. Every settings
object of the methods (``moe/settings.py``, ``search/settings.py``, ``reroute/settings.py``, ...) declares its
fields with :func:`arg` (a parser and a one-line description) and is built by :func:`take_settings`, so one
grammar holds everywhere: for k (``expert_count``: an int, per-layer ``4:4:6:6`` or a JSON list) and for K
(``expert_counts``: ``4-11``, ``4|6|8``, a JSON list, per-layer sets ``4:4:6:6|8:8:8:8``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

ExpertCount = int | tuple[int, ...]  # one k for every MoE layer, or one per layer
T = TypeVar("T")


class ModelArgError(ValueError):
    """A model argument that is unknown, or has a value outside what it accepts."""


def arg(default: Any, parse: Callable[[str, Any], Any], doc: str) -> Any:
    """A settings field read from the model arg of the same name."""
    return dataclasses.field(default=default, metadata={"parse": parse, "doc": doc})


def take_settings(cls: type[T], model_args: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from the model args its fields name (``prefix`` + field name), removing them from
    ``model_args``; absent ones keep their defaults; the class validates the combination."""
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = prefix + field.name
        if "parse" in field.metadata and key in model_args:
            values[field.name] = field.metadata["parse"](key, model_args.pop(key))
    return cls(**values)


def arg_names(cls: type, prefix: str = "") -> list[str]:
    return [prefix + field.name for field in dataclasses.fields(cls) if "parse" in field.metadata]


def given(settings: Any, name: str) -> bool:
    """Whether the user set ``name`` (it differs from the field's default)."""
    field = next(f for f in dataclasses.fields(settings) if f.name == name)
    return getattr(settings, name) != field.default


def refuse_unknown(model_args: Iterable[str], accepted: Sequence[str], model_name: str) -> None:
    """An error naming every unknown model arg, the closest valid one, and the valid ones."""
    unknown = [name for name in model_args if name not in accepted]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.75)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ModelArgError(f"unknown model arg(s) for {model_name}: {', '.join(hints)}. "
                        f"Valid model args: {', '.join(sorted(accepted))}")


# ---------------------------------------------------------------- scalars


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ModelArgError(f"model arg {name}={value!r}: expected true or false")


def parse_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer") from None
    if not number.is_integer():
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer")
    if minimum is not None and number < minimum:
        raise ModelArgError(f"model arg {name}={value!r}: must be an integer >= {minimum}")
    return int(number)


def positive_int(name: str, value: Any) -> int:
    return parse_int(name, value, minimum=1)


def optional_positive_int(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return positive_int(name, value)


def parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ModelArgError(f"model arg {name}={value!r}: expected a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelArgError(f"model arg {name}={value!r}: expected a number") from None


def optional_float(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return parse_float(name, value)


def optional_text(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return str(value)


def text(name: str, value: Any) -> str:
    return str(value)


def choice(*allowed: str) -> Callable[[str, Any], str]:
    """A parser accepting one of ``allowed``."""
    def parse(name: str, value: Any) -> str:
        if str(value) not in allowed:
            raise ModelArgError(f"model arg {name}={value!r}: expected one of {', '.join(allowed)}")
        return str(value)

    return parse


def parse_renormalize(name: str, value: Any) -> bool | None:
    """``model`` (the family's own rule), ``true`` or ``false``."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "model"):
        return None
    try:
        return parse_bool(name, value)
    except ModelArgError:
        raise ModelArgError(f"model arg {name}={value!r}: expected model, true or false") from None


# ---------------------------------------------------------------- k and K


def parse_expert_count(name: str, value: Any) -> ExpertCount | None:
    """k: an int (every MoE layer), a per-layer list (JSON model args, or colon-separated ``4:4:6:6`` since
    commas separate model args), or ``default``/None (the model's own k)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "default", "none")):
        return None
    if isinstance(value, bool):
        raise ModelArgError(f"model arg {name}={value!r}: expected an integer or a per-layer list like 4:4:6:6")
    if isinstance(value, (list, tuple)):
        counts = tuple(positive_int(name, v) for v in value)
        return counts[0] if len(counts) == 1 else counts
    if isinstance(value, (int, float)):
        return positive_int(name, value)
    if isinstance(value, str):
        if value.strip().startswith("["):
            return parse_expert_count(name, _json(name, value))
        counts = tuple(positive_int(name, part) for part in value.replace(" ", "").split(":"))
        return counts[0] if len(counts) == 1 else counts
    raise ModelArgError(f"model arg {name}={value!r}: expected an integer or a per-layer list like 4:4:6:6")


def parse_expert_count_set(name: str, value: Any) -> tuple[ExpertCount, ...] | None:
    """K, the expert counts DES searches: ``4-11`` (a range), ``4|6|8`` or ``4;6;8`` (commas separate model
    args), a JSON list, per-layer members ``4:4:6:6|8:8:8:8``; each member in the grammar of k."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "default")):
        return None
    if isinstance(value, str) and value.strip().startswith("["):
        value = _json(name, value)
    if isinstance(value, (list, tuple)):
        members = list(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        members = [value]
    else:
        spec = str(value).replace(" ", "")
        if "-" in spec and not any(mark in spec for mark in "|;:"):
            low, high = (positive_int(name, part) for part in spec.split("-", 1))
            if low > high:
                raise ModelArgError(f"model arg {name}={value!r}: the range {low}-{high} is empty")
            members = list(range(low, high + 1))
        else:
            members = [part for part in spec.replace(";", "|").split("|") if part]
    counts = tuple(parse_expert_count(name, member) for member in members)
    if not counts or any(count is None for count in counts):
        raise ModelArgError(f"model arg {name}={value!r}: expected expert counts like 4-11, 4|6|8 or 4:4:6:6|8:8:8:8")
    if len(set(counts)) != len(counts):
        raise ModelArgError(f"model arg {name}={value!r}: an expert count appears twice")
    return counts  # type: ignore[return-value]


def _json(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ModelArgError(f"model arg {name}={value!r}: not valid JSON") from None


def per_layer(count: ExpertCount, layers: int, maximum: int, name: str) -> tuple[int, ...]:
    """One k per MoE layer, checked against the model: 1..``maximum`` routed experts, ``layers`` values."""
    values = (count,) * layers if isinstance(count, int) else tuple(count)
    if len(values) != layers:
        raise ModelArgError(f"model arg {name}: a per-layer expert count needs {layers} values (one per MoE "
                            f"layer), got {len(values)}")
    for k in values:
        if not 1 <= k <= maximum:
            raise ModelArgError(f"model arg {name}: expert count {k} is out of range for this model: allowed "
                                f"1..{maximum} routed experts (shared experts are always on)")
    return values
