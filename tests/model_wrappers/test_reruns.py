"""Reruns never return another run's numbers: the response cache and a sweep's "finished" check key on what
produced a response (the checkpoint's content, the code, every setting, the evaluation), lm-eval's blind
request cache is refused, votes group by the task's own answer, and settings that could not run as stated
are refused. Each of these returned or kept another run's numbers before."""

import shutil

import pytest

from lm_eval_moe import run_identity
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.search.common import Problem, SearchConfig, candidate, select_final
from lm_eval_moe.search.settings import SearchSettings
from lm_eval_moe.testing import save_tiny_moe


def _texts(lm, task_dir) -> list[str]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(model=lm, tasks=["moe_test_echo"], task_manager=TaskManager(include_path=str(task_dir)),
                              log_samples=True)
    return [str(sample["filtered_resps"][0]) for sample in sorted(results["samples"]["moe_test_echo"],
                                                                 key=lambda sample: sample["doc_id"])]


def test_new_weights_in_the_same_folder_are_regenerated_not_read_back(tmp_path, tiny_task_dir, caplog):
    """A CI gate fed a checkpoint folder overwritten by a new training run: every response came from the cache
    (keyed on the path) and the regressed model passed."""
    folder = save_tiny_moe(tmp_path / "checkpoint", "olmoe", seed=0)
    cache = tmp_path / "responses"
    first = _texts(MoEHFLM(pretrained=str(folder), device="cpu", response_cache=str(cache)), tiny_task_dir)
    fresh = save_tiny_moe(tmp_path / "retrained", "olmoe", seed=5)
    for weights in fresh.glob("*.safetensors"):
        shutil.copy(weights, folder / weights.name)  # new weights copied into the same folder
    with caplog.at_level("INFO"):
        second = _texts(MoEHFLM(pretrained=str(folder), device="cpu", response_cache=str(cache)), tiny_task_dir)
    assert "0 of 4 responses read from the response cache" in caplog.text
    reference = _texts(MoEHFLM(pretrained=str(fresh), device="cpu"), tiny_task_dir)
    assert second == reference != first


def test_two_different_uncommitted_edits_never_share_responses(tmp_path, tiny_task_dir, monkeypatch, caplog):
    """The code's identity was its commit plus "-dirty": a comment-only edit filled the cache, a behaviour change
    then read it. Now it is the hash of the source files."""
    package = tmp_path / "package"
    shutil.copytree(run_identity.Path(run_identity.__file__).parent / "scoring", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = run_identity.source_sha256([package])
    extract = package / "extract.py"
    extract.write_text(extract.read_text() + "\n# a comment\n")
    commented = run_identity.source_sha256([package])
    extract.write_text(extract.read_text().replace("MAX_STATEMENT_CHARS = 2000", "MAX_STATEMENT_CHARS = 20"))
    changed = run_identity.source_sha256([package])
    assert len({before, commented, changed}) == 3

    folder = save_tiny_moe(tmp_path / "checkpoint", "olmoe", seed=0)
    cache = tmp_path / "responses"
    code = run_identity.code_identity()
    monkeypatch.setattr("lm_eval_moe.run_identity.code_identity", lambda: {**code, "source_sha256": commented})
    _texts(MoEHFLM(pretrained=str(folder), device="cpu", response_cache=str(cache)), tiny_task_dir)
    monkeypatch.setattr("lm_eval_moe.run_identity.code_identity", lambda: {**code, "source_sha256": changed})
    with caplog.at_level("INFO"):
        _texts(MoEHFLM(pretrained=str(folder), device="cpu", response_cache=str(cache)), tiny_task_dir)
    assert "0 of 4 responses read from the response cache" in caplog.text


def test_large_checkpoints_are_hashed_once(tmp_path, monkeypatch):
    monkeypatch.setenv(run_identity.CACHE_DIR_ENV, str(tmp_path / "memo"))
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "config.json").write_text("{}")
    reads = []
    real = run_identity._sha256
    monkeypatch.setattr(run_identity, "_sha256", lambda path: reads.append(path.name) or real(path))
    first = run_identity.folder_sha256(folder)
    assert run_identity.folder_sha256(folder) == first and sorted(reads) == ["config.json", "model.safetensors"]
    (folder / "model.safetensors").write_bytes(b"\1" * 4096)  # rewritten in place
    assert run_identity.folder_sha256(folder) != first and reads.count("model.safetensors") == 2


