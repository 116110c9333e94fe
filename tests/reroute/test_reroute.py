"""Online test-time rerouting on tiny random-weight MoE models."""

import pytest
import torch

from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation import SamplingConfig
from lm_eval_moe.moe import attach
from lm_eval_moe.reroute import RerouteSettings, Rerouter, ScaledAdam, layer_weights
from lm_eval_moe.reroute.confidence import random_layer_rank
from lm_eval_moe.testing import byte_tokenizer, tiny_moe

PROMPTS = ["Q: 1+2\nA: 3\nQ: 2+2\nA:", "Hello world, this is a test of"]
GREEDY = SamplingConfig(temperature=0.0)


def rerouter(model_type="olmoe", **config):
    model = tiny_moe(model_type, seed=1)
    moe = attach(model)
    tok = byte_tokenizer()
    return Rerouter(model, tok, moe, CostModel.from_model(model, moe), RerouteSettings(**config)), tok


def test_scaled_adam_is_torch_adam_at_scale_one():
    torch.manual_seed(0)
    ours = torch.zeros(2, 3, 4, requires_grad=True)
    theirs = torch.zeros(2, 3, 4, requires_grad=True)
    mine, reference = ScaledAdam(ours, 0.05, eps=1e-5, weight_decay=1e-8), torch.optim.Adam([theirs], 0.05, eps=1e-5,
                                                                                             weight_decay=1e-8)
    for _ in range(5):
        target = torch.randn(2, 3, 4)
        for param in (ours, theirs):
            param.grad = None
            ((param - target) ** 2).sum().backward()
        mine.step(torch.ones(2, 3))
        reference.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)


def test_a_frozen_row_keeps_its_delta_and_its_adam_state():
    """Hard selection with layer_weighting=gradient: a layer selected in an earlier phase and not in this one
    stays where it is (Eq. 7); torch's Adam, handed its zero weighted gradient, kept moving it on momentum."""
    delta = torch.zeros(1, 2, 3, requires_grad=True)
    adam = ScaledAdam(delta, 0.05)
    for _ in range(3):  # phase 1: both layers selected
        delta.grad = torch.ones(1, 2, 3)
        adam.step(torch.ones(1, 2))
    before, state = delta.detach().clone(), (adam.exp_avg.clone(), adam.exp_avg_sq.clone(), adam.steps.clone())
    frozen = torch.tensor([[False, True]])  # phase 2: layer 1 not selected
    for _ in range(3):
        delta.grad = torch.ones(1, 2, 3) * torch.tensor([1.0, 0.0]).view(1, 2, 1)  # w_l * gradient
        adam.step(torch.ones(1, 2), frozen=frozen)
    assert torch.equal(delta.detach()[0, 1], before[0, 1]) and not torch.equal(delta.detach()[0, 0], before[0, 0])
    assert torch.equal(adam.exp_avg[0, 1], state[0][0, 1]) and torch.equal(adam.exp_avg_sq[0, 1], state[1][0, 1])
    assert adam.steps.tolist() == [[6.0, 3.0]]


@pytest.mark.parametrize("steps, lr", [(0, 0.05), (3, 0.0)])
def test_without_updates_generation_is_plain_greedy(steps, lr):
    rr, tok = rerouter(steps=steps, lr=lr, interval=4)
    for index, prompt in enumerate(PROMPTS):
        (outcome,) = rr.generate([tok.encode(prompt)], 12, GREEDY, [index])
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            reference = rr.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                          do_sample=False, pad_token_id=0, eos_token_id=None)
        assert outcome.tokens == reference[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("model_type", ["olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v2", "mixtral"])
def test_phase_one_lowers_the_loss_and_leaves_the_model_alone(model_type):
    rr, tok = rerouter(model_type, steps=4, lr=0.5, interval=6)
    before = {k: v.clone() for k, v in rr.model.state_dict().items()}
    outcomes = rr.generate([tok.encode(p) for p in PROMPTS], 12, GREEDY, [0, 1])
    for outcome in outcomes:
        assert len(outcome.phases) == 2  # after the prompt, then after 6 tokens
        for phase in outcome.phases:
            assert phase["loss_after"] < phase["loss_per_step"][0]
    after = rr.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad for p in rr.model.parameters())


