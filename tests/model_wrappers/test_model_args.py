"""Each method's settings: parsed and checked before any checkpoint is opened, honoured or refused (never
silently replaced), with one grammar for k and K."""

import dataclasses
import time

import pytest
import torch

from lm_eval_moe.model_args import ModelArgError, parse_expert_count, parse_expert_count_set
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.model_wrappers.moe_reroute import MoERerouteLM
from lm_eval_moe.model_wrappers.moe_search import MoEDESLM, MoESearchLM
from lm_eval_moe.search.settings import SearchSettings

MISSING = "/nonexistent/checkpoint/that/would/fail/to/load"


@pytest.mark.parametrize("model_class, args, message", [
    (MoEDESLM, dict(budgett=8), r"unknown model arg\(s\) for moe_des: 'budgett' \(did you mean 'budget'\?\)"),
    (MoEHFLM, dict(expert_cout=2), r"'expert_cout' \(did you mean 'expert_count'\?\)"),
    (MoERerouteLM, dict(stepz=3), r"'stepz' \(did you mean 'steps'\?\)"),
    (MoEDESLM, dict(verifier="x", budget="eight"), r"budget='eight': expected an integer"),
    (MoEDESLM, dict(verifier="x", expert_counts="4-2"), r"expert_counts='4-2': the range 4-2 is empty"),
    (MoESearchLM, dict(verifier="x", strategy="best_of_n", max_steps=3), r"max_steps does not apply to strategy=best_of_n"),
    (MoESearchLM, dict(verifier="x", strategy="des_adaptive", rounding="floor"), r"rounding does not apply to strategy=des_adaptive"),
    (MoESearchLM, dict(verifier="x", strategy="des_adaptive", inherit="false"), r"inherit does not apply to strategy=des_adaptive"),
    (MoESearchLM, dict(verifier="x", strategy="beam", budget=10, beam_width=4), r"beam_width=4 does not divide budget=10"),
    (MoESearchLM, dict(verifier="x", strategy="dvts", budget=10, keep=4), r"M must divide budget=10"),
    (MoESearchLM, dict(strategy="beam"), r"strategy=beam needs a verifier"),
    (MoESearchLM, dict(verifier="majority", final="prm_best", strategy="beam"), r"final=prm_best.*decides by majority"),
    (MoEDESLM, dict(verifier="x", reroute_steps=2), r"reroute_\* model args need reroute=true"),
    (MoERerouteLM, dict(layer_selection="top"), r"layer_selection='top': expected one of soft, hard"),
    (MoEDESLM, dict(verifier="tiny-arith-prn"), r"verifier='tiny-arith-prn'.*did you mean 'tiny-arith-prm'"),
])
def test_a_bad_model_arg_is_refused_before_any_checkpoint_is_opened(model_class, args, message):
    """The checkpoint path does not exist: the error is about the arg, not a missing checkpoint."""
    with pytest.raises(ModelArgError, match=message):
        model_class(pretrained=MISSING, device="cpu", **args)


def test_a_misspelt_shipped_name_suggests_the_right_one_at_once():
    start = time.monotonic()
    with pytest.raises(ModelArgError, match=r"pretrained='tiny-arith-mo'.*did you mean 'tiny-arith-moe'"):
        MoEDESLM(pretrained="tiny-arith-mo", verifier="majority", device="cpu")
    assert time.monotonic() - start < 30  # no hub retries (those take minutes)


def test_an_unsupported_family_is_refused_from_its_config_alone(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=300).save_pretrained(tmp_path)  # a config, no weights at all
    from lm_eval_moe.moe import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="'llama' is not a supported Mixture-of-Experts family"):
        MoEHFLM(pretrained=str(tmp_path), device="cpu")


