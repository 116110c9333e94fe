"""The step engine against plain transformers generation."""

import pytest
import torch

from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation import Expansion, SamplingConfig, StepEngine, root_node
from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.moe import attach
from lm_eval_moe.testing import byte_tokenizer, tiny_moe

PROMPTS = ["Q: 1+2\nA:", "Hello there, how are", "xyz"]


@pytest.fixture(scope="module", params=["olmoe", "deepseek_v3", "qwen2_moe"])
def policy(request):
    model = tiny_moe(request.param, seed=1)
    moe = attach(model)
    return model, byte_tokenizer(), moe, CostModel.from_model(model, moe)


def make_engine(policy, cache_mode="auto", delimiter="\n\n", temperature=0.0):
    model, tok, moe, _ = policy
    return StepEngine(model, tok, moe, SamplingConfig(temperature=temperature), delimiter=delimiter, cache_mode=cache_mode)


def context(policy, problems=3):
    """A batch context for problems 0..problems-1 (one cost ledger each)."""
    return BatchContext.for_problems(range(problems), policy[3])


def hf_greedy(policy, prompt, k, new_tokens):
    model, tok, moe, _ = policy
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad(), moe.routing(expert_count=k):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("cache_mode", ["reuse", "reread"])
def test_two_steps_with_mixed_k_equal_greedy_generation_per_k(policy, cache_mode):
    tok = policy[1]
    engine = make_engine(policy, cache_mode, delimiter="\x00never")
    roots = [root_node(i, tuple(tok.encode(p)), (2, 2)) for i, p in enumerate(PROMPTS)]
    counts = [(2, 2), (4, 4), (8, 8)]
    batch = context(policy)
    first = engine.expand([Expansion(r, i, 5, expert_count=k) for i, (r, k) in enumerate(zip(roots, counts))], batch)
    # fork the first child twice and continue the third: inheritance of k, cache rows duplicated
    second = engine.expand([Expansion(first[0], 1, 7), Expansion(first[0], 2, 7), Expansion(first[2], 3, 7)], batch)
    assert second[0].token_ids == second[1].token_ids == tuple(hf_greedy(policy, PROMPTS[0], 2, 12))
    assert second[2].token_ids == tuple(hf_greedy(policy, PROMPTS[2], 8, 12))
    assert second[2].expert_count == (8, 8) and second[2].step_ends == (5, 12)


def test_a_step_ends_at_the_delimiter():
    """On the shipped demo policy, which separates its steps by blank lines (a random model's greedy text has
    no reliable delimiter: qwen2_moe's repeats one invalid byte): the step ends right after the first
    "\n\n", where plain greedy generation goes on."""
    from transformers import AutoModelForCausalLM

    from lm_eval_moe.checkpoints import resolve_checkpoint
    from lm_eval_moe.demo.arith import problems
    from lm_eval_moe.demo.policy import DIFFICULTY, policy_text

    model = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe"), dtype=torch.float32)
    moe = attach(model)
    demo = (model, byte_tokenizer(), moe, CostModel.from_model(model, moe))
    prompt = policy_text(problems(8, 1, held_out=True, difficulty=DIFFICULTY)[0])[0]
    reference = hf_greedy(demo, prompt, 2, 40)
    text = demo[1].decode(reference)
    assert text.isascii() and "\n\n" in text[:-2]  # one token per character; the first step ends early
    root = root_node(0, tuple(demo[1].encode(prompt)), (2,) * model.config.num_hidden_layers)
    (child,) = make_engine(demo).expand([Expansion(root, 0, 40)], context(demo, 1))
    assert child.token_ids == tuple(reference[: text.index("\n\n") + 2]) and not child.finished


