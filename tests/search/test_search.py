"""Search strategies on a tiny random policy and a tiny PRM: structure, invariants, accounting."""

import dataclasses

import pytest

from lm_eval_moe.cost import CostModel
from lm_eval_moe.generation import SamplingConfig, StepEngine
from lm_eval_moe.generation.batch import BatchContext
from lm_eval_moe.moe import attach
from lm_eval_moe.search import STRATEGIES, Problem, SearchConfig
from lm_eval_moe.search.common import replicate, select_final, Candidate
from lm_eval_moe.search.driver import run_search
from lm_eval_moe.testing import byte_tokenizer, tiny_moe
from lm_eval_moe.verifiers import aggregate, load_verifier
from lm_eval_moe.scoring import check_math

K2 = (2, 2)


@pytest.fixture(scope="module")
def policy():
    model = tiny_moe("olmoe", seed=1)
    moe = attach(model)
    return model, byte_tokenizer(), moe, CostModel.from_model(model, moe)


@pytest.fixture(scope="module")
def verifier(qwen_prm_dir):
    return load_verifier(str(qwen_prm_dir))


def engine(policy, cache_mode="auto", temperature=1.0):
    model, tok, moe, _ = policy
    # "e" is a frequent byte: random policies end steps often enough for multi-step trees
    return StepEngine(model, tok, moe, SamplingConfig(temperature=temperature), delimiter="e", cache_mode=cache_mode)


def search(policy, strategy, problems, config, engine, verifier):
    """``run_search`` with a fresh batch context (one cost ledger per problem)."""
    context = BatchContext.for_problems([p.index for p in problems], policy[3], {p.index: p.stop_strings for p in problems})
    return run_search(STRATEGIES[strategy].algorithm, problems, config, engine, verifier, context)


def problems(policy, count=2):
    tok = policy[1]
    return [Problem(i, tuple(tok.encode(f"Problem {i}: compute {i}+{i}.")), f"compute {i}+{i}", seed=100 + i,
                    base_expert_count=K2, answer_key=check_math.key) for i in range(count)]


CONFIG = SearchConfig(budget=8, keep=2, max_steps=4, max_step_tokens=6, max_tokens=30)


def texts(outcome):
    return [(c.text, c.score, c.expert_count) for c in outcome.result.candidates]


def test_des_with_the_default_k_is_beam_search(policy, verifier):
    des = search(policy, "des", problems(policy), dataclasses.replace(CONFIG, expert_counts=(K2,)),
                     engine(policy), verifier)
    beam = search(policy, "beam", problems(policy), CONFIG, engine(policy), verifier)
    for a, b in zip(des, beam):
        assert texts(a) and texts(a) == texts(b)
        assert a.result.selected == b.result.selected
        assert a.cost.generated_tokens == b.cost.generated_tokens


def test_des_splits_the_budget_over_k_and_paths_inherit_their_k(policy, verifier):
    counts = ((1, 1), (2, 2), (4, 4), (8, 8))
    config = dataclasses.replace(CONFIG, expert_counts=counts)
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)
    first = [n for n in outcome.nodes if n.depth == 1]
    assert len(first) == 8 and sorted(n.expert_count for n in first) == sorted(c for c in counts for _ in range(2))
    for node in outcome.nodes:
        ancestor = node
        while ancestor.depth > 1:
            ancestor = ancestor.parent
            assert ancestor.expert_count == node.expert_count
    assert outcome.result.steps[0]["expert_count_mean"] == pytest.approx(sum(c[0] for c in counts) / 4)
    assert {c.expert_count for c in outcome.result.candidates} <= set(counts)

