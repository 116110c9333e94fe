"""Turning a recipe's runs into lm_eval command lines, task variants, and "is it done?" checks.

Each run writes to ``<output>/<run id>/`` (lm-eval's --output_path); a run is finished when a results
file there reports its task, so rerunning a recipe resumes where it stopped. ``repeats`` cannot be set
from lm_eval's command line: a variant task YAML (``include:`` of the shipped one, plus ``repeats``) is
written to ``<output>/_tasks/`` and passed with --include_path.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from lm_eval_moe.reproduce.recipe import RecipeError, RunSpec


def shipped_task_file(task: str) -> Path:
    """The YAML file of one of our tasks."""
    import lm_eval_moe.tasks

    root = Path(lm_eval_moe.tasks.__file__).parent
    for path in root.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if line.strip() == f"task: {task}":
                return path
    raise RecipeError(f"task {task!r} is not one of lm_eval_moe's tasks (a variant with repeats needs one)")


def runs_model_code(task: str) -> bool:
    """The task (or a YAML it includes) is marked ``unsafe_code``: its programs run in the sandbox and lm_eval
    wants ``--confirm_run_unsafe_code``. Groups and unknown tasks are looked up as ``False``."""
    try:
        path: Path | None = shipped_task_file(task)
    except RecipeError:
        return False
    seen = set()
    while path is not None and path not in seen:
        seen.add(path)
        lines = [line.strip() for line in path.read_text().splitlines()]
        if "unsafe_code: true" in lines:
            return True
        include = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("include:")), None)
        path = (path.parent / include).resolve() if include else None
    return False


def task_name(spec: RunSpec) -> str:
    return f"{spec.task}_x{spec.repeats}" if spec.repeats else spec.task


def write_task_variant(spec: RunSpec, output: Path) -> Path | None:
    """The --include_path folder holding the run's task variant, if it needs one."""
    if not spec.repeats:
        return None
    folder = output / "_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    text = (f"# written by lm-eval-moe reproduce: {spec.task} with repeats={spec.repeats}\n"
            f"include: {shipped_task_file(spec.task)}\ntask: {task_name(spec)}\nrepeats: {spec.repeats}\n")
    (folder / f"{task_name(spec)}.yaml").write_text(text)
    return folder


def _model_args(args: dict) -> str:
    parts = []
    for key, value in args.items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value).lower() if isinstance(value, bool) else str(value)
        if "," in text and not isinstance(value, (list, dict)):
            raise RecipeError(f"model arg {key}={text!r} contains a comma, which lm_eval's --model_args cannot carry")
        parts.append(f"{key}={text}")
    return ",".join(parts)


def fill(template: str, spec: RunSpec, output: Path) -> str:
    fields = {**{k: str(v) for k, v in spec.model_args.items()}, **spec.values, **spec.fields, "output": str(output),
              "run_id": spec.run_id.replace("/", "_"), "task": spec.task}
    try:
        return template.format(**fields)
    except KeyError as error:
        raise RecipeError(f"run {spec.run_id}: placeholder {error} is not a field of the run "
                          f"({', '.join(sorted(fields))})") from None


def lm_eval_command(spec: RunSpec, output: Path, limit: int | None, launcher: list[str]) -> list[str]:
    args = {key: fill(value, spec, output) if isinstance(value, str) else value for key, value in spec.model_args.items()}
    command = [*launcher, "--model", spec.model, "--model_args", _model_args(args), "--tasks", task_name(spec),
               "--output_path", str(output / spec.run_id), "--log_samples"]
    if spec.num_fewshot is not None:
        command += ["--num_fewshot", str(spec.num_fewshot)]
    if spec.gen_kwargs:
        command += ["--gen_kwargs", spec.gen_kwargs]
    if spec.repeats:
        command += ["--include_path", str(output / "_tasks")]
    if runs_model_code(spec.task):
        command.append("--confirm_run_unsafe_code")
    if limit is not None:
        command += ["--limit", str(limit)]
    for flag, value in spec.lm_eval.items():
        if value is True:
            command.append(f"--{flag}")
        elif value not in (None, False):
            command += [f"--{flag}", str(value)]
    return command


