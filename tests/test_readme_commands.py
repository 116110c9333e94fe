"""Every command in the README's code blocks, as written: each parses (lm_eval's own parser or ours, every
model arg and generation kwarg checked by the model class, every task known, every pip extra declared), and
each that needs only the shipped models runs on this CPU-only machine with a tiny ``--limit`` (``-m slow``)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

README = REPO / "README.md"
SHIPPED = ("tiny-arith-moe", "tiny-arith-moe-anyk", "tiny-arith-prm", "majority", "likelihood")


def readme_commands() -> list[list[str]]:
    """The commands of the README's fenced blocks: continuation lines joined, comments dropped, ``a && b`` split."""
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1:]
    return [command for command in commands if command]


def _lm_eval_args(command: list[str]):
    from lm_eval._cli import HarnessCLI

    return HarnessCLI()._parser.parse_args(["run", *command[1:]])


def _check_lm_eval(command: list[str]) -> None:
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import simple_parse_args_string

    from lm_eval_moe.model_wrappers.base import MoEHFLMBase

    args = _lm_eval_args(command)
    model = get_model(args.model)
    assert issubclass(model, MoEHFLMBase), args.model
    model_args = simple_parse_args_string(args.model_args) if isinstance(args.model_args, str) else dict(args.model_args)
    model.settings_from(model_args)  # every arg known and valid, before any load
    model.check_gen_kwargs(simple_parse_args_string(args.gen_kwargs or ""), model_args)
    known = set(TaskManager().all_tasks)
    tasks = args.tasks.split(",") if isinstance(args.tasks, str) else list(args.tasks)
    assert set(tasks) <= known, args.tasks


def _check_ours(command: list[str]) -> None:
    import argparse

    from lm_eval_moe.cli import COMMANDS

    parser = argparse.ArgumentParser(prog="lm-eval-moe")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name))
    parsed = parser.parse_args(command[1:])
    if parsed.command == "sweep":
        from lm_eval_moe.cli.sweep import _plan_from_arguments

        plan = _plan_from_arguments(parsed)
        _check_lm_eval(["lm_eval", "--model", plan["model"], "--tasks", parsed.tasks, "--model_args",
                        ",".join(f"{k}={v}" for k, v in plan["model_args"].items())])


def _check_pip(command: list[str]) -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    extras = set(config["options.extras_require"])
    for word in command[2:]:
        for extra in re.findall(r"\[([^]]+)\]", word):
            assert set(extra.split(",")) <= extras, word


def test_every_readme_command_parses(local_data_dir):
    commands = readme_commands()
    programs = {command[0] for command in commands}
    assert {"lm_eval", "lm-eval-moe", "pip", "bash"} <= programs
    for command in commands:
        if command[0] == "lm_eval":
            _check_lm_eval(command)
        elif command[0] == "lm-eval-moe":
            _check_ours(command)
        elif command[0] == "pip":
            _check_pip(command)
        elif command[0] == "bash":
            assert (REPO / command[1]).is_file(), command
        elif command[0] == ".":
            assert command[1] == ".venv/bin/activate"  # what quickstart.sh creates
        else:
            assert command[:3] == ["python", "-m", "pytest"], command


@pytest.fixture
def local_data_dir(benchmark_data, monkeypatch):
    monkeypatch.setenv("LM_EVAL_MOE_DATA_DIR", str(benchmark_data))


def _with_tiny_limit(command: list[str]) -> list[str]:
    """The command with ``--limit 2`` where it takes a limit."""
    words = list(command)
    if "--limit" in words:
        words[words.index("--limit") + 1] = "2"
    elif words[0] == "lm_eval" or words[1:2] == ["sweep"]:
        words += ["--limit", "2"]
    return words


def _uses_only_shipped_models(command: list[str]) -> bool:
    checkpoints = re.findall(r"(?:pretrained|verifier)=([^,\s]+)", " ".join(command))
    return all(name in SHIPPED for name in checkpoints)


@pytest.mark.slow
def test_readme_commands_on_the_shipped_models_run_on_cpu(tmp_path):
    """In order, in one folder (a command may read what an earlier one wrote), with no GPU visible."""
    runnable = [command for command in readme_commands()
                if command[0] in ("lm_eval", "lm-eval-moe") and _uses_only_shipped_models(command)]
    assert {command[0] for command in runnable} == {"lm_eval", "lm-eval-moe"}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    for command in runnable:
        words = _with_tiny_limit(command)
        program = [sys.executable, "-m", "lm_eval"] if words[0] == "lm_eval" else [sys.executable, "-m", "lm_eval_moe.cli"]
        result = subprocess.run([*program, *words[1:]], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, (shlex.join(words), result.stdout[-2000:], result.stderr[-3000:])