def test_des_without_inheritance_draws_each_childs_k_from_k(policy, verifier):
    counts = ((1, 1), (2, 2), (4, 4), (8, 8))
    config = dataclasses.replace(CONFIG, expert_counts=counts, inherit=False)
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)
    deeper = [n for n in outcome.nodes if n.depth > 1]
    assert deeper and {n.expert_count for n in deeper} <= set(counts)
    assert any(n.expert_count != n.parent.expert_count for n in deeper)  # 8 children per step, 4 choices
    first = sorted(n.expert_count for n in outcome.nodes if n.depth == 1)
    assert first == sorted(c for c in counts for _ in range(2))  # t = 0 is the same split as with inheritance
    again = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)[0]
    assert [n.expert_count for n in again.nodes] == [n.expert_count for n in outcome.nodes]  # seeded



def test_adaptive_shares_follow_the_scores_and_spend_exactly_n():
    from lm_eval_moe.search.des_adaptive import shares

    assert shares([0.9, 0.3], 8) == [6, 2]  # 1 each, then 6 split 4.5 : 1.5; the tied remainder to the first
    assert shares([1.0, 0.0, 0.0], 8) == [6, 1, 1]  # every live k keeps one expansion
    assert shares([0.0, 0.0], 5) == [3, 2]  # no signal: even, ties to K's order
    for weights, total in (([0.2, 0.5, 0.3], 16), ([0.99, 0.01, 0.5, 0.5], 9), ([0.4], 3)):
        split = shares(weights, total)
        assert sum(split) == total and min(split) >= 1
        ranked = [c for _, c in sorted(zip(weights, split), key=lambda pair: -pair[0])]
        assert ranked == sorted(ranked, reverse=True)  # a better-scored k never gets less


def test_adaptive_des_moves_the_budget_to_the_better_scored_k(policy, verifier):
    from lm_eval_moe.search.des_adaptive import shares

    counts = ((1, 1), (2, 2), (4, 4), (8, 8))
    config = dataclasses.replace(CONFIG, expert_counts=counts, keep=4)
    (outcome,) = search(policy, "des_adaptive", problems(policy, 1), config, engine(policy), verifier)
    nodes = outcome.nodes
    scores = {}  # every scored path of each k so far, rebuilt from the trace
    for record in outcome.result.steps:
        step = record["step"]
        expanded = [n for n in nodes if n.depth == step + 1]
        assert len(expanded) == record["expanded"] and len(expanded) <= config.budget
        if step > 0:
            live = sorted({n.expert_count for n in expanded}, key=counts.index)
            means = [sum(scores[k]) / len(scores[k]) for k in live]
            per_k = [sum(n.expert_count == k for n in expanded) for k in live]
            assert per_k == shares(means, config.budget)
        for node, score in zip(expanded, record["scores"]):
            scores.setdefault(node.expert_count, []).append(score)
        for node in expanded:
            assert node.depth == 1 or node.expert_count == node.parent.expert_count  # inheritance


def test_adaptive_des_with_one_k_is_des(policy, verifier):
    config = dataclasses.replace(CONFIG, expert_counts=(K2,))
    adaptive = search(policy, "des_adaptive", problems(policy), config, engine(policy), verifier)
    plain = search(policy, "des", problems(policy), config, engine(policy), verifier)
    for a, b in zip(adaptive, plain):
        assert texts(a) and texts(a) == texts(b) and a.result.selected == b.result.selected


def test_top_m_keeps_the_best_live_candidates(policy, verifier):
    config = dataclasses.replace(CONFIG, expert_counts=((1, 1), (4, 4)))
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)
    by_depth = {}
    for node in outcome.nodes:
        by_depth.setdefault(node.depth, []).append(node)
    for step in outcome.result.steps[:-1]:
        nodes = by_depth[step["step"] + 1]
        live = [i for i, n in enumerate(nodes) if not n.finished]
        best = sorted(live, key=lambda i: (-step["scores"][i], i))[: config.keep]
        assert sorted(step["kept"]) == sorted(best)
        next_parents = {n.parent.id for n in by_depth.get(step["step"] + 2, [])}
        assert next_parents <= {nodes[i].id for i in step["kept"]}


