"""Every results file says what produced it: package version and commit, library versions, and per task
where the rows came from (local file sha256 or hub id and revision), for our models and lm-eval's own."""

import hashlib
import json
import subprocess
from importlib import metadata

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.provenance import git_commit, package_commit, software
from lm_eval_moe.tasks.data import DATA_DIR_ENV


def _evaluate(lm, tmp_path):
    manager = TaskManager(include_defaults=False, include_path=str(tasks_dir()))
    return simple_evaluate(model=lm, tasks=["moe_gsm8k", "moe_demo_arith"], limit=1, gen_kwargs="max_gen_toks=4",
                           task_manager=manager)


def _file_sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_task_provenance(out, benchmark_data):
    gsm8k = json.loads(out["configs"]["moe_gsm8k"]["custom_dataset"])
    record = gsm8k["datasets"]["gsm8k"]
    test_file = benchmark_data / "gsm8k" / "test.jsonl"
    assert record["source"] == "local" and record["files"] == {str(test_file): _file_sha256(test_file)}
    assert record["rows"] == 1319
    assert gsm8k["datasets"]["demo_arith"]["source"] == "generated"
    assert gsm8k["software"] == software()


def test_our_models_and_lm_evals_own_record_provenance(tiny_model_dir, benchmark_data, monkeypatch, tmp_path):
    from lm_eval.models.huggingface import HFLM

    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    monkeypatch.setenv(DATA_DIR_ENV, str(benchmark_data))
    ours = _evaluate(MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=2), tmp_path)
    _check_task_provenance(ours, benchmark_data)
    recorded = ours["config"]["lm_eval_moe"]["provenance"]
    assert recorded["software"]["torch"] == metadata.version("torch")
    assert recorded["software"]["transformers"] == metadata.version("transformers")
    assert recorded["software"]["lm_eval"] == metadata.version("lm_eval")
    assert recorded["software"]["lm_eval_moe"] == metadata.version("lm_eval_moe")
    assert "gsm8k" in recorded["datasets"]
    theirs = _evaluate(HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=2), tmp_path)
    _check_task_provenance(theirs, benchmark_data)


def test_the_commit_is_the_checkouts_head(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=tasks_dir().parent,
                          check=False).stdout.strip()
    if not head:
        pytest.skip("not running from a git checkout")
    assert package_commit().removesuffix("-dirty") == head
    assert git_commit(tmp_path) is None  # outside a checkout: no commit, never a guess
