"""Every search strategy end to end through the stock ``lm_eval`` CLI (tiny policy, tiny PRM)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocess lm_eval runs: `python -m pytest -m slow`

STRATEGIES = ["des", "best_of_n", "weighted_best_of_n", "beam", "dvts", "self_consistency"]


def _run(model, model_args, tmp_path, benchmark_data):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               LM_EVAL_MOE_DATA_DIR=str(benchmark_data))
    command = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", model_args, "--device", "cpu",
               "--tasks", "moe_gsm8k", "--limit", "2", "--gen_kwargs", "max_gen_toks=24", "--log_samples",
               "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    (samples_file,) = (tmp_path / "out").rglob("samples_moe_gsm8k_*.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return json.loads(results_file.read_text()), samples


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_runs_through_the_stock_cli(strategy, tiny_model_dir, qwen_prm_dir, tmp_path, benchmark_data):
    verifier = "majority" if strategy == "self_consistency" else str(qwen_prm_dir)
    model = "moe_des" if strategy == "des" else "moe_search"
    args = f"pretrained={tiny_model_dir},verifier={verifier},budget=4,temperature=1.0,search_batch_size=2"
    if strategy in ("des", "beam", "dvts"):  # the step-wise strategies (settings the others do not take)
        args += ",keep=2,max_steps=2,max_step_tokens=6"
    args += ",expert_counts=1-4" if strategy == "des" else f",strategy={strategy}"
    results, samples = _run(model, args, tmp_path, benchmark_data)
    settings = results["config"]["lm_eval_moe"]
    assert settings["strategy"] == strategy and settings["budget"] == 4
    if strategy == "des":
        assert settings["expert_counts"] == [1, 2, 3, 4]
    metrics = results["results"]["moe_gsm8k"]
    for name in ("exact_match,extract_answer", "coverage,extract_answer", "precision,extract_answer",
                 "generated_tokens,extract_answer", "flops,extract_answer"):
        assert name in metrics, name
    assert len(samples) == 2 and all(s["num_candidates"] >= 1 for s in samples)
    for sample in samples:  # --log_samples keeps every final candidate, with what the search knew of it
        [record] = sample["moe_records"]
        assert sample["filtered_resps"] == [record["verdict"]["answer"] or "[invalid]"]
        assert len(record["candidates"]) == sample["num_candidates"]
        for candidate in record["candidates"]:
            assert {"text", "expert_count", "score", "finish_reason", "step_count"} <= set(candidate)
            assert candidate["step_count"] >= 1 and candidate["finish_reason"] in ("eos", "length", "answer")
    assert settings["totals"]["generated_tokens"] == sum(s["generated_tokens"] for s in samples)


@pytest.mark.parametrize("kind", ["qwen_prm", "rlhflow_prm", "math_shepherd", "value_head", "token_classification",
                                  "outcome", "judge"])
def test_des_runs_with_every_verifier_format_through_the_stock_cli(kind, verifier_dirs, tmp_path):
    """The demo policy and task, a tiny random verifier of each format (random scores: the wiring is checked)."""
    from lm_eval_moe.verifiers import FORMATS, load_verifier

    args = (f"pretrained=tiny-arith-moe-anyk,verifier={verifier_dirs[kind]},budget=4,keep=2,max_steps=2,"
            "max_step_tokens=20,expert_counts=1-2" + (",verifier_format=judge" if kind == "judge" else ""))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "lm_eval", "--model", "moe_des", "--model_args", args, "--device", "cpu",
               "--tasks", "moe_demo_arith", "--limit", "2", "--log_samples", "--output_path", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    settings = results["config"]["lm_eval_moe"]
    assert settings["verifier_format"] == kind and settings["aggregation"] == FORMATS[kind].default_aggregation
    assert results["results"]["moe_demo_arith"]["verifier_tokens,extract_answer"] > 0
    flops_per_token = load_verifier(str(verifier_dirs[kind]), verifier_format=kind).flops_per_token
    (samples_file,) = (tmp_path / "out").rglob("samples_moe_demo_arith_*.jsonl")
    for sample in map(json.loads, samples_file.read_text().splitlines()):
        scores = [candidate["score"] for candidate in sample["moe_records"][0]["candidates"]]
        assert scores and all(0.0 <= score <= 1.0 for score in scores)
        assert sample["verifier_flops"] == pytest.approx(sample["verifier_tokens"] * flops_per_token)
