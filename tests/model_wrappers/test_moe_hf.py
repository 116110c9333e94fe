"""``moe_hf`` through lm-eval's own evaluator, in process."""

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from lm_eval_moe.model_args import ModelArgError, parse_expert_count
from lm_eval_moe.generation.stops import tokens_until_stop as count_generated_tokens
from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM
from lm_eval_moe.moe import ExpertCountError


def _run(model, tiny_task_dir, **kwargs):
    return simple_evaluate(
        model=model,
        tasks=["moe_test_echo"],
        task_manager=TaskManager(include_defaults=False, include_path=str(tiny_task_dir)),
        limit=4,
        log_samples=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return MoEHFLM(pretrained=str(tiny_model_dir), expert_count=2, device="cpu", batch_size=2)


def test_responses_carry_cost_and_totals_add_up(lm, tiny_task_dir):
    out = _run(lm, tiny_task_dir)
    info = out["config"]["lm_eval_moe"]
    assert info["expert_count"] == [2, 2] and info["family"] == "OLMoE"
    totals = info["totals"]
    assert totals["requests"] == 4
    assert 0 < totals["generated_tokens"] <= 4 * 8
    # routed expert-tokens = processed tokens (prompt + generated - the last, never fed) x k x layers
    processed = totals["prompt_tokens"] + totals["generated_tokens"] - totals["requests"]
    assert totals["routed_expert_tokens"] == processed * 2 * 2


def _greedy_reference(lm, prompt, max_new, stop):
    """Independent count: one forward per token, stop on EOS or once the text contains ``stop``."""
    ids = torch.tensor([lm.tok_encode(prompt)])
    generated = []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(lm.model(ids).logits[0, -1].argmax())
            generated.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token == lm.eot_token_id or stop in lm.tok_decode(generated):
                break
    return generated


@pytest.mark.parametrize("prompt", ["Q: 1+2\nA:", "Q: 7+8\nA:", "x"])
def test_generated_token_count_matches_an_independent_greedy_loop(lm, prompt):
    from lm_eval.api.instance import Instance

    request = Instance("generate_until", doc={}, arguments=(prompt, {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}), idx=0)
    (response,) = lm.generate_until([request])
    reference = _greedy_reference(lm, prompt, 8, "\n")
    assert response.meta["cost"]["generated_tokens"] == len(reference)
    assert response.meta["cost"]["prompt_tokens"] == len(lm.tok_encode(prompt))
    expected_flops = lm.cost_model.forward_flops(len(lm.tok_encode(prompt)) + len(reference) - 1, 0, [2, 2])
    assert response.meta["cost"]["flops"] == pytest.approx(expected_flops)


def test_expert_count_changes_outputs_and_matches_a_fresh_model(tiny_model_dir):
    from lm_eval.api.instance import Instance

    args = ("Q: 5+6\nA:", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False})
    request = Instance("generate_until", doc={}, arguments=args, idx=0)
    k2 = MoEHFLM(pretrained=str(tiny_model_dir), expert_count=2, device="cpu")
    k8 = MoEHFLM(pretrained=str(tiny_model_dir), expert_count=8, device="cpu")
    per_request = dict(args[1], expert_count=8)
    (mixed,) = k2.generate_until([Instance("generate_until", doc={}, arguments=(args[0], per_request), idx=0)])
    assert str(k8.generate_until([request])[0]) == str(mixed)
    assert mixed.meta["expert_count"] == [8, 8]


def test_request_cache_is_refused_without_opt_in(lm, tiny_task_dir, tmp_path):
    with pytest.raises(ModelArgError, match="keys responses on"):
        _run(lm, tiny_task_dir, use_cache=str(tmp_path / "cache"))


def test_bad_expert_count_arg(tiny_model_dir):
    with pytest.raises(ModelArgError, match=r"expert count 12 is out of range for this model: allowed 1\.\.8"):
        MoEHFLM(pretrained=str(tiny_model_dir), expert_count=12, device="cpu")  # read from the config alone
    with pytest.raises(ExpertCountError, match=r"needs 2 values"):
        MoEHFLM(pretrained=str(tiny_model_dir), expert_count="2:2:2", device="cpu")
    with pytest.raises(ModelArgError, match="expert_count='four'"):
        parse_expert_count("expert_count", "four")
    assert parse_expert_count("expert_count", "4:4") == (4, 4)
    assert parse_expert_count("expert_count", 3.0) == 3


def test_count_generated_tokens_stops_at_eos_or_stop_string():
    decode = lambda toks: "".join(chr(t) for t in toks)  # noqa: E731
    text = [ord(c) for c in "ab\ncd"]
    assert count_generated_tokens(text + [0, 0], {2}, ["\n"], decode) == 3
    assert count_generated_tokens([ord("a"), 2, 0, 0], {2}, ["\n"], decode) == 2
    assert count_generated_tokens([ord("a"), ord("b")], {2}, ["\n"], decode) == 2