def test_hard_selection_changes_only_the_selected_layers():
    rr, tok = rerouter("qwen2_moe", steps=2, lr=0.5, interval=50, layer_selection="hard", layer_fraction=0.5)
    (outcome,) = rr.generate([tok.encode(PROMPTS[0])], 4, GREEDY, [0])
    phase = outcome.phases[0]
    assert len(phase["selected_layers"]) == 1
    chosen = phase["selected_layers"][0]
    norms = outcome.block_deltas[0].norm(dim=-1)
    assert norms[chosen] > 0 and all(norms[i] == 0 for i in range(len(norms)) if i != chosen)


def test_soft_selection_scales_each_layers_update_by_its_weight():
    """One step: the soft update of layer l is exactly w_l times the unscaled Adam update (hard selection
    of every layer gives weight 1 to all)."""
    soft, tok = rerouter("olmoe", steps=1, lr=0.1, interval=50)
    unscaled, _ = rerouter("olmoe", steps=1, lr=0.1, interval=50, layer_selection="hard", layer_fraction=1.0)
    prompt = [tok.encode(PROMPTS[1])]
    (scaled_run,) = soft.generate(prompt, 2, GREEDY, [0])
    (full_run,) = unscaled.generate(prompt, 2, GREEDY, [0])
    weights = torch.tensor(scaled_run.phases[0]["layer_weights"])
    assert full_run.phases[0]["layer_weights"] == [1.0, 1.0] and 0 < weights.min() < weights.max() < 1
    torch.testing.assert_close(scaled_run.block_deltas[0], weights.unsqueeze(-1) * full_run.block_deltas[0],
                               rtol=1e-4, atol=1e-8)


def test_gradient_weighting_is_adam_on_the_weighted_gradient():
    """layer_weighting=gradient (Eq. 7, Algorithm 1): plain Adam on w_l * gradient. Adam's first step is
    lr * g / (|g| + eps / w_l): the weight acts only through eps, so each layer moves more than under the
    default (lr, Section 3.3), which moves layer l by exactly w_l times Adam's step."""
    by_lr, tok = rerouter("olmoe", steps=1, lr=0.1, interval=50)
    by_gradient, _ = rerouter("olmoe", steps=1, lr=0.1, interval=50, layer_weighting="gradient")
    prompt = [tok.encode(PROMPTS[1])]
    (lr_run,) = by_lr.generate(prompt, 2, GREEDY, [0])
    (gradient_run,) = by_gradient.generate(prompt, 2, GREEDY, [0])
    weights = torch.tensor(gradient_run.phases[0]["layer_weights"])
    assert gradient_run.phases[0]["layer_weights"] == lr_run.phases[0]["layer_weights"]
    assert 0 < weights.min() < weights.max() < 1
    moved = gradient_run.block_deltas[0].abs().amax(dim=-1)
    assert moved.max() <= 0.1 + 1e-6 and (moved > lr_run.block_deltas[0].abs().amax(dim=-1)).all()

    # the same update as torch's Adam handed the weighted gradient, recomputed from the recorded loss
    deltas = torch.zeros(1, by_gradient.moe.num_layers, by_gradient.moe.num_experts, requires_grad=True)
    ids = torch.tensor(prompt)
    with by_gradient.moe.routing(bias=deltas):
        logits = by_gradient.model(input_ids=ids).logits
    torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).backward()
    deltas.grad.mul_(weights.view(1, -1, 1))
    reference = torch.optim.Adam([deltas], 0.1, eps=1e-5, weight_decay=1e-8)
    reference.step()
    torch.testing.assert_close(gradient_run.block_deltas[0], deltas.detach()[0], rtol=1e-4, atol=1e-6)