def test_one_grammar_for_k_and_for_each_member_of_K():
    assert parse_expert_count("expert_count", "4:4:6:6") == (4, 4, 6, 6)
    assert parse_expert_count("expert_count", "[2, 3]") == (2, 3)
    assert parse_expert_count_set("expert_counts", "4-6") == (4, 5, 6)
    assert parse_expert_count_set("expert_counts", "4|6;8") == (4, 6, 8)
    assert parse_expert_count_set("expert_counts", "4:4:6:6|8:8:8:8") == ((4, 4, 6, 6), (8, 8, 8, 8))
    assert parse_expert_count_set("expert_counts", "[[1, 2], 3]") == ((1, 2), 3)
    with pytest.raises(ModelArgError, match="appears twice"):
        parse_expert_count_set("expert_counts", "2|2")
    with pytest.raises(ModelArgError, match="expected an integer"):
        parse_expert_count_set("expert_counts", "2|x")


def test_m_is_taken_as_given_and_beam_width_must_divide_n():
    settings = SearchSettings.from_model_args({"strategy": "des", **{"verifier": "x", "budget": 10, "keep": 4}})
    assert settings.kept_states == 4 and settings.search_config([2], 8, 64).keep == 4
    assert SearchSettings.from_model_args({"strategy": "des", **{"verifier": "x", "strategy": "beam", "budget": 12, "beam_width": 4}}).kept_states == 3
    assert SearchSettings.from_model_args({"strategy": "des", **{"verifier": "x", "budget": 10}}).kept_states == 2  # N/4 rounded down


def test_self_consistency_is_defined_by_the_search_not_the_model_class():
    settings = SearchSettings.from_model_args({"strategy": "best_of_n", **{"strategy": "self_consistency"}})
    config = settings.search_config([2], 8, 64)
    assert settings.final_rule == "majority" and not config.needs_scores
    with pytest.raises(ModelArgError, match="votes without a verifier"):
        SearchSettings.from_model_args({"strategy": "best_of_n", **{"strategy": "self_consistency", "verifier": "some/prm"}})


@pytest.mark.parametrize("budget, keep", [(10, 4), (7, 3), (9, 2)])
def test_des_with_one_k_is_beam_search_for_every_n_and_m(budget, keep, qwen_prm_dir):
    """Before the redesign beam search kept N // (N // M) states: 5 for N=10, M=4, so the two differed."""
    from lm_eval_moe.cost import CostModel
    from lm_eval_moe.generation import SamplingConfig, StepEngine
    from lm_eval_moe.generation.batch import BatchContext
    from lm_eval_moe.moe import attach
    from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
    from lm_eval_moe.search.driver import run_search
    from lm_eval_moe.testing import byte_tokenizer, tiny_moe
    from lm_eval_moe.verifiers import load_verifier

    model = tiny_moe("olmoe", seed=1)
    moe, tok = attach(model), byte_tokenizer()
    verifier = load_verifier(str(qwen_prm_dir))
    config = SearchConfig(budget=budget, keep=keep, max_steps=3, max_step_tokens=5, max_tokens=20)
    outcomes = {}
    for name, cfg in (("des", dataclasses.replace(config, expert_counts=((2, 2),))), ("beam", config)):
        problems = [Problem(0, tuple(tok.encode("Problem: 3+4?")), "3+4", seed=11, base_expert_count=(2, 2))]
        engine = StepEngine(model, tok, moe, SamplingConfig(temperature=1.0), delimiter="e")
        context = BatchContext.for_problems([0], CostModel.from_model(model, moe))
        (outcomes[name],) = run_search(STRATEGIES[name].algorithm, problems, cfg, engine, verifier, context)
    des, beam = outcomes["des"].result, outcomes["beam"].result
    assert [(c.text, c.score) for c in des.candidates] == [(c.text, c.score) for c in beam.candidates]
    assert [s["kept"] for s in des.steps] == [s["kept"] for s in beam.steps]
    assert all(len(s["kept"]) <= keep for s in beam.steps)


@pytest.fixture(scope="module")
def des(tiny_model_dir, qwen_prm_dir):
    return MoEDESLM(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), budget=2, keep=1, max_steps=2,
                    max_step_tokens=3, expert_counts="1|2", device="cpu")