def test_eos_and_stop_strings_finish_a_candidate(policy):
    tok = policy[1]
    reference = hf_greedy(policy, PROMPTS[0], 2, 10)
    engine = make_engine(policy, delimiter="\x00never")
    engine.eos_ids = {reference[3]}
    (child,) = engine.expand([Expansion(root_node(0, tuple(tok.encode(PROMPTS[0])), (2, 2)), 0, 10)], context(policy, 1))
    assert child.finished and child.finish_reason == "eos" and len(child.token_ids) == reference.index(reference[3]) + 1
    engine = make_engine(policy, delimiter="\x00never")
    text = tok.decode(reference[:6])
    batch = context(policy, 1)
    batch.stop_strings = {0: (text[-1],)} if text[-1].strip() else {0: (text[-2:],)}
    (child,) = engine.expand([Expansion(root_node(0, tuple(tok.encode(PROMPTS[0])), (2, 2)), 0, 10)], batch)
    assert child.finished and child.finish_reason == "stop" and len(child.token_ids) <= 6


def test_sampling_depends_only_on_the_seed(policy):
    tok = policy[1]
    engine = make_engine(policy, temperature=1.0, delimiter="\x00never")
    root = root_node(0, tuple(tok.encode(PROMPTS[0])), (2, 2))
    other = root_node(1, tuple(tok.encode(PROMPTS[1])), (2, 2))
    batch = context(policy, 2)
    alone = engine.expand([Expansion(root, 42, 8)], batch)[0]
    engine.reset()
    batched = engine.expand([Expansion(other, 7, 8, expert_count=(8, 8)), Expansion(root, 42, 8)], batch)[1]
    different = engine.expand([Expansion(root, 43, 8)], batch)[0]
    assert alone.token_ids == batched.token_ids != different.token_ids


def test_hybrid_caches_fall_back_to_rereading():
    model = tiny_moe("lfm2_moe", seed=1)
    moe = attach(model)
    tok = byte_tokenizer()
    engine = StepEngine(model, tok, moe, SamplingConfig(temperature=0.0), delimiter="\x00never")
    batch = BatchContext.for_problems([0], CostModel.from_model(model, moe))
    first = engine.expand([Expansion(root_node(0, tuple(tok.encode(PROMPTS[0])), (2, 2)), 0, 4)], batch)
    assert engine.cache_mode == "reread"
    engine.expand([Expansion(first[0], 0, 4)], batch)
    assert batch.ledgers[0].cost.reprocessed_tokens > 0


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (0.8, 0, 1.0), (1.0, 5, 1.0), (0.7, 0, 0.6),
                                                        (1.0, 40, 0.9)])
def test_batched_sampling_draws_what_each_row_draws_alone(temperature, top_k, top_p):
    """sample_rows over a batch equals, row by row, the reference draw: that row's filtered distribution
    (temperature, top-k, smallest prefix reaching top_p) sampled with its own generator alone."""
    from lm_eval_moe.generation.sampling import make_generator, sample_rows

    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = torch.randn(9, 300, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, :12] = 6.0  # ties at the top
    tokens, logprobs = sample_rows(logits, config, [make_generator(seed, "cpu") for seed in range(9)])
    for row, (token, logprob) in enumerate(zip(tokens, logprobs)):
        assert logprob == pytest.approx(float(torch.log_softmax(logits[row], -1)[token]), abs=1e-6)
        if temperature == 0:
            assert token == int(logits[row].argmax())
            continue
        scaled = logits[row] / temperature
        if top_k:
            scaled = scaled.masked_fill(scaled < scaled.topk(top_k).values[-1], float("-inf"))
        probs = torch.softmax(scaled, -1)
        order = probs.argsort(descending=True)
        kept = order[: int((probs[order].cumsum(0) - probs[order] <= top_p).sum())]
        reference = torch.zeros_like(probs)
        reference[kept] = probs[kept]
        assert token == int(torch.multinomial(reference, 1, generator=make_generator(row, "cpu")))
        alone, _ = sample_rows(logits[row : row + 1], config, [make_generator(row, "cpu")])
        assert alone == [token]
