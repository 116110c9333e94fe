"""C3PO kernel-regression baseline."""

import pytest
import torch
from lm_eval.api.instance import Instance

from lm_eval_moe.cost import CostLedger
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.model_wrappers.moe_c3po import MoEC3POLM
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.reroute.c3po import ReferenceSet, last_layers, prompt_features

PROMPTS = ["Q: 12+7\nA:", "Solve: 3*4 =", "Hello there"]


def _requests():
    kwargs = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}
    return [Instance("generate_until", doc={}, arguments=(p, dict(kwargs)), idx=0) for p in PROMPTS]


@pytest.fixture(scope="module")
def references(tiny_model_dir, tmp_path_factory):
    """References from the model's own features on three prompts (as if it had solved them)."""
    lm = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu")
    ids, mask = lm.tok_batch_encode(["Q: 5+5\nA:", "Compute 2*9 =", "Good morning"])
    layers = last_layers(lm.moe, 5)
    embeddings, routing = prompt_features(lm.model, lm.moe, ids, mask, layers)
    path = tmp_path_factory.mktemp("c3po") / "refs.pt"
    ReferenceSet(embeddings, routing, layers, {"model": "tiny", "question_hashes": [], "apply_chat_template": False}).save(path)
    return path


def test_kernel_regression_weights_the_nearest_references():
    refs = ReferenceSet(torch.eye(3), torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]]), [0])
    mixed = refs.neighbour_routing(torch.tensor([[1.0, 0.0, 0.0]]), neighbours=2, bandwidth=0.1)
    weight_first = 1 / (1 + torch.exp(torch.tensor(-10.0)))  # softmax of (1, 0) / 0.1 over the two nearest
    torch.testing.assert_close(mixed[0, 0, 0], weight_first * 1.0 + (1 - weight_first) * 0.0)


def test_alpha_zero_is_moe_hf(tiny_model_dir, references):
    plain = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3).generate_until(_requests())
    c3po = MoEC3POLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3, references=str(references), alpha=0.0)
    responses = c3po.generate_until(_requests())
    assert [str(r) for r in responses] == [str(r) for r in plain]
    assert all(r.meta["cost"]["extra_flops"] > 0 for r in responses)  # the embedding forward is counted


def test_alpha_one_routes_by_the_neighbours(tiny_model_dir, references):
    c3po = MoEC3POLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1, references=str(references), alpha=1.0)
    ids, mask = c3po.tok_batch_encode([PROMPTS[0]])
    embeddings, _ = prompt_features(c3po.model, c3po.moe, ids, mask, c3po.c3po.references.layers)
    target = c3po.c3po.references.neighbour_routing(embeddings)
    with c3po.moe.record() as recorder, c3po.c3po(ids, mask, [CostLedger(c3po.cost_model)]):
        with torch.no_grad():
            c3po.model(ids)
    for call in recorder.calls:
        if call.layer in c3po.c3po.references.layers:
            layer_target = target[0, c3po.c3po.references.layers.index(call.layer)]
            expected = set(torch.topk(layer_target, 2).indices.tolist())
            assert all(set(row.tolist()) == expected for row in call.expert_index)


