"""No evaluated document appears in its own few-shot context, in any task (at --num_fewshot 5)."""

import pytest
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.tasks.data import DATA_DIR_ENV
from lm_eval_moe.problem_identity import problem_key

SHOTS = 5


@pytest.fixture(scope="module")
def manager(data_dir_with_lcb):
    import os

    os.environ[DATA_DIR_ENV] = str(data_dir_with_lcb)
    return TaskManager(include_defaults=False, include_path=str(tasks_dir()), metadata={"release": "release_v2"})


def _leaks(manager, name, shots):
    """(prompts containing their own problem, prompts with fewer than ``shots`` examples, prompts)."""
    task = manager.load([name])["tasks"][name]
    task.set_config("num_fewshot", shots)
    task.set_fewshot_seed(1234)
    drawn = []
    sample = task.sampler.sample
    task.sampler.sample = lambda n, eval_doc=None, **kwargs: drawn.append(sample(n, eval_doc=eval_doc, **kwargs)) or drawn[-1]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    leaks = sum(instance.args[0].count(instance.doc["moe_question"]) > 1 for instance in task.instances)
    short = sum(len(examples) != shots for examples in drawn) + len(task.instances) - len(drawn)
    return leaks, short, len(task.instances)


def test_no_prompt_contains_its_own_problem(manager):
    names = sorted(name for name in manager.all_subtasks if name.startswith("moe_") and name != "moe_livecodebench")
    assert len(names) >= 63  # 7 reasoning/code benchmarks, the demo and 57 MMLU-redux subjects
    report = {name: _leaks(manager, name, SHOTS) for name in names}
    assert {name: counts for name, counts in report.items() if counts[0] or counts[1]} == {}
    assert sum(total for _, _, total in report.values()) == 8830  # every test problem of every task


def test_a_tiny_benchmark_draws_only_its_other_problems(manager):
    assert _leaks(manager, "moe_livecodebench", 2)[:2] == (0, 0)  # 3 problems in the test release: 2 others
    with pytest.raises(ValueError, match="3 few-shot examples requested, only 2 problems"):
        _leaks(manager, "moe_livecodebench", 3)


def test_duplicate_questions_are_never_drawn():
    from lm_eval_moe.tasks.fewshot import DistinctProblemSampler

    docs = [{"moe_id": f"x/{i}", "moe_question": q} for i, q in enumerate(["A  b", "a b", "c", "d", "e"])]
    sampler = DistinctProblemSampler(docs, rnd=1)
    for _ in range(50):
        drawn = sampler.sample(3, eval_doc=docs[0])
        assert len(drawn) == 3 and all(problem_key(d) != "a b" for d in drawn)
