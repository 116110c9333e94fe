"""Dynamic MoE on every supported family (tiny random-weight models built from configs)."""

import pytest
import torch

from lm_eval_moe.moe import FAMILIES, ExpertCountError, UnsupportedModelError, attach, supported_model_types
from lm_eval_moe.testing import TINY_FAMILY_CONFIGS, tiny_config, tiny_moe

FAMILY_TYPES = sorted(TINY_FAMILY_CONFIGS)


def _ids(batch=3, length=11, seed=0):
    return torch.randint(4, 260, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_every_supported_family_has_a_tiny_model():
    assert set(FAMILY_TYPES) == set(supported_model_types())
    assert len(FAMILIES) == len(supported_model_types())


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def family_pair(request):
    """(stock model, patched copy with identical weights) of one family."""
    stock = tiny_moe(request.param, seed=3)
    patched = tiny_moe(request.param, seed=3)
    patched.load_state_dict(stock.state_dict())
    return request.param, stock, patched, attach(patched)


def test_default_k_and_no_bias_is_bitwise_stock(family_pair):
    _, stock, patched, moe = family_pair
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, patched(ids).logits)


def test_changing_k_changes_executed_experts_and_output(family_pair):
    _, _, patched, moe = family_pair
    ids = _ids()
    tokens = ids.numel()
    with torch.no_grad():
        base = patched(ids).logits
        for k in (1, 4, moe.num_experts):
            with moe.routing(expert_count=k), moe.record() as rec:
                out = patched(ids).logits
            assert rec.experts_executed() == k * tokens * moe.num_layers
            assert not torch.allclose(out, base)


def test_per_sequence_k_in_one_batch_matches_separate_runs(family_pair):
    _, _, patched, moe = family_pair
    ids = _ids()
    counts = [1, 4, moe.num_experts]
    with torch.no_grad():
        with moe.routing(row_expert_counts=counts), moe.record() as rec:
            mixed = patched(ids).logits
        alone = []
        for row, k in enumerate(counts):
            with moe.routing(expert_count=k):
                alone.append(patched(ids[row : row + 1]).logits)
    torch.testing.assert_close(mixed, torch.cat(alone), rtol=1e-5, atol=1e-5)
    per_row = sum(call.experts_per_row(len(counts)) for call in rec.calls)
    assert per_row.tolist() == [k * ids.shape[1] * moe.num_layers for k in counts]


def test_gradient_reaches_the_bias_only(family_pair):
    _, _, patched, moe = family_pair
    for param in patched.parameters():
        param.requires_grad_(False)
    bias = torch.zeros(moe.num_layers, moe.num_experts, requires_grad=True)
    with moe.routing(bias=bias):
        loss = patched(_ids(), labels=_ids()).loss
    loss.backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in patched.parameters())


def test_bias_changes_routing_towards_the_biased_expert(family_pair):
    _, _, patched, moe = family_pair
    bias = torch.zeros(moe.num_layers, moe.num_experts)
    bias[:, 5] = 50.0
    with torch.no_grad(), moe.routing(bias=bias), moe.record() as rec:
        patched(_ids())
    for call in rec.calls:
        assert (call.expert_index == 5).any(dim=-1).float().mean() > 0.9


