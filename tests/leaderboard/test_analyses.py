"""The papers' analyses over lm-eval results: solved sets across k, budget curves, kept k per step, computed
from results and samples files written as lm-eval writes them, and checked against hand counts."""

import json
from pathlib import Path

import pytest

from lm_eval_moe.cli import main
from lm_eval_moe.leaderboard import load_runs
from lm_eval_moe.leaderboard.analyses import Analyses

TASK = "moe_demo_arith"
#: documents solved at each k (10 documents): k=1 and k=4 are complementary, k=2 is the best single k
SOLVED = {1: {0, 1, 2, 3}, 2: {0, 1, 2, 4, 5}, 3: {0, 2, 4}, 4: {0, 6, 7, 8}}


def _write_run(folder: Path, settings: dict, solved: set[int], documents: int = 10, records=None,
               accuracy_stderr: float = 0.1, extra: dict | None = None) -> None:
    folder.mkdir(parents=True)
    stamp = "2026-11-26T00-00-00.000000"
    results = {TASK: {"alias": TASK, "exact_match,extract_answer": len(solved) / documents,
                      "exact_match_stderr,extract_answer": accuracy_stderr, **(extra or {})}}
    config = {"model": "moe_hf", "model_args": "pretrained=tiny-arith-moe-anyk", "lm_eval_moe": settings}
    (folder / f"results_{stamp}.json").write_text(json.dumps(
        {"results": results, "config": config, "n-samples": {TASK: {"effective": documents}}}))
    with (folder / f"samples_{TASK}_{stamp}.jsonl").open("w") as handle:
        for doc in range(documents):
            record = (records or {}).get(doc, {"response": "x"})
            handle.write(json.dumps({"doc_id": doc, "filter": "extract_answer", "exact_match": float(doc in solved),
                                     "filtered_resps": ["x"], "moe_records": [record]}) + "\n")


def _k_settings(k: int) -> dict:
    return {"model_class": "moe_hf", "expert_count": [k] * 4, "default_expert_count": [2] * 4}


def test_solved_sets_across_k_match_hand_counts(tmp_path):
    for k, solved in SOLVED.items():
        _write_run(tmp_path / f"k{k}", _k_settings(k), solved)
    (overlap,) = Analyses.of(load_runs([tmp_path])).overlaps
    assert overlap.counts == ["1", "2", "3", "4"] and overlap.documents == 10
    assert [overlap.accuracy(k) for k in overlap.counts] == [0.4, 0.5, 0.3, 0.4]
    assert overlap.union == 0.9 and overlap.intersection == 0.1  # {0..8}; {0}
    assert overlap.best_single == ("2", 0.5)
    assert overlap.jaccard("1", "4") == pytest.approx(1 / 7)  # {0} of {0,1,2,3,6,7,8}
    assert overlap.jaccard("2", "3") == pytest.approx(3 / 5)
    assert overlap.jaccard("3", "3") == 1.0
    data = overlap.as_dict()
    assert data["union_minus_best"] == pytest.approx(0.4) and data["jaccard"]["1|2"] == pytest.approx(3 / 6)


def test_documents_missing_from_one_k_are_left_out_of_every_k(tmp_path):
    _write_run(tmp_path / "k1", _k_settings(1), {0, 1, 9}, documents=10)
    _write_run(tmp_path / "k2", _k_settings(2), {0, 2}, documents=5)
    (overlap,) = Analyses.of(load_runs([tmp_path])).overlaps
    assert overlap.documents == 5 and overlap.solved == {"1": frozenset({0, 1}), "2": frozenset({0, 2})}


