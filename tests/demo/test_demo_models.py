"""The shipped demo models: short names resolve, the held-out split is disjoint from training, the logged
metrics are those of the shipped weights, and the training script replays the logged trajectories (the
policy trained at top-2, the PRM, and the k-robust policy trained with k drawn from 1-4 per batch).

The full reproduction (``python -m lm_eval_moe.demo.train``, 41 minutes on 2 cores) gave byte-identical
policy weights and the logged PRM metrics; here the first 20 optimiser steps of the policy and of the PRM's
first phase are replayed against the shipped log."""

import json
import random

import pytest
import torch

from lm_eval_moe.checkpoints import resolve_checkpoint
from lm_eval_moe.model_args import ModelArgError
from lm_eval_moe.demo import MODELS_DIR
from lm_eval_moe.demo import policy as demo_policy
from lm_eval_moe.demo import prm as demo_prm
from lm_eval_moe.demo.arith import corrupt, corrupt_each_step, is_held_out, problems, step_results

LOG = json.loads((MODELS_DIR / "training_log.json").read_text())
SEED = LOG["seed"]


@pytest.fixture(autouse=True)
def training_threads():
    """The script trains and evaluates on 2 threads (the float arithmetic depends on the thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_short_names_resolve_and_others_pass_through():
    assert resolve_checkpoint("tiny-arith-moe") == str(MODELS_DIR / "tiny-arith-moe")
    assert resolve_checkpoint("tiny-arith-moe-anyk") == str(MODELS_DIR / "tiny-arith-moe-anyk")
    assert resolve_checkpoint("allenai/OLMoE-1B-7B-0924") == "allenai/OLMoE-1B-7B-0924"
    assert resolve_checkpoint(str(MODELS_DIR)) == str(MODELS_DIR)


@pytest.mark.parametrize("name", ["./tiny-arith-moe-local", "/no/such/checkpoint", "~/no_such_checkpoint_here",
                                  "runs/a/b", "{here}/missing", "..\\windows\\style"])
def test_a_missing_local_folder_is_named_as_missing(name, tmp_path, monkeypatch):
    """Not transformers' "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here").mkdir()  # "here/missing": under a folder that exists, so no hub id
    with pytest.raises(ModelArgError, match="verifier=.*no such folder"):
        resolve_checkpoint(name.format(here="here"), "verifier")


def test_a_missing_checkpoint_is_refused_before_loading_through_lm_eval(tmp_path):
    from lm_eval_moe.model_wrappers.moe_hf import MoEHFLM

    with pytest.raises(ModelArgError, match=f"pretrained='{tmp_path}/gone': no such folder .*{tmp_path}/gone does not"):
        MoEHFLM(pretrained=str(tmp_path / "gone"), device="cpu")


def test_the_prm_tokenizer_keeps_the_policys_byte_ids():
    """The PRM is initialised from the policy: its added turn markers must not move the byte ids."""
    from lm_eval_moe.testing import byte_tokenizer

    text = "Ana has 12 apples. 12 + 5 = 17"
    prm = demo_prm.prm_tokenizer()
    assert prm.encode(text, add_special_tokens=False) == byte_tokenizer().encode(text, add_special_tokens=False)
    assert prm.convert_tokens_to_ids(["<|user|>", "<|assistant|>"]) == [len(byte_tokenizer()), len(byte_tokenizer()) + 1]


def test_generator_is_deterministic_and_the_test_split_is_disjoint():
    train = problems(SEED, 2000, held_out=False, difficulty=demo_policy.DIFFICULTY)
    assert train == problems(SEED, 2000, held_out=False, difficulty=demo_policy.DIFFICULTY)
    test = problems(SEED + 1, 300, held_out=True, difficulty=demo_policy.DIFFICULTY)
    assert not {p.question for p in train} & {p.question for p in test}
    assert all(is_held_out(p.question) for p in test) and not any(is_held_out(p.question) for p in train)
    for problem in train[:200]:
        assert problem.solution.endswith(f"\\boxed{{{problem.answer}}}") and "\n\n" in problem.solution
        steps, labels = corrupt(problem, random.Random(0))
        first_bad = labels.index(0)
        assert labels == [1] * first_bad + [0] * (len(labels) - first_bad) and steps[-1] != problem.steps[-1]


