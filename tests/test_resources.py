"""Wall time and peak memory per sample and per run, next to tokens and FLOPs."""

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.resources import Meter


def test_a_batch_reports_its_own_peak_memory():
    meter = Meter()
    block = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched
    block += 1
    big = meter.stop()
    del block
    small = Meter().stop()
    assert big.wall_seconds > 0 and big.peak_rss_mb is not None
    if not big.rss_peak_reset:
        pytest.skip("this kernel does not let a process reset its peak RSS")
    assert big.peak_rss_mb - small.peak_rss_mb > 250
    assert big.per_sample(4)["wall_seconds"] == pytest.approx(big.wall_seconds / 4)


def test_samples_and_run_report_time_and_memory(tiny_model_dir):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=2)
    out = simple_evaluate(model=lm, tasks=["moe_demo_arith"], limit=3, gen_kwargs="max_gen_toks=8", log_samples=True,
                          task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir())))
    samples = out["samples"]["moe_demo_arith"]
    assert all(s["wall_seconds"] > 0 and s["peak_rss_mb"] > 0 for s in samples)
    totals = out["config"]["lm_eval_moe"]["totals"]
    assert totals["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in samples), rel=1e-6)
    assert totals["peak_rss_mb"] >= max(s["peak_rss_mb"] for s in samples) * 0.999
    assert "wall_seconds,extract_answer" in out["results"]["moe_demo_arith"]