def test_rounding_and_refill_options(policy, verifier):
    assert [n for n in replicate(["a", "b", "c"], 7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert replicate(["a", "b", "c"], 7, "floor") == ["a", "b", "c", "a", "b", "c"]
    config = dataclasses.replace(CONFIG, budget=7, keep=2, expert_counts=((1, 1), (4, 4)), rounding="floor")
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)
    assert outcome.result.steps[0]["expanded"] == 6
    config = dataclasses.replace(config, rounding="round_robin")
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy), verifier)
    assert outcome.result.steps[0]["expanded"] == 7


def test_scores_are_the_configured_aggregation(policy, verifier):
    config = dataclasses.replace(CONFIG, aggregation="min")
    (outcome,) = search(policy, "best_of_n", problems(policy, 1), config, engine(policy), verifier)
    for cand in outcome.result.candidates:
        assert cand.score == aggregate(cand.step_scores, "min")


def test_dvts_returns_only_finished_or_answered_candidates(policy, verifier):
    (outcome,) = search(policy, "dvts", problems(policy, 1), CONFIG, engine(policy), verifier)
    assert outcome.result.candidates
    for cand in outcome.result.candidates:
        assert cand.finish_reason in ("eos", "length", "stop", "answer")


def test_search_is_deterministic_and_independent_of_batching(policy, verifier):
    config = dataclasses.replace(CONFIG, expert_counts=((1, 1), (2, 2), (4, 4)))
    together = search(policy, "des", problems(policy), config, engine(policy), verifier)
    again = search(policy, "des", problems(policy), config, engine(policy), verifier)
    alone = [search(policy, "des", [p], config, engine(policy), verifier)[0] for p in problems(policy)]
    for a, b, c in zip(together, again, alone):
        assert texts(a) == texts(b) == texts(c)


def test_cache_reuse_gives_the_same_search_as_rereading(policy, verifier):
    config = dataclasses.replace(CONFIG, expert_counts=((1, 1), (4, 4)))
    reuse_engine, reread_engine = engine(policy, "reuse"), engine(policy, "reread")
    reuse = search(policy, "des", problems(policy), config, reuse_engine, verifier)
    reread = search(policy, "des", problems(policy), config, reread_engine, verifier)
    for a, b in zip(reuse, reread):
        assert texts(a) == texts(b)
        assert a.cost.generated_tokens == b.cost.generated_tokens
        assert a.cost.reprocessed_tokens == 0 < b.cost.reprocessed_tokens
    assert reuse_engine.forward_calls < reread_engine.forward_calls


def test_token_and_flops_accounting_equals_an_independent_count(policy, verifier):
    """Recount from the search tree: every generated token once; per expansion the row processes its
    parent's pending token and all new tokens but the last; each (root, k) prefills the prompt once."""
    cost_model = policy[3]
    config = dataclasses.replace(CONFIG, expert_counts=((1, 1), (4, 4)))
    (outcome,) = search(policy, "des", problems(policy, 1), config, engine(policy, "reuse"), verifier)
    prompt = len(outcome.problem.prompt_ids)
    generated = flops = routed = 0
    prefills = {node.root.id: set() for node in outcome.nodes}
    for node in outcome.nodes:
        before = len(node.parent.token_ids)
        new = len(node.token_ids) - before
        generated += new
        for i in range(new):
            past = prompt - 1 + before + i
            flops += cost_model.forward_flops(1, past, node.expert_count)
            routed += sum(node.expert_count)
        if node.parent.parent is None:
            prefills[node.root.id].add(node.expert_count)
    for counts in prefills.values():
        for k in counts:
            flops += cost_model.forward_flops(prompt - 1, 0, k)
            routed += (prompt - 1) * sum(k)
    cost = outcome.cost
    assert cost.generated_tokens == generated
    assert cost.prompt_tokens == prompt * sum(len(c) for c in prefills.values())
    assert cost.routed_expert_tokens == routed
    assert cost.flops == pytest.approx(flops)
    expected_verifier = sum(
        s.tokens for s in verifier.score([outcome.problem.question] * len(outcome.nodes),
                                         [__import__("lm_eval_moe.verifiers", fromlist=["x"]).split_steps(n.text, "e") for n in outcome.nodes])
    )
    assert cost.verifier_tokens == expected_verifier