def test_prm_targets_mark_each_result_digit_and_each_step_label():
    """A wrong second result (35 for 34, carried on): local targets judge each step alone, prefix targets
    (RLHFlow's "+") also fail every step after the first wrong one; both layouts mark the same digits."""
    question = "Ana has 12 apples."
    steps = ["12 + 5 = 17", "17 * 2 = 35", "35 - 4 = 31", "The answer is \\boxed{31}"]
    tokenizer = demo_prm.prm_tokenizer()
    for layout in (demo_prm.policy_layout_example, demo_prm.conversation_example):
        for labels, expected_digits in (("local", [1, 1, 1, 0, 1, 1, 1, 1]), ("prefix", [1, 1, 1, 0, 0, 0, 0, 0])):
            example = layout(tokenizer, question, steps, False, labels)
            digits = [i for i, weight in enumerate(example.flag_weights) if weight == 1.0]
            assert tokenizer.decode([example.ids[i] for i in digits]) == "17353131"
            assert [example.flags[i] for i in digits] == expected_digits
            turn_labels = [example.flags[i] for i, weight in enumerate(example.flag_weights) if weight > 1.0]
            expected_turns = [] if layout is demo_prm.policy_layout_example else (
                [1, 0, 1, 1] if labels == "local" else [1, 0, 0, 0])
            assert turn_labels == expected_turns
            assert example.next_tokens == [-100] * len(example.ids)  # no language targets on a wrong solution


def test_every_step_corruption_rates():
    problem = problems(SEED, 1, held_out=False, difficulty=demo_policy.DIFFICULTY)[0]
    assert corrupt_each_step(problem, random.Random(0), 0.0) == list(problem.steps)
    steps = corrupt_each_step(problem, random.Random(0), 1.0)
    right = [written == expected for _, written, expected in step_results(steps)]
    assert right == [False] * (len(steps) - 1) + [True]  # every result off; the answer repeats the last value


def test_logged_accuracy_is_the_shipped_policys():
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe"), dtype=torch.float32)
    held_out = problems(SEED + 1, LOG["policy"]["held_out_problems"], held_out=True, difficulty=demo_policy.DIFFICULTY)
    log = {"policy": {}}
    demo_policy.evaluate_policy(policy, held_out, log, expert_counts=(2,))
    # the script measures the model reloaded from the shipped files, so the replay is exact
    assert log["policy"]["held_out_accuracy"]["2"] == LOG["policy"]["held_out_accuracy"]["2"]
    accuracy = LOG["policy"]["held_out_accuracy"]
    assert 0.3 < accuracy["2"] < 0.95 and len({round(v, 3) for v in accuracy.values()}) == len(accuracy)


def test_the_k_robust_policy_is_logged_and_its_logged_accuracy_is_the_shipped_weights():
    """Same shape, data, seed and initialisation as tiny-arith-moe, each batch at a k drawn from 1-4; the
    logged held-out accuracy at k=3 replays exactly from the shipped files (one k: the others cost minutes)."""
    from transformers import AutoModelForCausalLM

    robust = LOG[demo_policy.K_ROBUST_KEY]
    assert robust["train_expert_counts"] == list(demo_policy.K_ROBUST_COUNTS) and robust["shape"] == LOG["policy"]["shape"]
    assert sorted(robust["batches_per_k"]) == ["1", "2", "3", "4"] and sum(robust["batches_per_k"].values()) == robust["steps"]
    policy = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe-anyk"), dtype=torch.float32)
    held_out = problems(SEED + 1, robust["held_out_problems"], held_out=True, difficulty=demo_policy.DIFFICULTY)
    log = {"policy": {}}
    demo_policy.evaluate_policy(policy, held_out, log, expert_counts=(3,))
    assert log["policy"]["held_out_accuracy"]["3"] == robust["held_out_accuracy"]["3"]


def test_logged_prm_separation_is_the_shipped_prms():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_checkpoint("tiny-arith-prm")
    prm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    held_out = problems(SEED + 1, LOG["policy"]["held_out_problems"], held_out=True, difficulty=demo_policy.DIFFICULTY)
    log: dict = {"prm": {}}
    demo_prm.evaluate_prm(prm, AutoTokenizer.from_pretrained(path), held_out, SEED, log)
    for metric in ("held_out_auc_last_step", "held_out_auc_min", "held_out_step_accuracy"):
        assert log["prm"][metric] == pytest.approx(LOG["prm"][metric], abs=1e-9), metric
    assert LOG["prm"]["held_out_auc_last_step"] > 0.9  # far better than chance (0.5)


@pytest.fixture(scope="module")
def train_problems():
    return problems(SEED, LOG["policy"]["train_problems"], held_out=False, difficulty=demo_policy.DIFFICULTY)