def test_lm_evals_request_cache_is_refused(tiny_model_dir, tiny_task_dir, tmp_path):
    """--use_cache with allow_request_cache=true returned the k=2 answers for expert_count=1, with zero cost."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with pytest.raises(ModelArgError, match="allow_request_cache"):
        MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", allow_request_cache=True)
    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", expert_count=1)
    with pytest.raises(ModelArgError, match="response_cache"):
        simple_evaluate(model=lm, tasks=["moe_test_echo"], task_manager=TaskManager(include_path=str(tiny_task_dir)),
                        use_cache=str(tmp_path / "cache"))


@pytest.mark.parametrize("checker, texts, winner", [
    ("choice4", ["The answer is (B).", "Answer: B", "\\boxed{B} because the other options fail", "\\boxed{C}",
                 "The answer is (C)."], "B"),
    ("math", ["\\boxed{\\frac{1}{2}}", "so 0.5", "\\boxed{0.5}", "\\boxed{3}", "the answer is 3"], "1/2"),
])
def test_votes_group_what_the_tasks_checker_judges_equal(checker, texts, winner):
    """3x B in three wordings lost to 2x C: votes used a math reading on a multiple-choice task."""
    from lm_eval_moe.generation.nodes import root_node
    from lm_eval_moe.scoring import CHECKERS

    key = CHECKERS[checker].key
    problem = Problem(0, (1,), "q", seed=0, base_expert_count=(2,), answer_key=key)
    config = SearchConfig(budget=len(texts), keep=1, final="majority")
    candidates = []
    for text in texts:
        node = root_node(0, (1,), (2,))
        node.text = text
        candidates.append(candidate(problem, node, None, config))
    selected = select_final(candidates, "majority")
    assert selected.answer == key(texts[0]) and winner in str(selected.answer)


@pytest.mark.parametrize("args", [
    {"strategy": "des", "verifier": "majority", "budget": 2, "expert_counts": "1-4"},
    {"strategy": "des", "verifier": "majority", "budget": 3, "expert_counts": "1-4", "rounding": "floor"},
    {"strategy": "des_adaptive", "verifier": "majority", "budget": 2, "expert_counts": "1|2|4"},
    {"strategy": "weighted_best_of_n", "verifier": "majority"},
])
def test_settings_that_cannot_run_as_stated_are_refused(args):
    with pytest.raises(ModelArgError):
        SearchSettings.from_model_args(dict(args))


def test_budget_below_the_default_k_set_is_refused_before_loading(tiny_model_dir):
    """Without expert_counts, K is {k-4..k+3} clipped to the routed experts (8 here, k=2: {1..5})."""
    from lm_eval_moe.model_wrappers.moe_search import MoEDESLM

    with pytest.raises(ModelArgError, match="budget=4 is below the 5 expert counts"):
        MoEDESLM(pretrained=str(tiny_model_dir), verifier="majority", budget=4, device="cpu")


def test_an_explicit_model_arg_is_explicit_whatever_its_value():
    """temperature=0.8 (the default value, given explicitly) plus a request at 0.3 ran at 0.3 without a word."""
    settings = SearchSettings.from_model_args({"strategy": "best_of_n", "verifier": "majority", "temperature": 0.8})
    with pytest.raises(ModelArgError, match="temperature is given twice"):
        settings.sampling({"do_sample": True, "temperature": 0.3})
    default = SearchSettings.from_model_args({"strategy": "best_of_n", "verifier": "majority"})
    assert default.sampling({"do_sample": True, "temperature": 0.3})[0].temperature == 0.3


def test_results_record_every_setting_given_or_default(tiny_model_dir):
    from lm_eval_moe.model_wrappers.moe_reroute import MoERerouteLM

    lm = MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1)
    info = lm.get_model_info()["lm_eval_moe"]
    assert info["layer_weighting"] == "lr"  # missing unless given before
    identity = info["run_identity"]
    assert identity["settings"]["layer_weighting"] == "lr" and identity["checkpoint"]["sha256"]
    assert identity["code"]["source_sha256"] and len(identity["digest"]) == 64