def prepare_command(spec: RunSpec, output: Path) -> tuple[list[str], Path] | None:
    """The run's preparation step and the file it creates (None: nothing to prepare)."""
    if not spec.prepare:
        return None
    if not {"command", "creates"} <= set(spec.prepare):
        raise RecipeError(f"run {spec.run_id}: prepare needs 'command' and 'creates'")
    return shlex.split(fill(spec.prepare["command"], spec, output)), Path(fill(spec.prepare["creates"], spec, output))


def results_files(spec: RunSpec, output: Path) -> list[Path]:
    """This run's results files that report its task, newest last."""
    folder = output / spec.run_id
    found = []
    for path in sorted(folder.rglob("results_*.json")) if folder.is_dir() else []:
        try:
            if task_name(spec) in json.loads(path.read_text()).get("results", {}):
                found.append(path)
        except (json.JSONDecodeError, OSError):
            continue  # an interrupted write: the run is not finished
    return found


def shell_line(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


#: lm_eval flags a sweep of one loaded model can take: given to the model's load, or to each evaluation
LOAD_FLAGS = ("device", "batch_size", "max_batch_size")
EVALUATE_FLAGS = ("apply_chat_template", "fewshot_as_multiturn", "system_instruction", "seed")


def _evaluate_arguments(flags: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for flag, value in flags.items():
        if flag == "seed":  # lm_eval --seed: one value for all four seeds, or four comma-separated
            seeds = [int(part) for part in str(value).split(",")]
            seeds = seeds * 4 if len(seeds) == 1 else seeds
            arguments.update(zip(("random_seed", "numpy_random_seed", "torch_random_seed", "fewshot_random_seed"), seeds))
        else:
            arguments[flag] = value
    return arguments


def sweep_groups(specs: list[RunSpec], output: Path, limit: int | None) -> tuple[list[dict], list[RunSpec]]:
    """Plans of ``lm-eval-moe sweep`` for runs that share one model load (same model class, checkpoint and
    other load-time args, same lm_eval flags; at least two runs), and the runs left to run alone."""
    from lm_eval.api.registry import get_model

    groups: dict[str, list[tuple[RunSpec, dict[str, str], dict[str, str]]]] = {}
    alone = []
    for spec in specs:
        model_class = get_model(spec.model)
        args = {key: fill(value, spec, output) if isinstance(value, str) else str(value).lower()
                if isinstance(value, bool) else str(value) for key, value in spec.model_args.items()}
        if not hasattr(model_class, "reconfigure") or set(spec.lm_eval) - set(LOAD_FLAGS) - set(EVALUATE_FLAGS):
            alone.append(spec)
            continue
        runtime = model_class.settings_type.sweepable_args()
        load = {key: value for key, value in args.items() if key not in runtime}
        load.update({flag: str(spec.lm_eval[flag]) for flag in LOAD_FLAGS if flag in spec.lm_eval})
        evaluate = {flag: spec.lm_eval[flag] for flag in EVALUATE_FLAGS if flag in spec.lm_eval}
        key = json.dumps([spec.model, load, evaluate], sort_keys=True)
        groups.setdefault(key, []).append((spec, load, {k: v for k, v in args.items() if k in runtime}))
    plans = []
    for members in groups.values():
        if len(members) < 2:
            alone += [spec for spec, _, _ in members]
            continue
        spec, load, _ = members[0]
        points = [{
            "name": member.run_id, "overrides": overrides, "tasks": [task_name(member)],
            "num_fewshot": member.num_fewshot, "gen_kwargs": member.gen_kwargs, "limit": limit,
            "include_path": [str(output / "_tasks")] if member.repeats else [],
            "lm_eval": {"log_samples": True, "confirm_run_unsafe_code": runs_model_code(member.task),
                        **_evaluate_arguments({f: member.lm_eval[f] for f in EVALUATE_FLAGS if f in member.lm_eval})},
        } for member, _, overrides in members]
        plans.append({"model": spec.model, "model_args": load, "output": str(output), "points": points,
                      "runs": [member.run_id for member, _, _ in members]})
    return plans, alone
