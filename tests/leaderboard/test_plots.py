"""The plots a newcomer reads: one panel per run where series would overlap, k in one colour everywhere,
labels that tell runs apart (the demo's two rerouting runs differ only in their policy)."""

from __future__ import annotations


import pytest

from conftest import REPO
from lm_eval_moe.leaderboard import load_runs
from lm_eval_moe.leaderboard.plots import chosen_k_distribution, kept_k_per_step, router_entropy, run_labels

pytest.importorskip("matplotlib")
RUNS = REPO / "docs" / "demo" / "runs"


def _size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.fixture(scope="module")
def demo_runs():
    return load_runs([RUNS])


def test_every_run_gets_a_label_of_its_own(demo_runs):
    labels = run_labels(demo_runs)
    assert len(set(labels.values())) == len(demo_runs)
    rerouting = sorted(label for run, label in zip(demo_runs, labels.values()) if run.method == "reroute")
    assert rerouting == ["reroute (tiny-arith-moe)", "reroute (tiny-arith-moe-anyk)"]
    des = [labels[id(run)] for run in demo_runs if run.method == "des" and "anyk" in run.model]
    assert len(des) == 3 and all("K={1,2,3,4}, N=" in label for label in des)  # told apart by their N and M


def test_chosen_k_draws_one_panel_per_run_that_chooses_k(demo_runs, monkeypatch):
    import matplotlib.pyplot as plt

    panels = []
    real = plt.subplots

    def record(rows, columns, **kwargs):
        figure, axes = real(rows, columns, **kwargs)
        panels.append((rows, columns))
        return figure, axes

    monkeypatch.setattr(plt, "subplots", record)
    png = chosen_k_distribution(demo_runs)
    choosing = [run for run in demo_runs if run.method.startswith("des")]
    (rows, columns), = panels
    assert rows * columns >= len(choosing) > (rows - 1) * columns and columns <= 4
    width, height = _size(png)
    assert width < 2500 and height < 2500


def test_kept_k_wraps_into_rows_and_entropy_names_each_run(demo_runs):
    from lm_eval_moe.leaderboard.analyses import Analyses

    analyses = Analyses.of(demo_runs)
    width, height = _size(kept_k_per_step(analyses.kept_k))
    assert len(analyses.kept_k) > 4 and width < 2.6 * height  # not a 3899 x 466 strip
    assert router_entropy(demo_runs) is not None
