"""Many evaluations on one loaded model: each point of a sweep changes only the method's settings
(``expert_count``, ``budget``, ``strategy``, ...), runs lm-eval's ``simple_evaluate`` on the model already in
memory and writes an ordinary lm-eval results folder (``results_*.json`` and, with ``log_samples``, the
sample files) that ``leaderboard``, ``regress`` and ``reproduce --report`` read like any other run.

A point is finished when its folder reports all its tasks AND holds the identity it was run with
(``run_identity.json``: the model's run identity, ``lm_eval_moe/run_identity.py``, plus the point's tasks,
limit, few-shot and generation settings, seeds and other lm-eval flags) equal to the point's identity now. A
point whose identity changed (a larger ``--limit``, new weights copied into the same checkpoint folder, an
edited package) is run again: its old folder is moved to ``<output>/_replaced/`` and the log names what
changed. Every point keeps its finished responses in ``<output>/_responses/<point>`` (the models'
``response_cache``, keyed on the same identity), so a killed sweep resumes where it stopped with the same
command.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval_moe.run_identity import checkpoint_identity, differences, model_identity

logger = logging.getLogger(__name__)


@dataclass
class Point:
    """One evaluation of a sweep."""

    name: str  # folder under the sweep's output
    overrides: dict[str, str]  # method settings of this point
    tasks: list[str]
    num_fewshot: int | None = None
    gen_kwargs: str | None = None
    limit: int | None = None
    include_path: list[str] = field(default_factory=list)
    lm_eval: dict[str, Any] = field(default_factory=dict)  # other simple_evaluate arguments


def _args_text(args: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in args.items())


IDENTITY_FILE = "run_identity.json"


def point_identity(model_class: Any, model_args: dict[str, str], point: Point) -> dict[str, Any]:
    """What a point's results depend on: the model's run identity under the point's settings, and its lm-eval
    evaluation (tasks and their own definitions, limit, few-shot, generation kwargs, seeds and flags)."""
    from lm_eval_moe.checkpoints import resolve_checkpoint

    settings_type = model_class.settings_type
    args = {**model_class.default_model_args, **model_args, **point.overrides}
    settings = settings_type.from_model_args({key: value for key, value in args.items()
                                             if key in settings_type.arg_names()})
    identity = model_identity(model_class.model_name, args, settings, resolve_checkpoint(args.get("pretrained")),
                              args.get("revision"), args.get("tokenizer"),
                              {role: resolve_checkpoint(name, role) for role, name in settings.loaded_files().items()})
    evaluation = {key: value for key, value in dataclasses.asdict(point).items() if key not in ("name", "overrides")}
    evaluation["include_path"] = [checkpoint_identity(path) for path in point.include_path]
    # what is logged is not what the numbers depend on: finished() asks for the samples files when they are wanted
    evaluation["lm_eval"] = {key: value for key, value in point.lm_eval.items() if key != "log_samples"}
    return {**identity, "evaluation": evaluation}


def finished(point: Point, output: Path, identity: dict[str, Any]) -> bool:
    """Its folder reports every one of its tasks and holds this identity. Results of another identity are moved
    aside (``<output>/_replaced/``), saying what changed: never kept as this point's."""
    folder = output / point.name
    reported: set[str] = set()
    for path in sorted(folder.rglob("results_*.json")):
        try:
            reported |= set(json.loads(path.read_text()).get("results", {}))
        except (json.JSONDecodeError, OSError):
            continue
    if not folder.exists() or not set(point.tasks) <= reported:
        return False
    if point.lm_eval.get("log_samples") and not any(folder.rglob("samples_*.jsonl")):
        stored = None  # finished without the samples now asked for: run again
    else:
        try:
            stored = json.loads((folder / IDENTITY_FILE).read_text())
        except (OSError, ValueError):
            stored = {}
        if stored == identity:
            return True
    changed = (["run without --log_samples, which are asked for now"] if stored is None else
               differences(stored, identity) if stored else ["no run_identity.json (run before identities were kept)"])
    replaced = output / "_replaced" / f"{point.name.replace('/', '_')}.{time.strftime('%Y%m%d-%H%M%S')}"
    replaced.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(replaced)
    logger.warning("sweep: point %s was run with another identity (%s): running it again; the old results are in %s",
                   point.name, "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else ""),
                   replaced)
    return False


def check_point(model_class: Any, model_args: dict[str, str], point: Point) -> None:
    """Refuse, before anything is loaded, a point that changes what was loaded or has a bad setting."""
    from lm_eval_moe.model_args import ModelArgError

    if not hasattr(model_class, "reconfigure"):
        raise ModelArgError(f"{model_class.__name__} is not one of lm_eval_moe's models: a sweep needs one")
    settings_type = model_class.settings_type
    runtime = settings_type.sweepable_args()
    fixed = sorted(set(point.overrides) - runtime)
    if fixed:
        raise ModelArgError(f"point {point.name}: {', '.join(fixed)} need their own load (settings a sweep can "
                            f"vary: {', '.join(sorted(runtime))})")
    from lm_eval_moe.checkpoints import resolve_checkpoint
    from lm_eval_moe.moe.families import check_checkpoint_config

    args = {**model_class.default_model_args, **model_args, **point.overrides}
    settings = settings_type.from_model_args({k: v for k, v in args.items() if k in settings_type.arg_names()})
    check_checkpoint_config(resolve_checkpoint(model_args.get("pretrained")), model_args, settings)


def run_points(model: str, model_args: dict[str, str], points: list[Point], output: Path) -> list[Path]:
    """Load ``model`` once with ``model_args`` and evaluate every unfinished point; returns the folders written."""
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    model_class = get_model(model)
    for point in points:
        check_point(model_class, model_args, point)
    identities = {point.name: point_identity(model_class, model_args, point) for point in points}
    todo = [point for point in points if not finished(point, output, identities[point.name])]
    logger.info("sweep: %d of %d points finished before with the same identity, %d to run",
                len(points) - len(todo), len(points), len(todo))
    if not todo:
        return []
    lm = model_class(**model_args)
    logger.info("sweep: %s loaded once for %d points", model, len(todo))
    written = []
    for number, point in enumerate(todo, 1):
        logger.info("sweep: point %d/%d %s (%s)", number, len(todo), point.name, _args_text(point.overrides) or "as loaded")
        lm.reconfigure(point.overrides, response_cache=str(output / "_responses" / point.name))
        folder = output / point.name
        tracker = EvaluationTracker(output_path=str(folder))
        manager = TaskManager(include_path=point.include_path or None, metadata=point.lm_eval.get("metadata"))
        evaluate_args = {k: v for k, v in point.lm_eval.items() if k != "metadata"}
        results = simple_evaluate(
            model=lm, model_args=_args_text({**model_args, **point.overrides}), tasks=point.tasks,
            num_fewshot=point.num_fewshot, gen_kwargs=point.gen_kwargs, limit=point.limit, task_manager=manager,
            evaluation_tracker=tracker, **evaluate_args,
        )
        if results is None:  # a data-parallel rank other than 0
            continue
        samples = results.pop("samples", None)
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"] if samples else []:
            tracker.save_results_samples(task_name=task, samples=samples[task])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / IDENTITY_FILE).write_text(json.dumps(identities[point.name], indent=1, sort_keys=True, default=str))
        written.append(folder)
    return written