def test_confidence_order_and_layer_weights():
    confidence = torch.tensor([[1.0, 3.0, 2.0, 4.0]])
    torch.testing.assert_close(layer_weights(confidence, "soft", 0.5, "paper"), torch.tensor([[0.1, 0.3, 0.2, 0.4]]))
    inverse = layer_weights(confidence, "soft", 0.5, "inverse")
    assert inverse.argmax().item() == 0 and torch.isclose(inverse.sum(), torch.tensor(1.0))
    assert layer_weights(confidence, "hard", 0.5, "paper").tolist() == [[0.0, 1.0, 0.0, 1.0]]
    assert layer_weights(confidence, "hard", 0.5, "inverse").tolist() == [[1.0, 0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match="layer_selection='top'"):
        layer_weights(confidence, "top", 0.5, "paper")


def test_ablation_layer_selections():
    confidence = torch.tensor([[1.0, 3.0, 2.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    assert layer_weights(confidence, "all", 0.5, "paper").tolist() == [[1.0] * 4] * 2
    assert layer_weights(confidence, "last", 0.25, "paper").tolist() == [[0.0, 0.0, 0.0, 1.0]] * 2
    rank = random_layer_rank([7, 8], 4)
    assert torch.equal(rank, random_layer_rank([7, 8], 4)) and not torch.equal(rank[0], rank[1])
    chosen = layer_weights(confidence, "random", 0.5, "paper", rank)
    assert chosen.sum(dim=-1).tolist() == [2.0, 2.0]
    assert torch.equal(chosen, layer_weights(confidence.flip(-1), "random", 0.5, "paper", rank))  # ignores C
    with pytest.raises(ValueError, match="random needs"):
        layer_weights(confidence, "random", 0.5, "paper")


def test_random_selection_updates_only_the_drawn_layers_per_sample():
    rr, tok = rerouter("qwen2_moe", steps=2, lr=0.5, interval=50, layer_selection="random", layer_fraction=0.5)
    outcomes = rr.generate([tok.encode(p) for p in PROMPTS[:2]], 4, GREEDY, [11, 12])
    for outcome, seed in zip(outcomes, [11, 12]):
        (chosen,) = outcome.phases[0]["selected_layers"]
        assert chosen == int(random_layer_rank([seed], 2)[0].argmax())
        norms = outcome.block_deltas[0].norm(dim=-1)
        assert norms[chosen] > 0 and all(norms[i] == 0 for i in range(len(norms)) if i != chosen)


def test_next_token_after_an_update_equals_a_fresh_forward_under_the_new_deltas():
    """No stale cache: every token is the argmax of a full forward over the whole context under the
    deltas in effect for its block."""
    interval = 3
    rr, tok = rerouter("olmoe", steps=3, lr=2.0, interval=interval)
    prompt = tok.encode(PROMPTS[0])
    (outcome,) = rr.generate([prompt], 9, GREEDY, [0])
    assert len(outcome.block_deltas) == 3 and not torch.equal(outcome.block_deltas[0], outcome.block_deltas[1])
    for position, token in enumerate(outcome.tokens):
        deltas = outcome.block_deltas[position // interval]
        context = torch.tensor([prompt + outcome.tokens[:position]])
        with torch.no_grad(), rr.moe.routing(bias=deltas.unsqueeze(0)):
            expected = int(rr.model(context).logits[0, -1].argmax())
        assert token == expected, position


def test_batched_rows_equal_single_rows():
    rr, tok = rerouter("qwen3_moe", steps=2, lr=0.5, interval=5)
    both = rr.generate([tok.encode(p) for p in PROMPTS], 10, GREEDY, [0, 1])
    for index, prompt in enumerate(PROMPTS):
        (alone,) = rr.generate([tok.encode(prompt)], 10, GREEDY, [index])
        assert alone.tokens == both[index].tokens
        assert alone.phases[0]["loss_per_step"] == pytest.approx(both[index].phases[0]["loss_per_step"], rel=1e-4)


def test_memory_bounding_options_run_and_lower_the_loss():
    for options in ({"loss_window": 8}, {"gradient_checkpointing": True}):
        rr, tok = rerouter("olmoe", steps=3, lr=0.5, interval=50, **options)
        (outcome,) = rr.generate([tok.encode(PROMPTS[1])], 3, GREEDY, [0])
        losses = outcome.phases[0]["loss_per_step"]
        assert losses[-1] < losses[0]
    plain, tok = rerouter("olmoe", steps=3, lr=0.5, interval=50)
    checkpointed, _ = rerouter("olmoe", steps=3, lr=0.5, interval=50, gradient_checkpointing=True)
    a = plain.generate([tok.encode(PROMPTS[1])], 3, GREEDY, [0])[0]
    b = checkpointed.generate([tok.encode(PROMPTS[1])], 3, GREEDY, [0])[0]
    torch.testing.assert_close(a.block_deltas[0], b.block_deltas[0], rtol=1e-5, atol=1e-7)


def test_costs_count_the_optimisation_separately():
    rr, tok = rerouter("olmoe", steps=2, lr=0.5, interval=4)
    prompt = tok.encode(PROMPTS[0])
    (outcome,) = rr.generate([prompt], 8, GREEDY, [0])
    cost = outcome.cost
    assert cost.generated_tokens == 8 and cost.prompt_tokens == len(prompt)
    # two phases (prompt, prompt+4) of 2 forward+backward steps; one re-prefill after the second update,
    # of which the last token (sampled, not yet fed) is decoding's own forward
    assert cost.extra_forward_tokens == 2 * len(prompt) + 2 * (len(prompt) + 4) + (len(prompt) + 3)
    assert cost.extra_backward_tokens == 2 * len(prompt) + 2 * (len(prompt) + 4)
    assert cost.extra_flops > cost.flops > 0
    # the main cost is exactly plain decoding's: the prompt, then each generated token but the last
    counts = rr.moe.current_k
    plain = rr.cost_model.forward_flops(len(prompt), 0, counts) + sum(
        rr.cost_model.forward_flops(1, len(prompt) + i, counts) for i in range(7))
    assert cost.flops == pytest.approx(plain, rel=1e-12)
    assert cost.routed_expert_tokens == (len(prompt) + 7) * sum(counts)


def test_phase_one_backward_is_costed_from_frozen_weight_gradients():
    """No weight gradients: the backward is one matmul per weight matmul plus two per attention product
    (lm_eval_moe/cost.py), not the 2x forward of training; with gradient checkpointing the recomputed
    forward is added."""
    rr, tok = rerouter("olmoe", steps=1, lr=0.5, interval=50)
    prompt = tok.encode(PROMPTS[0])
    (outcome,) = rr.generate([prompt], 1, GREEDY, [0])
    model, counts, n = rr.cost_model, rr.moe.current_k, len(prompt)
    forward = model.forward_flops(n, 0, counts)
    backward = model.frozen_backward_flops(n, 0, counts)
    assert outcome.cost.extra_flops == pytest.approx(forward + backward, rel=1e-12)
    # the first decoder layer (it holds the first router) needs no backward; the rest one matmul per matmul
    first_layer = model.backward_skipped_dense_params
    assert first_layer > 0 and model.backward_skipped_attention_layers == 1
    expected = n * 2 * (model.dense_params - first_layer + counts[1] * model.expert_params[1]) + model.attention_flops(n, 0)
    assert backward == pytest.approx(expected, rel=1e-12) and backward < forward
    checkpointed, _ = rerouter("olmoe", steps=1, lr=0.5, interval=50, gradient_checkpointing=True)
    (recomputed,) = checkpointed.generate([prompt], 1, GREEDY, [0])
    assert recomputed.cost.extra_flops == pytest.approx(2 * forward + backward, rel=1e-12)


def test_backward_formula_bounds_the_counted_backward():
    """The formula against torch's flop counter on a real frozen-weight backward (eager experts and attention,
    which the counter sees; eager attention computes the full square where the formula counts the causal
    half)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = tiny_moe("olmoe", seed=1, experts_implementation="eager")
    model.set_attn_implementation("eager")
    moe = attach(model)
    for param in model.parameters():
        param.requires_grad_(False)
    ids = torch.randint(0, model.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    deltas = torch.zeros(1, moe.num_layers, moe.num_experts, requires_grad=True)
    with torch.enable_grad(), moe.routing(bias=deltas):
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:])
        with FlopCounterMode(display=False) as counter:
            loss.backward()
    formula = CostModel.from_model(model, moe).frozen_backward_flops(24, 0, moe.current_k)
    assert 0.85 <= formula / counter.get_total_flops() <= 1.15


def test_config_errors_name_the_value():
    from lm_eval_moe.model_args import ModelArgError, take_settings

    with pytest.raises(ModelArgError, match="layer_fraction=0"):
        take_settings(RerouteSettings, {"layer_selection": "hard", "layer_fraction": 0})
    with pytest.raises(ModelArgError, match="confidence_order='reverse': expected one of paper, inverse"):
        take_settings(RerouteSettings, {"confidence_order": "reverse"})


def test_substitutions_count_the_experts_a_pathway_swapped():
    from lm_eval_moe.reroute.pathways import substitutions

    before = torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, -1]]])  # (tokens, layers, k)
    after = torch.tensor([[[1, 0], [2, 7]], [[6, 7], [6, -1]]])
    assert substitutions(before, after).tolist() == [[0, 1], [2, 0]]  # order within a layer does not count


def test_pathway_stats_against_an_independent_routing():
    """Zero deltas: no edit and equal confidence. A large delta on one expert per layer: checked against
    pathways read here from one unpadded forward per row and per routing, counted with Python sets (deeper
    layers change too: their inputs changed), and that expert is in every rerouted pathway."""
    from lm_eval_moe.reroute.pathways import pathway_stats

    rr, tok = rerouter("olmoe")
    prompts = [tok.encode(p) for p in PROMPTS]
    generated = [tok.encode(" 4\nQ: 3+3"), tok.encode(" example")]
    layers, experts = rr.moe.num_layers, rr.moe.num_experts
    zero = [torch.zeros(layers, experts)] * 2
    for report in pathway_stats(rr.model, rr.moe, rr.pad_id, prompts, generated, zero):
        assert report["edit_distance"] == 0 and report["confidence_before"] == pytest.approx(report["confidence_after"])
    pushed = torch.zeros(layers, experts)
    pushed[:, 5] = 50.0

    def read(text, tokens, bias):
        with torch.no_grad(), rr.moe.routing(bias=bias), rr.moe.record(full_probs=True) as recorder:
            rr.model(torch.tensor([text]))
        calls = sorted(recorder.calls, key=lambda c: c.layer)
        sets = [[set(c.expert_index[t].tolist()) for c in calls] for t in range(len(text) - tokens, len(text))]
        confidence = [float(c.full_probs[-tokens:].max(dim=-1).values.mean()) for c in calls]
        return sets, confidence

    reports = pathway_stats(rr.model, rr.moe, rr.pad_id, prompts, generated, [pushed, pushed])
    for prompt, tokens, report in zip(prompts, generated, reports):
        before, confidence_before = read(prompt + tokens, len(tokens), None)
        after, confidence_after = read(prompt + tokens, len(tokens), pushed.unsqueeze(0))
        assert all(5 in layer for token in after for layer in token)
        edits = [sum(len(a - b) for a, b in zip(token_after, token_before)) for token_after, token_before in zip(after, before)]
        assert report["edit_distance"] == pytest.approx(sum(edits) / len(edits), rel=1e-6) and sum(edits) > 0
        assert report["changed_fraction"] == pytest.approx(sum(edits) / len(edits) / (layers * 2), rel=1e-6)
        assert report["confidence_before"] == pytest.approx(confidence_before, rel=1e-5)
        assert report["confidence_after"] == pytest.approx(confidence_after, rel=1e-5)
        assert min(report["confidence_after"]) > max(report["confidence_before"])