def test_per_sequence_bias_matches_separate_runs(family_pair):
    _, _, patched, moe = family_pair
    ids = _ids(batch=2)
    bias = torch.randn(2, moe.num_layers, moe.num_experts, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with moe.routing(bias=bias):
            both = patched(ids).logits
        alone = []
        for row in range(2):
            with moe.routing(bias=bias[row]):
                alone.append(patched(ids[row : row + 1]).logits)
    torch.testing.assert_close(both, torch.cat(alone), rtol=1e-5, atol=1e-5)


def test_per_layer_expert_count(family_pair):
    _, _, patched, moe = family_pair
    counts = [(i % moe.num_experts) + 1 for i in range(moe.num_layers)]
    with torch.no_grad(), moe.routing(expert_count=counts), moe.record() as rec:
        patched(_ids())
    for call in rec.calls:
        assert int(call.active.sum(dim=-1).unique().item()) == counts[call.layer]


def test_recorded_probabilities_come_from_the_full_distribution(family_pair):
    _, _, patched, moe = family_pair
    with torch.no_grad(), moe.record(full_probs=True) as rec:
        patched(_ids())
    for call in rec.calls:
        gathered = call.full_probs.gather(1, call.expert_index)
        torch.testing.assert_close(gathered, call.expert_prob)


@pytest.mark.parametrize("implementation", ["eager", "batched_mm"])
@pytest.mark.parametrize("model_type", ["olmoe", "deepseek_v3", "gpt_oss"])
def test_other_experts_implementations(model_type, implementation):
    stock = tiny_moe(model_type, seed=5, experts_implementation=implementation)
    patched = tiny_moe(model_type, seed=5, experts_implementation=implementation)
    moe = attach(patched)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, patched(ids).logits)
        with moe.routing(row_expert_counts=[1, 3, 8]):
            mixed = patched(ids).logits
        alone = []
        for row, k in enumerate([1, 3, 8]):
            with moe.routing(expert_count=k):
                alone.append(patched(ids[row : row + 1]).logits)
    torch.testing.assert_close(mixed, torch.cat(alone), rtol=1e-5, atol=1e-5)


def test_bf16_default_is_bitwise_stock():
    stock = tiny_moe("qwen2_moe", seed=2).to(torch.bfloat16)
    patched = tiny_moe("qwen2_moe", seed=2).to(torch.bfloat16)
    attach(patched)
    with torch.no_grad():
        assert torch.equal(stock(_ids()).logits, patched(_ids()).logits)


def test_bias_is_added_in_fp32_on_a_bf16_router():
    model = tiny_moe("olmoe", seed=2).to(torch.bfloat16)
    moe = attach(model)
    with torch.no_grad():
        base = model(_ids()).logits
        with moe.routing(bias=torch.full((moe.num_layers, moe.num_experts), 0.0)):
            assert torch.equal(model(_ids()).logits, base)
        bias = torch.zeros(moe.num_layers, moe.num_experts)
        bias[:, 0] = 0.01  # below bf16 resolution at logit magnitudes ~1: must still matter
        with moe.routing(bias=bias), moe.record() as rec_biased:
            model(_ids())
        with moe.record() as rec_plain:
            model(_ids())
    assert any(
        not torch.equal(a.expert_prob, b.expert_prob) for a, b in zip(rec_biased.calls, rec_plain.calls)
    )


def test_renormalize_override_matches_the_models_own_flag():
    """OLMoE-1B-7B does not renormalise; renormalize=True must equal a config with norm_topk_prob=True."""
    plain = tiny_moe("olmoe", seed=4, norm_topk_prob=False)
    normed = tiny_moe("olmoe", seed=4, norm_topk_prob=True)
    normed.load_state_dict(plain.state_dict())
    with torch.no_grad():
        reference = normed(_ids()).logits
        attach(plain, renormalize=True)
        torch.testing.assert_close(plain(_ids()).logits, reference, rtol=0, atol=0)
        attach(plain, renormalize=False)
        assert not torch.allclose(plain(_ids()).logits, reference)


def test_greedy_generate_with_mixed_k_matches_row_by_row():
    model = tiny_moe("qwen3_moe", seed=6)
    moe = attach(model)
    prompts = _ids(batch=3, length=6, seed=9)
    counts = [2, 5, 8]
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(prompts))
    with torch.no_grad(), moe.routing(row_expert_counts=counts):
        batched = model.generate(prompts, **kwargs)
    for row, k in enumerate(counts):
        with torch.no_grad(), moe.routing(expert_count=k):
            kw = dict(kwargs, attention_mask=torch.ones_like(prompts[row : row + 1]))
            alone = model.generate(prompts[row : row + 1], **kw)
        assert batched[row].tolist() == alone[0].tolist()


