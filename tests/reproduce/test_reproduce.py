"""Reproduction recipes: every shipped recipe expands and dry-runs; a small recipe runs end to end on the
shipped tiny models, resumes, writes a job list, and puts published numbers beside ours."""

import csv
import json
import shlex

import pytest

from lm_eval_moe.cli import main
from lm_eval_moe.reproduce.recipe import RecipeError, available, load_recipe

EXPECTED_RUNS = {"des_main": 4 * 2 * 4 * 7, "reroute_table1": 3 * 5 * 5 - 3, "reroute_table2": 25,
                 "reroute_table4": 15 - 2, "reroute_table5": 2 * 2}


@pytest.mark.parametrize("name", available())
def test_every_recipe_dry_runs_with_its_model_args(name, capsys, tmp_path):
    recipe = load_recipe(name)
    runs = recipe.runs()
    assert main(["reproduce", name, "--dry-run", "--one-run-per-process", "--output", str(tmp_path / "out")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "-m lm_eval" in line]
    assert len(lines) == len(runs) == EXPECTED_RUNS.get(name, len(runs))
    for spec, line in zip(runs, lines):
        words = shlex.split(line.split("&& ")[-1])
        assert words[words.index("--model") + 1] == spec.model
        model_args = dict(part.split("=", 1) for part in words[words.index("--model_args") + 1].split(","))
        assert model_args["pretrained"] == spec.model_args["pretrained"]
        assert words[words.index("--output_path") + 1].endswith(spec.run_id)
        # code tasks run model-written programs: lm_eval refuses them without this flag
        assert ("--confirm_run_unsafe_code" in words) == (spec.task in ("moe_humaneval", "moe_mbpp", "moe_livecodebench"))
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert recipe.source and (recipe.published or name in ("demo", "des_k_range", "des_inheritance"))


def test_runs_sharing_a_model_load_become_one_sweep(tmp_path, capsys):
    """des_main: 4 policies x 2 PRMs x 2 model classes (moe_des, moe_search) = 16 loads for 224 runs; each
    plan varies only settings that need no new load."""
    jobs = tmp_path / "jobs.txt"
    assert main(["reproduce", "des_main", "--output", str(tmp_path / "out"), "--jobs", str(jobs)]) == 0
    assert "16 model load(s) shared by 224 runs" in capsys.readouterr().out
    lines = jobs.read_text().splitlines()
    assert len(lines) == 16 and all(" -m lm_eval_moe.cli sweep --plan " in line for line in lines)
    plans = [json.loads(path.read_text()) for path in (tmp_path / "out" / "_plans").glob("*.json")]
    assert sum(len(plan["points"]) for plan in plans) == 224
    for plan in plans:
        assert {"pretrained", "verifier"} <= set(plan["model_args"])
        assert all(not {"pretrained", "verifier"} & set(point["overrides"]) for point in plan["points"])
        assert len({point["name"] for point in plan["points"]}) == len(plan["points"])


def test_published_numbers_are_the_papers():
    table1 = load_recipe("reroute_table1").published
    assert table1["deepseek-v2-lite/rerouting/HumanEval"] == 54.26 and table1["olmoe/baseline/GSM8K"] == 51.48
    assert load_recipe("reroute_table5").published["gpt-oss-20b/rerouting/AIME25#maj@8"] == 83.33
    des = load_recipe("des_main").published
    assert des["qwen3-30b-a3b/qwen-prm/des/MATH500"] == 93.2 and len(des) == 16  # the retrievable cells only


TINY_RECIPE = """name: tiny
title: tiny test recipe
source: a made-up table
metric_scale: 100
dimensions:
  model:
    demo: {{args: {{pretrained: tiny-arith-moe}}, lm_eval: {{device: cpu, batch_size: 4}}}}
  method:
    greedy: {{model: moe_hf}}
    sampled: {{model: moe_hf, repeats: 2, gen_kwargs: "do_sample=true,temperature=0.8"}}
  task:
    arith: {{task: moe_demo_arith, metric: [exact_match, pass@2]}}
published:
  demo/greedy/arith#exact_match: 50.0
  demo/sampled/arith#pass@2: {published_pass}
"""


@pytest.mark.slow  # subprocess lm_eval runs
def test_a_small_recipe_runs_resumes_and_reports(tmp_path, capsys):
    recipe_file = tmp_path / "tiny.yaml"
    recipe_file.write_text(TINY_RECIPE.format(published_pass=60.0))
    out = tmp_path / "out"
    assert main(["reproduce", str(recipe_file), "--limit", "6", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 with results, 2 without" in printed
    assert (out / "_tasks" / "moe_demo_arith_x2.yaml").is_file()
    rows = {row[0]: row for row in list(csv.reader((out / "report.csv").read_text().splitlines()))[1:]}
    assert set(rows) == {"demo/greedy/arith#exact_match", "demo/greedy/arith#pass@2", "demo/sampled/arith#exact_match",
                         "demo/sampled/arith#pass@2"}
    (greedy_results,) = (out / "demo/greedy/arith").rglob("results_*.json")
    ours = json.loads(greedy_results.read_text())["results"]["moe_demo_arith"]["exact_match,extract_answer"] * 100
    row = rows["demo/greedy/arith#exact_match"]
    assert float(row[2]) == pytest.approx(ours, abs=0.005) and row[4] == "50.00"
    assert float(row[5]) == pytest.approx(ours - 50.0, abs=0.01) and row[7] == "done"
    (sampled_samples,) = (out / "demo/sampled/arith").rglob("samples_moe_demo_arith_x2_*.jsonl")
    assert all(json.loads(line)["num_candidates"] == 2 for line in sampled_samples.read_text().splitlines())
    assert rows["demo/sampled/arith#exact_match"][4] == ""  # no published number: left empty, never invented
    assert rows["demo/greedy/arith#pass@2"][7] == "metric missing"  # one sample: no pass@2, never a stand-in

    # rerunning resumes: nothing left to run, the same table
    assert main(["reproduce", str(recipe_file), "--limit", "6", "--output", str(out)]) == 0
    assert "2 with results, 0 without" in capsys.readouterr().out

    # a job list holds only unfinished runs
    jobs = tmp_path / "jobs.txt"
    assert main(["reproduce", str(recipe_file), "--limit", "6", "--output", str(tmp_path / "fresh"),
                 "--jobs", str(jobs)]) == 0
    assert len(jobs.read_text().splitlines()) == 1  # both runs on one model load
    # runs with results on a shared load still go to their sweep, which alone can tell whether the results are of
    # the same identity (and then loads nothing)
    assert main(["reproduce", str(recipe_file), "--limit", "6", "--output", str(out), "--jobs", str(jobs)]) == 0
    [line] = jobs.read_text().splitlines()
    assert " sweep --plan " in line
    plan = line.split(" --plan ", 1)[1]
    assert main(["sweep", "--plan", plan]) == 0
    assert "0 of 2 point(s) written" in capsys.readouterr().out


def test_bad_recipes_are_refused_with_the_reason(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_RECIPE.format(published_pass=60.0).replace("repeats: 2", "repeat: 2"))
    assert main(["reproduce", str(bad), "--dry-run"]) == 2
    assert "unknown setting(s) repeat" in capsys.readouterr().out
    bad.write_text(TINY_RECIPE.format(published_pass=60.0).replace("demo/sampled/arith#pass@2", "demo/other/arith"))
    with pytest.raises(RecipeError, match="published numbers for runs the recipe does not have: demo/other/arith"):
        load_recipe(str(bad)).runs()
    assert main(["reproduce", "no_such_recipe", "--dry-run"]) == 2
    assert "not one of" in capsys.readouterr().out
    assert main(["reproduce", "demo", "--dry-run", "--only", "colour=red"]) == 2


def test_only_accuracy_like_metrics_are_scaled_to_percent():
    from lm_eval_moe.reproduce.report import is_rate

    assert all(is_rate(k) for k in ("exact_match,none", "pass@4,none", "maj@4,none", "coverage,none", "precision,none", "acc,none"))
    assert not any(is_rate(k) for k in ("generated_tokens,none", "flops,none", "avg_expert_count,none"))
