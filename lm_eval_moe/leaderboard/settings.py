"""The settings a leaderboard row was run with, in one short label: strategy, k (or the set K), N, M, verifier,
rerouting and temperature, so that runs of one method at different settings are told apart at a glance."""

from __future__ import annotations

from typing import Any

from lm_eval_moe.model_args import expert_count_label
from lm_eval_moe.search.strategies import STRATEGIES


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def temperatures(settings: dict[str, Any], task_config: dict[str, Any], gen_kwargs: Any) -> list[float]:
    """The sampling temperatures of a run's task: what our models recorded generating with, else the task's
    generation kwargs with the run's ``--gen_kwargs`` over them (greedy decoding is 0)."""
    recorded = settings.get("generation")
    if isinstance(recorded, list) and recorded:
        found = {float(entry.get("temperature", 0.0)) if entry.get("do_sample", True) else 0.0
                 for entry in recorded if isinstance(entry, dict)}
        return sorted(found)
    kwargs = dict(task_config.get("generation_kwargs") or {})
    if isinstance(gen_kwargs, dict):
        kwargs.update(gen_kwargs)
    elif isinstance(gen_kwargs, str):
        kwargs.update(part.split("=", 1) for part in gen_kwargs.split(",") if "=" in part)
    if str(kwargs.get("do_sample", False)).lower() not in ("true", "1"):
        return [0.0]
    try:
        return [float(kwargs.get("temperature", 1.0))]
    except ValueError:
        return []


def settings_label(settings: dict[str, Any], temperature: list[float]) -> str:
    """``settings``: a results file's ``config.lm_eval_moe`` (empty for lm-eval's own models)."""
    parts = []
    strategy = settings.get("strategy")
    spec = STRATEGIES.get(str(strategy))
    if spec is not None:
        parts.append(str(strategy))
        if "expert_counts" in spec.uses and settings.get("expert_counts"):
            parts.append("K={" + ",".join(map(str, settings["expert_counts"])) + "}")
        elif settings.get("expert_count"):
            parts.append(f"k={expert_count_label(settings['expert_count'])}")
        parts.append(f"N={settings.get('budget')}")
        if "keep" in spec.uses:
            parts.append(f"M={settings.get('keep')}")
        parts.append(f"verifier={settings.get('verifier')}")
    elif settings.get("expert_count"):
        default = settings.get("default_expert_count")
        label = expert_count_label(settings["expert_count"])
        parts.append(f"k={label}" + (" (default)" if settings["expert_count"] == default else ""))
    reroute = settings.get("reroute") if isinstance(settings.get("reroute"), dict) else (
        settings if settings.get("model_class") == "moe_reroute" else None)
    if reroute:
        parts.append(f"reroute {reroute.get('steps')} steps/{reroute.get('interval')} tokens, lr={_number(reroute.get('lr'))}")
    if settings.get("model_class") == "moe_c3po":
        parts.append("C3PO")
    if temperature:
        parts.append("T=" + "/".join(_number(value) for value in temperature))
    return ", ".join(parts)