def test_dense_model_is_rejected_with_the_supported_list():
    from transformers import LlamaConfig, LlamaForCausalLM

    dense = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(UnsupportedModelError, match=r"'llama' is not a supported .* olmoe.*qwen3_moe"):
        attach(dense)


def test_known_but_unsupported_family_says_why():
    from transformers import PhimoeConfig, PhimoeForCausalLM

    config = PhimoeConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, num_local_experts=4)
    with pytest.raises(UnsupportedModelError, match="hard-wired to top-2"):
        attach(PhimoeForCausalLM(config))


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True])
def test_expert_count_out_of_range_names_the_allowed_values(bad):
    moe = attach(tiny_moe("olmoe"))
    with pytest.raises(ExpertCountError, match=r"allowed 1\.\.8 routed experts, an integer"):
        moe.set_expert_count(bad)


def test_per_layer_count_needs_one_value_per_layer():
    moe = attach(tiny_moe("olmoe"))
    with pytest.raises(ExpertCountError, match="needs 2 values"):
        moe.set_expert_count([2, 2, 2])
    with pytest.raises(ExpertCountError, match="1..8"):
        moe.set_row_expert_counts([[2, 9], [1, 1]])


def test_row_counts_must_match_the_batch():
    model = tiny_moe("olmoe")
    moe = attach(model)
    moe.set_row_expert_counts([1, 2])
    with pytest.raises(RuntimeError, match="not a multiple of the 2 sequences"):
        model(_ids(batch=3, length=5))


def test_detach_restores_stock_forward():
    stock = tiny_moe("mixtral", seed=1)
    model = tiny_moe("mixtral", seed=1)
    moe = attach(model)
    moe.set_expert_count(5)
    moe.detach()
    with torch.no_grad():
        assert torch.equal(stock(_ids()).logits, model(_ids()).logits)


def test_tiny_config_rejects_unknown_family():
    with pytest.raises(ValueError, match="no tiny config for 'llama'"):
        tiny_config("llama")


@pytest.mark.parametrize("family", ["olmoe", "qwen3_moe", "mixtral", "deepseek_v3"])
def test_a_long_mixed_k_block_hands_the_experts_only_its_selected_pairs(family, monkeypatch):
    """A prefill of mixed k: the experts receive the selected (token, expert) pairs only, one per row (their work
    follows each token's k), and the logits equal the masked call's and each row's own run at its k."""
    from lm_eval_moe.moe import dynamic

    model = tiny_moe(family, seed=4)
    calls = []
    experts_type = type(next(module for name, module in model.named_modules() if name.endswith("experts")))
    stock = experts_type.forward

    def counting(self, hidden, index, weights, *args, **kwargs):
        calls.append((hidden.shape[0], index.shape[1]))
        return stock(self, hidden, index, weights, *args, **kwargs)

    monkeypatch.setattr(experts_type, "forward", counting)
    moe = attach(model)
    assert all(layer.takes_selected_pairs for layer in moe.layers)
    prompts = _ids(batch=3, length=40, seed=2)  # 120 tokens >= PAIRS_MIN_TOKENS
    counts = [1, 3, 2]
    with torch.no_grad(), moe.routing(row_expert_counts=counts):
        split = model(prompts).logits
    assert calls == [(40 * sum(counts), 1)] * moe.num_layers  # 40 tokens of each row, k pairs each
    monkeypatch.setattr(dynamic, "PAIRS_MIN_TOKENS", 10_000)
    with torch.no_grad(), moe.routing(row_expert_counts=counts):
        masked = model(prompts).logits
    torch.testing.assert_close(split, masked, rtol=1e-5, atol=1e-5)
    for row, k in enumerate(counts):
        with torch.no_grad(), moe.routing(expert_count=k):
            torch.testing.assert_close(split[row], model(prompts[row : row + 1]).logits[0], rtol=1e-5, atol=1e-5)
    moe.detach()
    assert "forward" not in vars(moe.layers[0].experts) and "forward" not in vars(moe.layers[0].router)