def test_budget_curves_and_kept_k_per_step(tmp_path):
    steps = [{"step": 0, "kept_expert_counts": [1, 4]}, {"step": 1, "kept_expert_counts": [4, 4]}]
    for budget, accuracy in ((4, {0, 1}), (8, {0, 1, 2}), (16, {0, 1, 2, 3})):
        settings = {"model_class": "moe_des", "strategy": "des", "budget": budget, "keep": budget // 4,
                    "expert_counts": [1, 2, 3, 4], "verifier": "tiny-arith-prm", "final": "prm_best"}
        _write_run(tmp_path / f"n{budget}", settings, accuracy, records={0: {"search_steps": steps}},
                   extra={"flops,extract_answer": 1e6 * budget, "wall_seconds,extract_answer": 0.5 * budget})
    beam_steps = [{"step": 0, "kept_expert_counts": [2, 2]}]  # one k: nothing chosen, left out of kept k
    _write_run(tmp_path / "beam", {"model_class": "moe_search", "strategy": "beam", "budget": 8, "verifier": "prm"},
               {0}, records={0: {"search_steps": beam_steps}})
    analyses = Analyses.of(load_runs([tmp_path]))
    ((model, task, label), points), = analyses.budgets.items()
    assert (model, task, label) == ("tiny-arith-moe-anyk", TASK, "des (tiny-arith-prm)")
    assert [(p.budget, p.accuracy, p.flops, p.wall_seconds) for p in points] == [
        (4, 0.2, 4e6, 2.0), (8, 0.3, 8e6, 4.0), (16, 0.4, 16e6, 8.0)]
    assert not analyses.overlaps  # search runs are not a k sweep
    assert [label for _, _, label in analyses.kept_k] == [f"des (tiny-arith-prm) N={n}" for n in (4, 8, 16)]
    for per_step in analyses.kept_k.values():  # one logged record with search steps per run
        assert per_step == {0: {1.0: 1, 4.0: 1}, 1: {4.0: 2}}
    assert "| 1 | 2 | 0.0% | 100.0% |" in analyses.markdown()


def test_analyze_command_writes_tables_and_plots(tmp_path, capsys):
    for k, solved in SOLVED.items():
        _write_run(tmp_path / "runs" / f"k{k}", _k_settings(k), solved)
    assert main(["analyze", str(tmp_path / "runs"), "--output", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "analyses.json").read_text())
    assert written["k_overlap"][0]["union"] == 0.9
    assert (tmp_path / "out" / "k_overlap_1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "union (solved at some k) 90.0%" in (tmp_path / "out" / "analyses.md").read_text()
    assert main(["leaderboard", str(tmp_path / "runs"), "--output", str(tmp_path / "board")]) == 0
    assert "Solved sets across k" in (tmp_path / "board" / "leaderboard.html").read_text()
    assert (tmp_path / "board" / "k_overlap_1.png").exists()


def test_analyze_refuses_runs_that_allow_no_analysis(tmp_path, capsys):
    _write_run(tmp_path / "k1", _k_settings(1), {0})
    assert main(["analyze", str(tmp_path)]) == 2
    assert "allow no analysis" in capsys.readouterr().out


def test_rerouting_pathways_are_averaged_over_samples(tmp_path):
    records = {0: {"pathways": {"edit_distance": 1.0, "changed_fraction": 0.125, "confidence_before": [0.4, 0.5],
                                "confidence_after": [0.6, 0.9]}},
               1: {"pathways": {"edit_distance": 3.0, "changed_fraction": 0.375, "confidence_before": [0.2, 0.5],
                                "confidence_after": [0.8, 0.7]}}}
    _write_run(tmp_path / "reroute", {"model_class": "moe_reroute", "steps": 5}, {0}, documents=3, records=records)
    analyses = Analyses.of(load_runs([tmp_path]))
    (report,) = analyses.pathways.values()
    assert report.samples == 2 and report.edit_distance == 2.0 and report.changed_fraction == 0.25
    assert report.confidence_before == pytest.approx([0.3, 0.5]) and report.confidence_after == pytest.approx([0.7, 0.8])
    assert "edit distance 2.00 per generated token (25.0% of the pathway changed)" in analyses.markdown()


def test_records_of_another_shape_are_an_error_naming_the_file(tmp_path, capsys):
    records = {0: {"pathways": {"edit_distance": "far"}}, 1: {"search_steps": [{"kept_expert_counts": [1, 2]}]}}
    _write_run(tmp_path / "odd", {"model_class": "moe_reroute"}, {0}, documents=2, records=records)
    assert main(["analyze", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "not an lm_eval_moe sample record" in out and str(tmp_path / "odd") in out
    assert main(["leaderboard", str(tmp_path), "--output", str(tmp_path / "board")]) == 2
