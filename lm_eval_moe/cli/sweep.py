"""Sweep a method's settings on one loaded model: each combination is an ordinary lm-eval results folder.

    lm-eval-moe sweep --model moe_hf --model_args pretrained=tiny-arith-moe --grid expert_count=1,2,3,4 \\
        --tasks moe_demo_arith --limit 50 --device cpu --log_samples --output_path results/k_sweep
    lm-eval-moe sweep --model moe_search --model_args pretrained=...,verifier=... \\
        --grid strategy=best_of_n,beam --grid budget=4,8,16 --tasks moe_math500 --output_path results/budget
    lm-eval-moe sweep --plan plan.json        # the points written by `reproduce` (one per run of a group)

The model (and its PRM) is loaded once; every point changes only settings that need no new load (the
method's settings: not the checkpoint, dtype, backend, verifier or renormalisation). Points write to
``<output>/<name>/`` (name: ``setting-value_...``); a finished point is skipped and an interrupted one
resumes from its response cache, so rerunning the same command finishes the sweep.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="one of our lm-eval models (moe_hf, moe_des, moe_search, moe_reroute, moe_c3po)")
    parser.add_argument("--model_args", default="", help="model args of the load (lm_eval's format)")
    parser.add_argument("--device", default=None,
                        help="as lm_eval's --device (cuda, cuda:0, cpu, mps); default: the GPU if there is one, else the CPU")
    parser.add_argument("--batch_size", default=None, help="as lm_eval's --batch_size (an int or auto); default 1")
    parser.add_argument("--grid", action="append", default=[], metavar="SETTING=V1,V2,...",
                        help="values of one method setting (repeatable: the grid is their product)")
    parser.add_argument("--tasks", default=None, help="comma-separated tasks")
    parser.add_argument("--output_path", default=None, help="the sweep's folder")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--num_fewshot", type=int, default=None)
    parser.add_argument("--gen_kwargs", default=None)
    parser.add_argument("--include_path", action="append", default=[])
    parser.add_argument("--log_samples", action="store_true")
    parser.add_argument("--apply_chat_template", action="store_true")
    parser.add_argument("--fewshot_as_multiturn", action="store_true")
    parser.add_argument("--system_instruction", default=None)
    parser.add_argument("--confirm_run_unsafe_code", action="store_true")
    parser.add_argument("--plan", default=None, help="a JSON plan (model, model_args, output, points) instead of a grid")


def _parse_args(text: str) -> dict[str, str]:
    args = {}
    for part in filter(None, text.split(",")):
        key, separator, value = part.partition("=")
        if not separator:
            raise SystemExit(f"--model_args: {part!r} is not NAME=VALUE")
        args[key.strip()] = value.strip()
    return args


def grid_points(grid: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(folder name, settings) of every combination of the ``--grid`` values, in order."""
    axes = []
    for rule in grid:
        name, separator, values = rule.partition("=")
        if not separator or not values:
            raise SystemExit(f"--grid {rule!r}: expected SETTING=V1,V2,...")
        axes.append([(name.strip(), value.strip()) for value in values.split(",")])
    names = [axis[0][0] for axis in axes]
    if len(set(names)) != len(names):
        raise SystemExit(f"--grid names a setting twice: {', '.join(names)}")
    return [("_".join(f"{n}-{v}" for n, v in combo) or "as_loaded", dict(combo)) for combo in itertools.product(*axes)]


def _plan_from_arguments(args: argparse.Namespace) -> dict:
    if not (args.model and args.tasks and args.output_path):
        raise SystemExit("sweep needs --model, --tasks and --output_path (or --plan)")
    lm_eval = {"log_samples": args.log_samples, "apply_chat_template": args.apply_chat_template,
               "fewshot_as_multiturn": args.fewshot_as_multiturn, "system_instruction": args.system_instruction,
               "confirm_run_unsafe_code": args.confirm_run_unsafe_code}
    points = [{"name": name, "overrides": overrides, "tasks": args.tasks.split(","), "num_fewshot": args.num_fewshot,
               "gen_kwargs": args.gen_kwargs, "limit": args.limit, "include_path": args.include_path, "lm_eval": lm_eval}
              for name, overrides in grid_points(args.grid)]
    model_args = _parse_args(args.model_args)
    for flag in ("device", "batch_size"):  # given to the load, as lm_eval does (a model arg of the same name wins)
        if getattr(args, flag) is not None:
            model_args.setdefault(flag, str(getattr(args, flag)))
    return {"model": args.model, "model_args": model_args, "output": args.output_path, "points": points}


def run(args: argparse.Namespace) -> int:
    from lm_eval_moe.model_args import ModelArgError
    from lm_eval_moe.reproduce.sweep import Point, run_points

    plan = json.loads(Path(args.plan).read_text()) if args.plan else _plan_from_arguments(args)
    points = [Point(**point) for point in plan["points"]]
    try:
        written = run_points(plan["model"], plan["model_args"], points, Path(plan["output"]))
    except ModelArgError as error:
        print(f"error: {error}")
        return 2
    print(f"sweep: {len(written)} of {len(points)} point(s) written this time -> {plan['output']}")
    return 0
