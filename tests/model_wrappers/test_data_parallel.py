"""Data parallel with two CPU processes under ``accelerate launch``: the same per-sample results as one
process, for greedy moe_hf, for DES (seeded per document, not per rank) and with ``repeats`` (lm-eval's
padding of the shorter rank must not become extra candidates).

On CPU, ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate's simple launcher
spawns several only through mpirun); two CPU processes need ``ACCELERATE_USE_CPU=true accelerate launch
--multi_gpu --num_processes 2`` (or torchrun), which is what the README gives and this test runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_moe.model_wrappers.base import padding_mask
from lm_eval_moe.testing import reproducible_metrics, reproducible_sample
from conftest import REPO

pytestmark = pytest.mark.slow  # subprocess lm_eval runs: `python -m pytest -m slow`

LIMIT = 5  # odd: the ranks get 3 and 2 documents, so lm-eval pads the second rank


def _evaluate(model: str, model_args: str, out: Path, benchmark_data: Path, processes: int, task: str = "moe_gsm8k",
              include: Path | None = None) -> tuple[dict, dict[int, dict]]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               LM_EVAL_MOE_DATA_DIR=str(benchmark_data), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = (launcher if processes > 1 else [sys.executable]) + [
        "-m", "lm_eval", "--model", model, "--model_args", model_args, "--tasks", task, "--limit", str(LIMIT),
        "--gen_kwargs", "max_gen_toks=16", "--log_samples", "--output_path", str(out), "--batch_size", "2"]
    if processes == 1:
        command += ["--device", "cpu"]
    if include is not None:
        command += ["--include_path", str(include)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    (results_file,) = out.rglob("results_*.json")
    (samples_file,) = out.rglob(f"samples_{task}_*.jsonl")
    samples = {s["doc_id"]: s for s in map(json.loads, samples_file.read_text().splitlines())}
    return json.loads(results_file.read_text()), samples


def _rounded(value):
    """Floats to 6 decimals: a PRM scores a path in a batch of another size in each process layout, which moves
    its score in the 7th digit (float accumulation order), never the selection."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def _assert_same_samples(single: dict[int, dict], parallel: dict[int, dict]) -> None:
    assert sorted(single) == sorted(parallel) == list(range(LIMIT))
    for doc_id, sample in single.items():
        expected, got = reproducible_sample(sample), reproducible_sample(parallel[doc_id])
        assert _rounded(got.pop("records")) == _rounded(expected.pop("records")), doc_id
        assert got.pop("filtered_resps") == expected.pop("filtered_resps"), doc_id
        assert set(got) == set(expected) and "exact_match" in expected, doc_id  # the computed metrics, not time
        for metric, value in expected.items():
            assert got[metric] == pytest.approx(value, rel=1e-9, abs=1e-9), (doc_id, metric)


@pytest.mark.parametrize("model", ["moe_hf", "moe_des"])
def test_two_processes_give_the_single_process_samples(model, tiny_model_dir, qwen_prm_dir, tmp_path, benchmark_data):
    args = f"pretrained={tiny_model_dir}"
    if model == "moe_des":
        args += (f",verifier={qwen_prm_dir},budget=4,keep=2,max_steps=2,max_step_tokens=6,temperature=1.0,"
                 "expert_counts=1-4,seed=3")
    single_results, single = _evaluate(model, args, tmp_path / "single", benchmark_data, 1)
    parallel_results, parallel = _evaluate(model, args, tmp_path / "parallel", benchmark_data, 2)
    _assert_same_samples(single, parallel)
    for key, value in reproducible_metrics(single_results["results"]["moe_gsm8k"]).items():
        if isinstance(value, float) and "stderr" not in key:
            assert parallel_results["results"]["moe_gsm8k"][key] == pytest.approx(value, rel=1e-9), key
    totals = parallel_results["config"]["lm_eval_moe"]["totals"]
    assert totals["ranks"] == 2
    assert totals["generated_tokens"] == single_results["config"]["lm_eval_moe"]["totals"]["generated_tokens"]


REPEATS_TASK = """include: {common}
task: moe_gsm8k_repeats
dataset_kwargs:
  benchmark: gsm8k
process_results: !function lm_eval_moe.tasks.reasoning.process_answer
repeats: 3
"""


def test_padding_is_not_counted_as_repeats(tiny_model_dir, tmp_path, benchmark_data):
    include = tmp_path / "tasks"
    include.mkdir()
    common = REPO / "tasks" / "math" / "_moe_reasoning_common.yaml"
    (include / "moe_gsm8k_repeats.yaml").write_text(REPEATS_TASK.format(common=common))
    args = f"pretrained={tiny_model_dir}"
    _, single = _evaluate("moe_hf", args, tmp_path / "single", benchmark_data, 1, "moe_gsm8k_repeats", include)
    _, parallel = _evaluate("moe_hf", args, tmp_path / "parallel", benchmark_data, 2, "moe_gsm8k_repeats", include)
    _assert_same_samples(single, parallel)
    assert all(s["num_candidates"] == 3 for s in parallel.values())


class _Request:
    def __init__(self, repeats: int) -> None:
        self.repeats = repeats


def test_padding_mask_marks_copies_beyond_repeats():
    first, last = _Request(2), _Request(2)
    requests = [first, first, last, last, last, last]  # lm-eval appends [last] * repeats as padding
    assert padding_mask(requests) == [False, False, False, False, True, True]