def test_references_must_match_the_model(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    ReferenceSet(torch.ones(1, 4), torch.ones(1, 1, 3), [0],
                 {"model": "other", "question_hashes": [], "apply_chat_template": False}).save(bad)
    with pytest.raises(ModelArgError, match="built for another model"):
        MoEC3POLM(pretrained=str(tiny_model_dir), device="cpu", references=str(bad))
    with pytest.raises(ModelArgError, match="needs references="):
        MoEC3POLM(pretrained=str(tiny_model_dir), device="cpu")


def test_reference_sets_that_cannot_be_checked_are_refused_before_loading(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the checkpoint was opened")

    monkeypatch.setattr("lm_eval_moe.model_wrappers.base.check_checkpoint_config", no_loading)
    old = tmp_path / "old.pt"
    ReferenceSet(torch.ones(1, 4), torch.ones(1, 1, 3), [0], {"model": "tiny"}).save(old)
    with pytest.raises(ModelArgError, match="does not record question_hashes, apply_chat_template"):
        MoEC3POLM(pretrained="tiny-arith-moe", references=str(old))
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ModelArgError, match="not a reference set"):
        MoEC3POLM(pretrained="tiny-arith-moe", references=str(tmp_path / "garbage.pt"))
    with pytest.raises(ModelArgError, match="references="):
        MoEC3POLM(pretrained="tiny-arith-moe", references=str(tmp_path / "missing.pt"))


def _build(tmp_path, name, *extra):
    from lm_eval_moe.cli import main

    path = tmp_path / name
    assert main(["c3po-build", "--model_args", "pretrained=tiny-arith-moe", "--task", "moe_demo_arith", "--count", "6",
                 "--batch_size", "8", "--output", str(path), *extra]) == 0
    return ReferenceSet.load(path), path


def test_build_draws_solved_references_at_random_from_a_split_disjoint_from_the_test_set(tmp_path):
    from lm_eval_moe.problem_identity import problem_hash
    from lm_eval_moe.tasks.data import load_benchmark

    first, _ = _build(tmp_path, "a.pt", "--seed", "1")
    again, _ = _build(tmp_path, "b.pt", "--seed", "1")
    other, _ = _build(tmp_path, "c.pt", "--seed", "2")
    meta = first.metadata
    assert meta["solved"] == 6 == len(first.embeddings) and meta["tried"] >= 6 and meta["benchmark"] == "demo_arith"
    assert meta["reference_ids"] == again.metadata["reference_ids"] != other.metadata["reference_ids"]
    assert all(ref.startswith("demo_arith/") for ref in meta["reference_ids"])
    test_hashes = {problem_hash(doc) for doc in load_benchmark("demo_arith")["test"]}
    assert not test_hashes & set(meta["question_hashes"]) and meta["apply_chat_template"] is False


def _evaluate_c3po(references, **kwargs):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lm_eval_moe._lm_eval_hook import tasks_dir

    lm = MoEC3POLM(pretrained="tiny-arith-moe", references=str(references), batch_size=4, device="cpu")
    return simple_evaluate(model=lm, tasks=["moe_demo_arith"], limit=3, gen_kwargs="max_gen_toks=24",
                           task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir())), **kwargs)


def test_evaluation_refuses_references_holding_an_evaluated_problem_or_another_prompt_format(tmp_path):
    from lm_eval_moe.problem_identity import problem_hash
    from lm_eval_moe.reroute.c3po import ReferenceSetError
    from lm_eval_moe.tasks.data import load_benchmark

    built, path = _build(tmp_path, "refs.pt")
    assert _evaluate_c3po(path)["results"]["moe_demo_arith"]["exact_match,extract_answer"] >= 0  # disjoint: runs
    leaked = tmp_path / "leaked.pt"
    evaluated = load_benchmark("demo_arith")["test"][1]
    metadata = {**built.metadata, "question_hashes": [*built.metadata["question_hashes"], problem_hash(evaluated)]}
    ReferenceSet(built.embeddings, built.routing, built.layers, metadata).save(leaked)
    with pytest.raises(ReferenceSetError, match="holds 1 of the evaluated problems"):
        _evaluate_c3po(leaked)
    chat = tmp_path / "chat.pt"
    ReferenceSet(built.embeddings, built.routing, built.layers, {**built.metadata, "apply_chat_template": True}).save(chat)
    with pytest.raises(ReferenceSetError, match="apply_chat_template=True, the evaluation uses False"):
        _evaluate_c3po(chat)


def test_build_command_refuses_when_nothing_is_solved(tiny_model_dir, tmp_path, benchmark_data, monkeypatch):
    from lm_eval_moe.cli import main

    monkeypatch.setenv("LM_EVAL_MOE_DATA_DIR", str(benchmark_data))
    with pytest.raises(SystemExit, match="solved none"):
        main(["c3po-build", "--model_args", f"pretrained={tiny_model_dir}", "--task", "moe_mbpp", "--max_tries", "2",
              "--max_gen_toks", "4", "--output", str(tmp_path / "refs.pt")])
    with pytest.raises(SystemExit, match="moe_math500: math500 has no split disjoint from its test set"):
        main(["c3po-build", "--model_args", f"pretrained={tiny_model_dir}", "--task", "moe_math500",
              "--output", str(tmp_path / "refs.pt")])
