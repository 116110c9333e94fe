"""Reproduction recipes: one YAML per table of a paper, expanded into lm_eval runs.

A recipe names *dimensions* (e.g. model, verifier, method, task), each a mapping from a value's name to
its settings; every combination (minus ``exclude``) is one run, its settings merged in dimension order:

    name: reroute_table1
    title: ...
    source: Su et al. 2025, "Rewiring Experts on the Fly", Table 1
    metric_scale: 100                  # published numbers are percentages
    dimensions:
      model:  {olmoe: {args: {pretrained: allenai/OLMoE-1B-7B-0924-Instruct}}}
      method: {baseline: {model: moe_hf}, rerouting: {model: moe_reroute, args: {steps: 5}}}
      task:   {GSM8K: {task: moe_gsm8k, metric: exact_match}}
    published: {olmoe/baseline/GSM8K: 51.48}      # keyed by run id: the values joined by "/"
                                                  # (run_id#metric when a run reports several metrics)
    our_choices: [settings the paper leaves open, as we chose them]

Settings of a value: ``model`` (lm_eval model class), ``args`` (model args, merged), ``task``, ``metric``
(a name, or a list of names read from the same run),
``num_fewshot``, ``gen_kwargs`` (lm_eval --gen_kwargs string), ``repeats`` (a task variant is written),
``lm_eval`` (extra lm_eval flags, merged), ``prepare`` (``command`` and ``creates``: a step run once
before the run when the file it creates is missing; ``{field}`` placeholders are filled from the run),
``fields`` (extra placeholders for ``prepare``, merged; e.g. the task C3PO's references come from).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SETTING_KEYS = {"model", "args", "task", "metric", "num_fewshot", "gen_kwargs", "repeats", "lm_eval", "prepare", "fields",
                "note"}
MERGED_KEYS = ("args", "lm_eval", "fields")


class RecipeError(ValueError):
    """A recipe that cannot be expanded (the message names the file and the problem)."""


@dataclass(frozen=True)
class RunSpec:
    """One lm_eval run of a recipe."""

    run_id: str  # dimension values joined by "/"
    values: dict[str, str]  # dimension -> value name
    model: str
    model_args: dict[str, Any]
    task: str
    metrics: tuple[str | None, ...]
    num_fewshot: int | None = None
    gen_kwargs: str | None = None
    repeats: int | None = None
    lm_eval: dict[str, Any] = field(default_factory=dict)
    prepare: dict[str, str] | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def row_ids(self) -> list[tuple[str, str | None]]:
        """(row id, metric) of each number this run reports: the run id, or run_id#metric for several."""
        if len(self.metrics) == 1:
            return [(self.run_id, self.metrics[0])]
        return [(f"{self.run_id}#{metric}", metric) for metric in self.metrics]


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str
    path: Path
    dimensions: dict[str, dict[str, dict[str, Any]]]
    published: dict[str, float]
    metric_scale: float
    our_choices: list[str]
    exclude: list[dict[str, str]]

    def runs(self) -> list[RunSpec]:
        names = list(self.dimensions)
        specs = []
        for combination in itertools.product(*(self.dimensions[d].items() for d in names)):
            values = {d: value for d, (value, _) in zip(names, combination)}
            if any(all(values.get(k) == v for k, v in rule.items()) for rule in self.exclude):
                continue
            merged: dict[str, Any] = {key: {} for key in MERGED_KEYS}
            for _, settings in combination:
                for key, value in settings.items():
                    if key in MERGED_KEYS:
                        merged[key] = {**merged[key], **value}
                    else:
                        merged[key] = value
            run_id = "/".join(values[d] for d in names)
            for required in ("model", "task"):
                if not merged.get(required):
                    raise RecipeError(f"{self.path}: run {run_id} has no {required!r} (set it in one dimension)")
            specs.append(RunSpec(
                run_id=run_id, values=values, model=merged["model"], model_args=merged["args"], task=merged["task"],
                metrics=_metrics(merged.get("metric")), num_fewshot=merged.get("num_fewshot"), gen_kwargs=merged.get("gen_kwargs"),
                repeats=merged.get("repeats"), lm_eval=merged["lm_eval"], prepare=merged.get("prepare"),
                fields=merged["fields"],
            ))
        unknown = sorted(set(self.published) - {row for s in specs for row, _ in s.row_ids()})
        if unknown:
            raise RecipeError(f"{self.path}: published numbers for runs the recipe does not have: {', '.join(unknown)}")
        return specs


def _metrics(value: str | list[str] | None) -> tuple[str | None, ...]:
    if isinstance(value, list) and value:
        return tuple(str(v) for v in value)
    return (None if value is None else str(value),)


def recipes_dir() -> Path:
    return Path(str(resources.files("lm_eval_moe.recipes")))


def available() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def _check_dimension(path: Path, name: str, values: Any) -> None:
    if not isinstance(values, dict) or not values:
        raise RecipeError(f"{path}: dimension {name!r} must map value names to settings")
    for value, settings in values.items():
        if not isinstance(settings, dict):
            raise RecipeError(f"{path}: {name}.{value} must be a mapping of settings")
        unknown = set(settings) - SETTING_KEYS
        if unknown:
            raise RecipeError(f"{path}: {name}.{value} has unknown setting(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {', '.join(sorted(SETTING_KEYS))}")
        if "/" in str(value):
            raise RecipeError(f"{path}: value name {value!r} of {name!r} must not contain '/'")
        for key in MERGED_KEYS:
            if key in settings and not isinstance(settings[key], dict):
                raise RecipeError(f"{path}: {name}.{value}.{key} must be a mapping")


def load_recipe(name_or_path: str) -> Recipe:
    """A shipped recipe by name (``lm-eval-moe reproduce --list``) or a recipe file."""
    path = Path(name_or_path)
    if not path.is_file():
        path = recipes_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise RecipeError(f"no recipe {name_or_path!r}: not a file, and not one of {', '.join(available())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("dimensions"), dict) or not data["dimensions"]:
        raise RecipeError(f"{path}: a recipe needs a 'dimensions' mapping")
    for name, values in data["dimensions"].items():
        _check_dimension(path, name, values)
    published = data.get("published") or {}
    if not isinstance(published, dict) or not all(isinstance(v, (int, float)) for v in published.values()):
        raise RecipeError(f"{path}: 'published' must map run ids to numbers")
    exclude = data.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(rule, dict) for rule in exclude):
        raise RecipeError(f"{path}: 'exclude' must be a list of {{dimension: value}} mappings")
    return Recipe(
        name=str(data.get("name") or path.stem), title=str(data.get("title") or path.stem),
        source=str(data.get("source") or "none (no published numbers)"), path=path, dimensions=data["dimensions"],
        published={str(k): float(v) for k, v in published.items()}, metric_scale=float(data.get("metric_scale", 1)),
        our_choices=[str(c) for c in data.get("our_choices") or []], exclude=exclude,
    )
