"""Reproduce a paper's table: expand a recipe into lm_eval runs, run or list them, and print our numbers
beside the published ones.

    lm-eval-moe reproduce --list
    lm-eval-moe reproduce reroute_table1 --dry-run                 # the exact commands, nothing runs
    lm-eval-moe reproduce reroute_table1 --only model=olmoe        # run a slice (resumes finished runs)
    lm-eval-moe reproduce des_main --jobs jobs.txt                 # one line per run, for a scheduler
    lm-eval-moe reproduce des_main --report                        # the table from what has finished
    lm-eval-moe reproduce demo --limit 50                          # the tiny shipped models, offline

Runs write to ``<output>/<run id>/``; a run whose results were produced with its identity now (weights, code,
settings, limit: ``lm_eval_moe/run_identity.py``) is skipped (a run in an lm_eval process of its own: when its
results are there). Runs that share a model load
(same model, checkpoint, PRM and other load-time args, same lm_eval flags) go to one ``lm-eval-moe sweep``
(its plan in ``<output>/_plans/``): the model and its PRM are loaded once for all of them, and the sweep
resumes from its response caches. ``--launcher`` replaces ``python -m lm_eval`` (e.g. ``"accelerate launch
--multi_gpu --num_processes 8 -m lm_eval"``); with it, or with ``--one-run-per-process``, every run is its
own lm_eval process.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="a shipped recipe name (see --list) or a recipe YAML file")
    parser.add_argument("--list", action="store_true", help="list the shipped recipes")
    parser.add_argument("--output", default=None, help="results root (default: results/recipes/<name>[-limitN])")
    parser.add_argument("--limit", type=int, default=None, help="lm_eval --limit for every run (a quick look)")
    parser.add_argument("--only", action="append", default=[], metavar="DIM=VALUE[,VALUE]",
                        help="keep the runs with these dimension values (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    parser.add_argument("--jobs", default=None, help="write the unfinished runs, one shell line each, to this file")
    parser.add_argument("--report", action="store_true", help="only print the table of what has finished")
    parser.add_argument("--launcher", default=None, help='command replacing "python -m lm_eval" (one process per run)')
    parser.add_argument("--one-run-per-process", action="store_true",
                        help="one lm_eval process per run instead of one sweep per model load")


def _select(specs, only: list[str]):
    for rule in only:
        dimension, _, values = rule.partition("=")
        wanted = set(values.split(","))
        if not values or not any(dimension in s.values for s in specs):
            raise ValueError(f"--only {rule!r}: expected DIM=VALUE with DIM one of the recipe's dimensions")
        specs = [s for s in specs if s.values.get(dimension) in wanted]
    return specs


def _print_list() -> int:
    from lm_eval_moe.reproduce.recipe import available, load_recipe

    for name in available():
        recipe = load_recipe(name)
        print(f"{name:24s} {len(recipe.runs()):4d} runs  {recipe.title}")
    return 0


def run(args: argparse.Namespace) -> int:
    from lm_eval_moe.reproduce.commands import (
        lm_eval_command, prepare_command, results_files, shell_line, sweep_groups, write_task_variant,
    )
    from lm_eval_moe.reproduce.recipe import RecipeError, load_recipe
    from lm_eval_moe.reproduce.report import markdown, report_rows, to_csv

    if args.list:
        return _print_list()
    if not args.recipe:
        print("error: name a recipe (see --list)")
        return 2
    try:
        recipe = load_recipe(args.recipe)
        specs = _select(recipe.runs(), args.only)
    except (RecipeError, ValueError) as error:
        print(f"error: {error}")
        return 2
    output = Path(args.output or f"results/recipes/{recipe.name}" + (f"-limit{args.limit}" if args.limit else ""))
    launcher = shlex.split(args.launcher) if args.launcher else [sys.executable, "-m", "lm_eval"]
    print(f"recipe {recipe.name}: {recipe.title}\n  source: {recipe.source}\n  {len(specs)} run(s) -> {output}")
    pending = [s for s in specs if not results_files(s, output)]
    if not args.report:
        lines = []
        grouped = not (args.launcher or args.one_run_per_process)
        # grouped runs go to their sweep whether or not results are there: the sweep keeps a point only when its
        # results were produced with the point's identity now (same weights, code, settings, limit)
        plans, alone = sweep_groups([s for s in specs if not s.prepare], output, args.limit) if grouped else ([], [])
        single = {s.run_id for s in alone} | {s.run_id for s in pending if s.prepare or not grouped}
        alone = [s for s in pending if s.run_id in single]  # in the recipe's order
        for plan in plans:
            path = output / "_plans" / f"{plan['runs'][0].replace('/', '_')}.json"
            if not args.dry_run or args.jobs:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(plan, indent=1))
            command = [sys.executable, "-m", "lm_eval_moe.cli", "sweep", "--plan", str(path)]
            label = f"{len(plan['runs'])} runs on one {plan['model']} load ({plan['runs'][0]}, ...)"
            lines.append((label, None, command, shell_line(command)))
        for spec in alone:
            try:
                if not args.dry_run or args.jobs:
                    write_task_variant(spec, output)
                prepare = prepare_command(spec, output)
                command = lm_eval_command(spec, output, args.limit, launcher)
            except RecipeError as error:
                print(f"error: {error}")
                return 2
            line = shell_line(command)
            if prepare and not prepare[1].exists():
                line = f"{{ [ -e {shlex.quote(str(prepare[1]))} ] || {shell_line(prepare[0])}; }} && {line}"
            lines.append((spec.run_id, prepare, command, line))
        for plan in plans:
            for point in plan["points"]:
                if point["include_path"] and (not args.dry_run or args.jobs):
                    write_task_variant(next(s for s in specs if s.run_id == point["name"]), output)
        print(f"  {len(specs) - len(pending)} with results, {len(pending)} without"
              + (f"; {len(plans)} model load(s) shared by {sum(len(p['runs']) for p in plans)} runs, each sweep "
                 "keeping only results of the same identity" if plans else ""))
        if args.dry_run or args.jobs:
            for _, _, _, line in lines:
                print(line)
            if args.jobs:
                Path(args.jobs).write_text("".join(line + "\n" for *_, line in lines))
                print(f"{len(lines)} job line(s) -> {args.jobs} (e.g. a Slurm array: "
                      f'sed -n "${{SLURM_ARRAY_TASK_ID}}p" {args.jobs} | bash)')
            return 0
        for number, (label, prepare, command, _) in enumerate(lines, 1):
            if prepare and not prepare[1].exists():
                print(f"[{number}/{len(lines)}] prepare {label}: {shell_line(prepare[0])}", flush=True)
                if subprocess.run(prepare[0]).returncode != 0 or not prepare[1].exists():
                    print(f"error: preparing {label} failed (no {prepare[1]})")
                    return 1
            print(f"[{number}/{len(lines)}] {label}: {shell_line(command)}", flush=True)
            if subprocess.run(command).returncode != 0:
                print(f"error: {label} failed; fix it and rerun the same command (finished runs are kept)")
                return 1
    rows = [row for spec in specs for row in report_rows(recipe, spec, output)]
    table = markdown(recipe, rows)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.md").write_text(table)
    (output / "report.csv").write_text(to_csv(rows))
    print(table)
    print(f"table -> {output}/report.md, report.csv")
    return 0