def _request(gen_kwargs, text="Problem: 1+1?\n\nSolution:"):
    from lm_eval.api.instance import Instance

    return Instance("generate_until", doc={"moe_question": "1+1"}, arguments=(text, gen_kwargs), idx=0)


def test_a_search_honours_the_requests_sampling(des):
    des.run_record.generation.clear()
    des.generate_until([_request({"until": ["\n\n\n"], "max_gen_toks": 6, "do_sample": True, "temperature": 0.3,
                                  "top_p": 0.5})])
    assert des.run_record.generation == [{"max_tokens": 6, "temperature": 0.3, "top_p": 0.5, "top_k": 0}]
    des.run_record.generation.clear()  # greedy (the tasks' default): the model args' sampling, recorded as such
    des.generate_until([_request({"until": ["\n\n\n"], "max_gen_toks": 6, "do_sample": False})])
    assert des.run_record.generation == [{"max_tokens": 6, "temperature": 0.8, "top_p": 1.0, "top_k": 0}]
    with pytest.raises(ModelArgError, match="repetition_penalty"):
        des.generate_until([_request({"until": [], "max_gen_toks": 6, "repetition_penalty": 1.2})])


def test_sampling_given_twice_differently_is_refused(tiny_model_dir):
    lm = MoESearchLM(pretrained=str(tiny_model_dir), verifier="majority", strategy="self_consistency", budget=2,
                     temperature=0.7, device="cpu")
    with pytest.raises(ModelArgError, match="temperature is given twice: 0.3 .* 0.7"):
        lm.generate_until([_request({"until": [], "max_gen_toks": 4, "do_sample": True, "temperature": 0.3})])


def test_the_prm_follows_the_policys_device(tiny_model_dir, qwen_prm_dir, monkeypatch):
    import lm_eval_moe.search.method as method

    seen = {}
    real = method.load_verifier
    monkeypatch.setattr(method, "load_verifier", lambda spec, **kwargs: seen.update(kwargs) or real(spec, **kwargs))
    lm = MoEDESLM(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), budget=5, keep=1, device="cpu")
    assert seen["device"] is not None and torch.device(seen["device"]) == torch.device(lm.device)
    assert lm.method.verifier.device == torch.device(lm.device)


def test_rerouting_refuses_what_it_cannot_honour(tiny_model_dir):
    with pytest.raises(ModelArgError, match="needs an integer batch_size, not auto"):
        MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", batch_size="auto")
    lm = MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", steps=0)
    for key in ("min_p", "repetition_penalty"):
        with pytest.raises(ModelArgError, match=f"generation kwarg\\(s\\) '{key}' are not honoured by moe_reroute"):
            lm.generate_until([_request({"until": [], "max_gen_toks": 4, key: 0.5})])
    lm.run_record.generation.clear()
    lm.generate_until([_request({"until": [], "max_gen_toks": 4, "do_sample": True, "temperature": 0.9, "top_k": 5})])
    assert lm.run_record.generation == [{"max_gen_toks": 4, "temperature": 0.9, "top_p": 1.0, "top_k": 5}]


def test_rerouting_stops_on_the_generation_configs_end_of_turn(tiny_model_dir):
    """Chat models list end-of-turn ids in generation_config.eos_token_id beside the tokenizer's EOS."""
    plain = MoEHFLM(pretrained=str(tiny_model_dir), device="cpu")
    greedy = plain.generate_until([_request({"until": [], "max_gen_toks": 12, "do_sample": False})])[0]
    first_token = plain.tok_encode(greedy)[0]
    for lm in (plain, MoERerouteLM(pretrained=str(tiny_model_dir), device="cpu", steps=0)):
        lm.model.generation_config.eos_token_id = [lm.eot_token_id, first_token]
        lm.eos_ids.add(first_token)
        response = lm.generate_until([_request({"until": [], "max_gen_toks": 12, "do_sample": False})])[0]
        assert response.meta["cost"]["generated_tokens"] == 1, lm.model_name
