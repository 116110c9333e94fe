"""A settings sweep on one loaded model equals separate lm_eval runs, loads the model once, resumes, and
refuses what would need another load."""

import json

import pytest
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from lm_eval_moe.cli import main
from lm_eval_moe.cli.sweep import grid_points
from lm_eval_moe.testing import reproducible_sample

LIMIT = 12


@pytest.mark.slow  # five evaluations of the demo policy
def test_a_k_sweep_loads_the_demo_policy_once_and_equals_separate_runs(tmp_path, monkeypatch, caplog):
    loads = []
    create = HFLM._create_model

    def counted(self, *args, **kwargs):
        loads.append(kwargs.get("pretrained", args[0] if args else None))
        return create(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_create_model", counted)
    out = tmp_path / "sweep"
    assert main(["sweep", "--model", "moe_hf", "--model_args", "pretrained=tiny-arith-moe,device=cpu,batch_size=8",
                 "--grid", "expert_count=1,2,3,4", "--tasks", "moe_demo_arith", "--limit", str(LIMIT),
                 "--log_samples", "--output_path", str(out)]) == 0
    assert len(loads) == 1  # one model load for four settings
    for k in (1, 2, 3, 4):
        (results_file,) = (out / f"expert_count-{k}").rglob("results_*.json")
        results = json.loads(results_file.read_text())
        assert results["config"]["lm_eval_moe"]["expert_count"] == [k] * 4
        (samples_file,) = (out / f"expert_count-{k}").rglob("samples_moe_demo_arith_*.jsonl")
        swept = [reproducible_sample(json.loads(line)) for line in samples_file.read_text().splitlines()]

        from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

        separate = simple_evaluate(model=MoEHFLM(pretrained="tiny-arith-moe", device="cpu", batch_size=8,
                                                 expert_count=k),
                                   tasks=["moe_demo_arith"], limit=LIMIT, log_samples=True,
                                   task_manager=TaskManager())
        alone = [reproducible_sample(json.loads(json.dumps(s, default=str))) for s in separate["samples"]["moe_demo_arith"]]
        assert sorted(swept, key=lambda s: s["doc_id"]) == sorted(alone, key=lambda s: s["doc_id"]), k

    loads.clear()  # the same command again: every point is finished, nothing is loaded
    assert main(["sweep", "--model", "moe_hf", "--model_args", "pretrained=tiny-arith-moe,device=cpu,batch_size=8",
                 "--grid", "expert_count=1,2,3,4", "--tasks", "moe_demo_arith", "--limit", str(LIMIT),
                 "--output_path", str(out)]) == 0
    assert loads == []


def test_settings_that_need_another_load_are_refused_before_loading(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was opened")

    monkeypatch.setattr(HFLM, "_create_model", no_loading)
    assert main(["sweep", "--model", "moe_hf", "--model_args", "pretrained=tiny-arith-moe,device=cpu",
                 "--grid", "renormalize=true,false", "--tasks", "moe_demo_arith", "--limit", "1",
                 "--output_path", str(tmp_path)]) == 2
    assert "renormalize need their own load" in capsys.readouterr().out
    assert main(["sweep", "--model", "moe_hf", "--model_args", "pretrained=tiny-arith-moe,device=cpu",
                 "--grid", "expert_count=2,99", "--tasks", "moe_demo_arith", "--output_path", str(tmp_path)]) == 2
    assert "expert_count" in capsys.readouterr().out


def test_grid_points_are_the_product_in_order():
    assert grid_points(["budget=4,8", "strategy=beam,dvts"]) == [
        ("budget-4_strategy-beam", {"budget": "4", "strategy": "beam"}),
        ("budget-4_strategy-dvts", {"budget": "4", "strategy": "dvts"}),
        ("budget-8_strategy-beam", {"budget": "8", "strategy": "beam"}),
        ("budget-8_strategy-dvts", {"budget": "8", "strategy": "dvts"}),
    ]
    with pytest.raises(SystemExit, match="names a setting twice"):
        grid_points(["budget=4", "budget=8"])


def test_leaderboard_rows_of_a_k_sweep_are_told_apart():
    from lm_eval_moe.leaderboard.results import _method

    assert _method({"lm_eval_moe": {"model_class": "moe_hf", "expert_count": [3, 3], "default_expert_count": [2, 2]}}) \
        == "moe_hf k=3"
    assert _method({"lm_eval_moe": {"model_class": "moe_hf", "expert_count": [2, 2], "default_expert_count": [2, 2]}}) \
        == "moe_hf"


def test_a_point_overrides_the_loaded_settings_not_the_previous_points(tiny_model_dir, qwen_prm_dir):
    """A DES point with expert_counts, then a Best-of-N point without: the second must not inherit the
    first's expert_counts (which Best-of-N refuses), as in the demo recipe's moe_search sweep."""
    from lm_eval_moe.model_wrappers.moe_search import MoESearchLM

    lm = MoESearchLM(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), strategy="best_of_n", budget="4",
                     device="cpu")
    lm.reconfigure({"strategy": "des_adaptive", "expert_counts": "1-2", "keep": "2", "max_steps": "2"})
    assert lm.method_settings.strategy == "des_adaptive" and lm.method_settings.expert_counts == (1, 2)
    lm.reconfigure({"strategy": "best_of_n", "budget": "8"})
    settings = lm.method_settings
    assert (settings.strategy, settings.budget, settings.expert_counts, settings.keep) == ("best_of_n", 8, None, None)
    assert "expert_counts" not in lm.model_args and lm.model_args["budget"] == "8"
    lm.reconfigure({})
    assert lm.method_settings.budget == 4  # as loaded


def test_a_point_run_with_another_identity_is_run_again(tmp_path, tiny_task_dir, caplog):
    """Rerun with --limit 3 after --limit 2, or with new weights in the same folder: the sweep said "0 to run",
    kept the old results and exited 0."""
    import shutil

    from lm_eval_moe.reproduce.sweep import Point, run_points
    from lm_eval_moe.testing import save_tiny_moe

    folder = save_tiny_moe(tmp_path / "checkpoint", "olmoe", seed=0)
    output = tmp_path / "sweep"
    args = {"pretrained": str(folder), "device": "cpu"}

    def point(limit: int) -> Point:
        return Point("expert_count-1", {"expert_count": "1"}, ["moe_test_echo"], limit=limit,
                     include_path=[str(tiny_task_dir)])

    assert len(run_points("moe_hf", args, [point(2)], output)) == 1
    assert run_points("moe_hf", args, [point(2)], output) == []  # the same identity: kept
    with caplog.at_level("WARNING"):
        assert len(run_points("moe_hf", args, [point(3)], output)) == 1
    assert "evaluation.limit: 2 -> 3" in caplog.text
    (results,) = (output / "expert_count-1").rglob("results_*.json")
    assert json.loads(results.read_text())["config"]["limit"] == 3
    assert len(list((output / "_replaced").iterdir())) == 1
    for weights in save_tiny_moe(tmp_path / "retrained", "olmoe", seed=5).glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert len(run_points("moe_hf", args, [point(3)], output)) == 1
    assert "checkpoint.sha256" in caplog.text
    caplog.clear()
    for samples in (output / "expert_count-1").rglob("samples_*.jsonl"):
        samples.unlink()  # as if run without --log_samples
    logged = Point("expert_count-1", {"expert_count": "1"}, ["moe_test_echo"], limit=3,
                   include_path=[str(tiny_task_dir)], lm_eval={"log_samples": True})
    with caplog.at_level("WARNING"):  # finished without the samples now asked for
        assert len(run_points("moe_hf", args, [logged], output)) == 1
    assert "run without --log_samples" in caplog.text
    assert run_points("moe_hf", args, [point(3)], output) == []  # logged samples satisfy a run that needs none
