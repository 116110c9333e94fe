"""Leaderboard and regression gate on results written by real runs (the shipped demo model), plus edited
copies: a planted drop, a missing task, truncated files, another task version, lm-eval's own hf model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_moe.cli import main
from lm_eval_moe.leaderboard import load_runs
from lm_eval_moe.leaderboard.table import rows
from conftest import REPO

pytestmark = pytest.mark.slow  # subprocess lm_eval runs: `python -m pytest -m slow`

LIMIT = 60


def _lm_eval(model, model_args, out, task="moe_demo_arith"):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--device", "cpu",
               "--tasks", task, "--limit", str(LIMIT), "--log_samples", "--output_path", str(out), "--batch_size", "8"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = Path(out).rglob("results_*.json")
    return results.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    des = "pretrained=tiny-arith-moe,verifier=tiny-arith-prm,budget=4,keep=2,max_steps=4,expert_counts=1-3,max_step_tokens=40"
    return {
        "greedy": _lm_eval("moe_hf", "pretrained=tiny-arith-moe", root / "greedy"),
        "des_seed1": _lm_eval("moe_des", des + ",seed=1", root / "des1"),
        "des_seed2": _lm_eval("moe_des", des + ",seed=2", root / "des2"),
        "hf": _lm_eval("hf", f"pretrained={REPO / 'lm_eval_moe/demo/models/tiny-arith-moe'}", root / "hf"),
    }


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _results_file(folder: Path) -> Path:
    return next(folder.glob("results_*.json"))


def test_tables_match_the_json_numbers(runs, tmp_path, capsys):
    assert main(["leaderboard", *map(str, runs.values()), "--output", str(tmp_path / "board")]) == 0
    table = rows(load_runs(list(runs.values())))
    for run_folder in runs.values():
        data = json.loads(_results_file(run_folder).read_text())
        row = next(r for r in table if r.source == str(_results_file(run_folder)))
        assert row.accuracy == data["results"]["moe_demo_arith"]["exact_match,extract_answer"]
        assert row.stderr == data["results"]["moe_demo_arith"]["exact_match_stderr,extract_answer"]
    methods = {r.method for r in table}
    assert {"moe_hf", "des", "hf"} <= methods
    des_row = next(r for r in table if r.method == "des")
    assert des_row.flops and des_row.tokens and des_row.avg_k and des_row.precision is not None
    hf_row = next(r for r in table if r.method == "hf")
    assert hf_row.flops is None and hf_row.accuracy is not None  # common fields only
    board = tmp_path / "board"
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "accuracy_vs_flops.png", "chosen_k.png"):
        assert (board / name).is_file() and (board / name).stat().st_size > 0, name
    assert (board / "leaderboard.html").read_text().count("data:image/png;base64,") >= 2


def test_tables_are_written_without_matplotlib(runs, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    board = tmp_path / "board"
    assert main(["leaderboard", str(runs["greedy"]), str(runs["des_seed1"]), "--output", str(board)]) == 0
    assert "no plots (plots need matplotlib" in capsys.readouterr().out
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        assert (board / name).stat().st_size > 0, name
    assert not list(board.glob("*.png"))


def test_another_seed_is_within_noise(runs, capsys):
    code = main(["regress", "--baseline", str(runs["des_seed1"]), "--current", str(runs["des_seed2"])])
    output = capsys.readouterr().out
    assert code == 0, output
    assert "paired sign test" in output


def test_a_planted_drop_is_a_regression(runs, tmp_path, capsys):
    edited = _copy(runs["greedy"], tmp_path, "dropped")
    samples_file = next(edited.glob("samples_moe_demo_arith_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    correct = [s for s in samples if s["exact_match"] == 1.0]
    assert len(correct) >= 10, "the demo model should solve a fair share of the problems"
    for sample in correct[: len(correct) // 2]:
        sample["exact_match"] = 0.0
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    results_file = _results_file(edited)
    data = json.loads(results_file.read_text())
    data["results"]["moe_demo_arith"]["exact_match,extract_answer"] = sum(s["exact_match"] for s in samples) / len(samples)
    results_file.write_text(json.dumps(data))
    code = main(["regress", "--baseline", str(runs["greedy"]), "--current", str(edited)])
    output = capsys.readouterr().out
    assert code == 1 and "REGRESSION in moe_demo_arith" in output, output
    # without samples the standard errors decide, and still see it
    for file in edited.glob("samples_*.jsonl"):
        file.unlink()
    assert main(["regress", "--baseline", str(runs["greedy"]), "--current", str(edited)]) == 1
    assert "z-test" in capsys.readouterr().out


def test_unusable_inputs_exit_2_with_a_clear_message(runs, tmp_path, capsys):
    missing = _copy(runs["greedy"], tmp_path, "missing")
    data = json.loads(_results_file(missing).read_text())
    data["results"]["moe_other_task"] = data["results"]["moe_demo_arith"]
    _results_file(missing).write_text(json.dumps(data))
    assert main(["regress", "--baseline", str(missing), "--current", str(runs["greedy"])]) == 2
    assert "missing from the current run: moe_other_task" in capsys.readouterr().out

    version = _copy(runs["greedy"], tmp_path, "version")
    data = json.loads(_results_file(version).read_text())
    data["versions"]["moe_demo_arith"] = 99.0
    _results_file(version).write_text(json.dumps(data))
    assert main(["regress", "--baseline", str(runs["greedy"]), "--current", str(version)]) == 2
    assert "version" in capsys.readouterr().out

    truncated = _copy(runs["greedy"], tmp_path, "truncated")
    text = _results_file(truncated).read_text()
    _results_file(truncated).write_text(text[: len(text) // 2])
    assert main(["leaderboard", str(truncated), "--output", str(tmp_path / "b")]) == 2
    assert "not valid JSON" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", str(empty), "--output", str(tmp_path / "b")]) == 2
    assert "no lm-eval results_*.json" in capsys.readouterr().out

    other_docs = _copy(runs["greedy"], tmp_path, "other_docs")
    samples_file = next(other_docs.glob("samples_moe_demo_arith_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    samples[0]["doc_hash"] = "0" * 64
    samples_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert main(["regress", "--baseline", str(runs["greedy"]), "--current", str(other_docs)]) == 2
    assert "differ in content" in capsys.readouterr().out