def nudged_by_one_ulp(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight moved one float32 ulp up or down (seeded): the size of another CPU's rounding."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            up = torch.rand(parameter.shape, generator=generator) < 0.5
            parameter.copy_(torch.where(up, torch.nextafter(parameter, torch.full_like(parameter, float("inf"))),
                                        torch.nextafter(parameter, torch.full_like(parameter, float("-inf")))))
    return model


def assert_replays(replayed: list[float], nudged: list[float], logged: list[float]) -> None:
    """Each replayed loss equals the logged one within rel 1e-4, or within 3x the trajectory's own
    sensitivity to rounding where that is larger: the distance at that step between the replay and a replay
    from weights nudged by one ulp. Why: top-k routing is discontinuous, so where a token's k-th and
    (k+1)-th router logits nearly tie, another CPU's rounding (its SIMD kernels sum in another order) swaps
    an expert and moves the loss by 1e-4..1e-3. Measured on an AMD EPYC: the PRM's phase-A step 19 has a
    router gap of 1.2e-7, replays 7.2e-4 off the log, and the one-ulp replay is 6.8e-4 off; steps 0-18
    replay within 2e-6."""
    assert len(replayed) == len(nudged) == len(logged) == 20
    for step, (value, other, expected) in enumerate(zip(replayed, nudged, logged)):
        tolerance = max(1e-4 * abs(expected), 3 * abs(other - value))
        assert abs(value - expected) <= tolerance, (step, value, expected, tolerance)


@pytest.mark.slow  # two 20-step training replays
def test_policy_training_replays_the_logged_losses(train_problems, monkeypatch):
    from transformers import AutoModelForCausalLM

    def replay() -> list[float]:
        log: dict = {}
        demo_policy.train_policy(train_problems, LOG["policy"]["steps"], SEED, log, run_steps=20)
        return log["policy"]["losses_first_20"]

    replayed = replay()
    from_config = AutoModelForCausalLM.from_config
    monkeypatch.setattr(AutoModelForCausalLM, "from_config", lambda *a, **k: nudged_by_one_ulp(from_config(*a, **k)))
    assert_replays(replayed, replay(), LOG["policy"]["losses_first_20"])


@pytest.mark.slow  # two 20-step training replays
def test_prm_training_replays_the_logged_losses(train_problems):
    from transformers import AutoModelForCausalLM

    assert [[name, layout, labels, steps, lr] for name, layout, labels, steps, lr in demo_prm.PRM_PHASES] == [
        [name, phase["layout"], phase["labels"], phase["steps"], phase["peak_lr"]] for name, phase in LOG["prm"]["phases"].items()
    ]

    def replay(nudge: bool) -> list[float]:
        # the script trains the PRM from the policy reloaded from the shipped files, as here; phase A only: B
        # and C start from the 20-step replay, not from the logged run's model, so their losses are not
        # comparable (and building their conversations alone takes minutes)
        policy = AutoModelForCausalLM.from_pretrained(resolve_checkpoint("tiny-arith-moe"), dtype=torch.float32)
        log: dict = {}
        demo_prm.train_prm(train_problems, SEED, log, nudged_by_one_ulp(policy) if nudge else policy,
                             phases=demo_prm.PRM_PHASES[:1], run_steps=20)
        return log["prm"]["phases"]["A"]["losses_first_20"]

    assert_replays(replay(False), replay(True), LOG["prm"]["phases"]["A"]["losses_first_20"])


@pytest.mark.slow  # two 20-step training replays
def test_k_robust_training_replays_the_logged_losses_and_k_draws(train_problems, monkeypatch):
    from transformers import AutoModelForCausalLM

    robust = LOG[demo_policy.K_ROBUST_KEY]

    def replay() -> tuple[list[float], list[int]]:
        log: dict = {}
        demo_policy.train_policy(train_problems, robust["steps"], SEED, log, run_steps=20,
                                expert_counts=demo_policy.K_ROBUST_COUNTS, log_key="robust")
        return log["robust"]["losses_first_20"], log["robust"]["drawn_k_first_20"]

    replayed, drawn = replay()
    assert drawn == robust["drawn_k_first_20"] and len(set(drawn)) > 1
    from_config = AutoModelForCausalLM.from_config
    monkeypatch.setattr(AutoModelForCausalLM, "from_config", lambda *a, **k: nudged_by_one_ulp(from_config(*a, **k)))
    assert_replays(replayed, replay()[0], robust["losses_first_20"])