def test_the_progress_bar_moves_every_round(policy, verifier):
    """Per search round, not per finished problem: after the first round the bar has moved though no problem
    has ended, and it ends at exactly the number of problems; the postfix names the round and the speed."""
    import io

    from tqdm import tqdm

    seen = []

    class Bar(tqdm):
        def update(self, n=1):
            super().update(n)
            seen.append((self.n, self.postfix))

    bar = Bar(total=2, file=io.StringIO())
    batch = problems(policy)
    context = BatchContext.for_problems([p.index for p in batch], policy[3], {p.index: p.stop_strings for p in batch})
    config = dataclasses.replace(CONFIG, expert_counts=((1, 1), (2, 2)))
    run_search(STRATEGIES["des"].algorithm, batch, config, engine(policy), verifier, context, bar, max_rounds=config.max_steps)
    assert 0 < seen[0][0] < 1 and "round 1/4" in seen[0][1] and "live paths" in seen[0][1] and "tok/s" in seen[0][1]
    assert len(seen) > 2 and bar.n == pytest.approx(2.0)


def test_final_rules():
    cands = [Candidate("a", K2, 0.9, (), 1, "eos", "1"), Candidate("b", K2, 0.2, (), 1, "eos", "2"),
             Candidate("c", K2, 0.3, (), 1, "eos", "2"), Candidate("d", K2, 0.35, (), 1, "eos", "2")]
    assert select_final(cands, "prm_best").text == "a"
    assert select_final(cands, "majority").text == "d"  # answer 2 wins 3:1; its best candidate
    assert select_final(cands, "weighted").text == "a"  # 0.9 vs 0.85
    assert select_final([], "majority") is None


def test_self_consistency_needs_no_verifier_scores(policy):
    config = dataclasses.replace(CONFIG, needs_scores=False, final="majority")
    (outcome,) = search(policy, "self_consistency", problems(policy, 1), config, engine(policy), None)
    assert len(outcome.result.candidates) == 8 and outcome.cost.verifier_tokens == 0


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="keep=9"):
        SearchConfig(budget=8, keep=9)
    with pytest.raises(ValueError, match="final='best'"):
        SearchConfig(final="best")


def test_moe_des_with_per_layer_k_sets_and_a_chat_template(tiny_model_dir, qwen_prm_dir, benchmark_data, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from lm_eval_moe._lm_eval_hook import tasks_dir
    from lm_eval_moe.model_wrappers.moe_search import MoEDESLM

    monkeypatch.setenv("LM_EVAL_MOE_DATA_DIR", str(benchmark_data))
    lm = MoEDESLM(pretrained=str(tiny_model_dir), verifier=str(qwen_prm_dir), budget=4, keep=2, max_steps=2,
                  max_step_tokens=4, expert_counts="1:2|4:8", device="cpu")
    assert lm.method_settings.search_config(lm.moe.default_k, 8, 12).expert_counts == ((1, 2), (4, 8))
    out = simple_evaluate(model=lm, tasks=["moe_svamp"], limit=1, log_samples=True, apply_chat_template=True,
                          gen_kwargs="max_gen_toks=12",
                          task_manager=TaskManager(include_defaults=False, include_path=str(tasks_dir())))
    sample = out["samples"]["moe_svamp"][0]
    assert sample["arguments"][0][0].startswith("<|user|>")
    assert out["config"]["lm_eval_moe"]["expert_counts"] == [[1, 2], [4, 8]]
    assert sample["avg_expert_count"] in (1.5, 6.0) or 1.5 < sample["avg_expert_count"] < 6.0
