"""The model-arg grammar and the protocol of the settings objects that read it.

``--model_args a=1,b=true`` reaches a model as Python values already converted by lm-eval (ints, floats,
bools, strings; a negative int may arrive as a float); JSON model args can also pass lists. Every settings
object of the methods (``moe/settings.py``, ``search/settings.py``, ``reroute/settings.py``, ...) is a
:class:`ModelArgSettings`: it declares its fields with :func:`arg` (a parser, a one-line description, whether
the field needs another load of the model, whether it holds an expert count) and is read from the model args
by :meth:`ModelArgSettings.from_model_args`, before any checkpoint opens. So one grammar holds everywhere:
for k (``expert_count``: an int, per-layer ``4:4:6:6`` or a JSON list) and for K (``expert_counts``: ``4-11``,
``4|6|8``, a JSON list, per-layer sets ``4:4:6:6|8:8:8:8``); and the model classes only ask the settings.
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


def arg(default: Any, parse: Callable[[str, Any], Any], doc: str, *, load_time: bool = False,
        expert_counts: str | None = None) -> Any:
    """A settings field read from the model arg of the same name. ``load_time``: it decides what is loaded
    (a sweep cannot vary it on one loaded model); ``expert_counts``: it holds one k (``"k"``) or a set K
    (``"K"``) that must fit the model's routed experts."""
    metadata = {"parse": parse, "doc": doc, "load_time": load_time, "expert_counts": expert_counts}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ModelArgSettings:
    """The protocol every method's settings follow (see module docstring). ``given_args``: the model args the
    user gave, whatever their values (a value equal to the default is still an explicit choice)."""

    given_args: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_model_args(cls: type[T], model_args: dict[str, Any]) -> T:
        """The settings in ``model_args`` (their keys removed from it), validated."""
        return take_settings(cls, model_args)

    @classmethod
    def arg_names(cls) -> list[str]:
        return arg_names(cls)

    @classmethod
    def load_time_args(cls) -> set[str]:
        """Model args fixed by what was loaded: a sweep cannot vary them on one loaded model."""
        return {field.name for field in dataclasses.fields(cls) if field.metadata.get("load_time")}

    @classmethod
    def sweepable_args(cls) -> set[str]:
        return set(cls.arg_names()) - cls.load_time_args()

    @classmethod
    def describe_args(cls) -> list[tuple[str, Any, str]]:
        """(model arg, default, description) of every field: the model-arg reference is generated from this."""
        return [(field.name, field.default, field.metadata["doc"]) for field in dataclasses.fields(cls)
                if "parse" in field.metadata]

    def expert_count_args(self) -> list[tuple[str, list[ExpertCount]]]:
        """(model arg, the expert counts it gives) of every field holding k or K, as given."""
        found = []
        for field in dataclasses.fields(self):
            kind, value = field.metadata.get("expert_counts"), getattr(self, field.name)
            if kind and value is not None:
                found.append((field.name, [value] if kind == "k" else list(value)))
        return found

    def loaded_files(self) -> dict[str, Any]:
        """What the method loads besides the policy (a verifier, a reference set), by role: part of the run's
        identity (``lm_eval_moe/run_identity.py``), by content."""
        return {}

    def is_given(self, name: str) -> bool:
        """Whether the user gave the model arg ``name``."""
        return name in self.given_args


def take_settings(cls: type[T], model_args: dict[str, Any], prefix: str = "") -> T:
    """Build ``cls`` from the model args its fields name (``prefix`` + field name), removing them from
    ``model_args``; absent ones keep their defaults; the class validates the combination."""
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = prefix + field.name
        if "parse" in field.metadata and key in model_args:
            values[field.name] = field.metadata["parse"](key, model_args.pop(key))
    return cls(**values, given_args=frozenset(values))


def arg_names(cls: type, prefix: str = "") -> list[str]:
    return [prefix + field.name for field in dataclasses.fields(cls) if "parse" in field.metadata]


def near_misses(unknown: Iterable[str], accepted: Iterable[str]) -> str:
    """Each unknown name quoted, with the closest accepted one where a typo is likely."""
    accepted = sorted(accepted)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.75)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(hints)


def refuse_unknown(model_args: Iterable[str], accepted: Sequence[str], model_name: str) -> None:
    """An error naming every unknown model arg, the closest valid one, and the valid ones."""
    unknown = [name for name in model_args if name not in accepted]
    if unknown:
        raise ModelArgError(f"unknown model arg(s) for {model_name}: {near_misses(unknown, accepted)}. "
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


def expert_count_value(counts: Sequence[int]) -> int | list[int]:
    """A per-layer k as results record it: one int when every layer has the same k, else the list."""
    return counts[0] if len(set(counts)) == 1 else list(counts)


def expert_count_label(counts: Sequence[int]) -> str:
    """A per-layer k as people read it (and model args take it): ``"4"``, or ``"4:4:6:6"`` per layer."""
    return str(counts[0]) if len(set(counts)) == 1 else ":".join(map(str, counts))


def check_expert_count_range(counts: Iterable[ExpertCount], maximum: int, name: str) -> None:
    """Every k of ``counts`` (each one k or one per layer) is within 1..``maximum`` routed experts: the one
    range rule, applied before loading (from the config) and after (per layer)."""
    for count in counts:
        for k in count if isinstance(count, (list, tuple)) else (count,):
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= maximum:
                raise ModelArgError(f"model arg {name}: expert count {k!r} is out of range for this model: allowed "
                                    f"1..{maximum} routed experts, an integer (shared experts are always on)")


def per_layer(count: ExpertCount, layers: int, maximum: int, name: str) -> tuple[int, ...]:
    """One k per MoE layer, checked against the model: 1..``maximum`` routed experts, ``layers`` values."""
    values = (count,) * layers if isinstance(count, int) else tuple(count)
    if len(values) != layers:
        raise ModelArgError(f"model arg {name}: a per-layer expert count needs {layers} values (one per MoE "
                            f"layer), got {len(values)}")
    check_expert_count_range([values], maximum, name)
    return values
