"""moe_reroute through lm-eval: equality with moe_hf without updates, repeats and few-shot; moe_des with
reroute=true."""

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from lm_eval_moe._lm_eval_hook import tasks_dir
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.model_wrappers.moe_reroute import MoERerouteLM
from lm_eval_moe.model_wrappers.moe_search import MoEDESLM
from lm_eval_moe.tasks.data import DATA_DIR_ENV


@pytest.fixture(autouse=True)
def local_data(benchmark_data, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(benchmark_data))


def _requests(prompts, max_new=12):
    kwargs = {"until": ["\n\nProblem:"], "max_gen_toks": max_new, "do_sample": False}
    return [Instance("generate_until", doc={}, arguments=(p, dict(kwargs)), idx=0) for p in prompts]


@pytest.mark.parametrize("args", [{"steps": 0}, {"steps": 3, "lr": 0.0}])
def test_without_updates_responses_equal_moe_hf(tiny_model_dir, args):
    prompts = ["Q: 12+7\nA:", "Solve: 3*4 =", "x"]
    plain = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=1).generate_until(_requests(prompts))
    rerouted = MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3, interval=4, **args)
    responses = rerouted.generate_until(_requests(prompts))
    assert [str(r) for r in responses] == [str(r) for r in plain]
    assert all(r.meta["cost"]["generated_tokens"] > 0 for r in responses)


def test_repeats_and_fewshot_with_rerouting(tiny_model_dir):
    lm = MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=3, steps=2, lr=0.1, interval=4,
                      pathway_stats=True)
    manager = TaskManager(include_defaults=False, include_path=str(tasks_dir()))
    task = manager.load(["moe_gsm8k"])["tasks"]["moe_gsm8k"]
    task.set_config("repeats", 3)
    out = simple_evaluate(model=lm, tasks=[task], limit=2, num_fewshot=1, log_samples=True,
                          gen_kwargs="max_gen_toks=8,do_sample=True,temperature=1.0", task_manager=manager)
    sample = out["samples"]["moe_gsm8k"][0]
    assert len(sample["resps"][0]) == 3 and sample["num_candidates"] == 3.0
    assert sample["arguments"][0][0].count("Problem:") == 2  # one in-context example + the question
    assert sample["extra_flops"] > 0 and "maj@3,extract_answer" in out["results"]["moe_gsm8k"]
    settings = out["config"]["lm_eval_moe"]
    assert settings["model_class"] == "moe_reroute" and settings["steps"] == 2
    record = sample["moe_records"][0]
    assert set(record["pathways"]) == {"edit_distance", "changed_fraction", "confidence_before", "confidence_after"}
    assert len(record["pathways"]["confidence_after"]) == 2  # the tiny model's MoE layers
    assert sample["pathway_edit_distance"] == record["pathways"]["edit_distance"] >= 0
    assert "router_confidence_after,extract_answer" in out["results"]["moe_gsm8k"]


def test_des_with_rerouting_biases_every_path(tiny_model_dir, qwen_prm_dir):
    common = dict(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), budget=4, keep=2, max_steps=2,
                  max_step_tokens=4, expert_counts="1|4", device="cpu", temperature=1.0)
    plain = MoEDESLM(**common)
    rerouted = MoEDESLM(**common, reroute=True, reroute_steps=3, reroute_lr=5.0)
    seen = []  # the batch contexts the engine was handed
    expand = rerouted.method.engine.expand
    rerouted.method.engine.expand = lambda expansions, context: seen.append(context) or expand(expansions, context)
    requests = _requests(["Problem: 2+2?\n\nSolution:", "Problem: 5*3?\n\nSolution:"], max_new=8)
    a, b = plain.generate_until(requests), rerouted.generate_until(requests)
    assert all(r.meta["cost"]["extra_flops"] > 0 for r in b) and all(r.meta["cost"]["extra_flops"] == 0 for r in a)
    assert seen and all(set(context.biases) == {0, 1} for context in seen)
    assert all(float(bias.norm()) > 0 for bias in seen[0].biases.values())
    assert rerouted.reported_settings()["reroute"]["steps"] == 3


def test_engine_applies_each_problems_bias_to_its_rows_only():
    import torch

    from lm_eval_moe.cost import CostModel
    from lm_eval_moe.generation import Expansion, SamplingConfig, StepEngine, root_node
    from lm_eval_moe.generation.batch import BatchContext
    from lm_eval_moe.moe import attach
    from lm_eval_moe.testing import byte_tokenizer, tiny_moe

    model = tiny_moe("olmoe", seed=1)
    moe = attach(model)
    tok = byte_tokenizer()
    engine = StepEngine(model, tok, moe, SamplingConfig(temperature=0.0), delimiter="\x00never")
    bias = torch.zeros(moe.num_layers, moe.num_experts)
    bias[:, 3] = 100.0
    batch = BatchContext.for_problems([0, 1], CostModel.from_model(model, moe))
    batch.biases = {0: bias}
    roots = [root_node(i, tuple(tok.encode(f"prompt {i}")), (2, 2)) for i in range(2)]
    with moe.record() as recorder:
        engine.expand([Expansion(roots[0], 0, 3), Expansion(roots[1], 1, 3), Expansion(roots[0], 2, 3)], batch)
    decode_calls = [c for c in recorder.calls if c.expert_index.shape[0] == 3]  # one token per row
    assert decode_calls
    uses_expert_3 = [(call.expert_index == 3).any(dim=-1).tolist() for call in decode_calls]
    assert all(row[0] and row[2] for row in uses_expert_3)  # the biased problem: always
    assert not all(row[1] for row in uses_expert_3)  # the other problem routes on its own
