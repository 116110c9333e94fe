"""PRM formats, positions and probabilities against hand-computed references."""

import json

import pytest
import torch
import torch.nn.functional as F

from lm_eval_moe.verifiers import (
    PRMFormatError, QwenPRM, RLHFlowPRM, VerifierLoadError, aggregate, detect_format, load_verifier, split_steps,
)
from lm_eval_moe.verifiers.prm import QWEN_SYSTEM_PROMPT

QUESTION = "What is 1+1?"
STEPS = ["We add 1+1.", "So the answer is \\boxed{2}."]


def _tokens(segments, tokenizer):
    """Hand tokenisation for the byte tokenizer: a special token is one id, text is one id per byte."""
    ids = []
    for segment in segments:
        if segment in tokenizer.all_special_tokens:
            ids.append(tokenizer.convert_tokens_to_ids(segment))
        else:
            ids += tokenizer(segment, add_special_tokens=False)["input_ids"]
            assert len(tokenizer(segment, add_special_tokens=False)["input_ids"]) == len(segment.encode())
    return ids


def test_qwen_prm_positions_and_probabilities_match_a_hand_computation(qwen_prm_dir):
    verifier = load_verifier(str(qwen_prm_dir))
    assert isinstance(verifier, QwenPRM)
    tok = verifier.tokenizer
    segments = [
        "<|im_start|>", "system\n" + QWEN_SYSTEM_PROMPT, "<|im_end|>", "\n",
        "<|im_start|>", "user\n" + QUESTION, "<|im_end|>", "\n",
        "<|im_start|>", "assistant\n" + STEPS[0], "<extra_0>", STEPS[1], "<extra_0>", "<|im_end|>", "\n",
    ]
    ids = _tokens(segments, tok)
    marker = tok.convert_tokens_to_ids("<extra_0>")
    expected_positions = [len(_tokens(segments[:10], tok)), len(_tokens(segments[:12], tok))]
    assert [i for i, t in enumerate(ids) if t == marker] == expected_positions
    with torch.no_grad():
        logits = verifier.model(input_ids=torch.tensor([ids])).logits[0]
    expected = F.softmax(logits[expected_positions].float(), dim=-1)[:, 1].tolist()
    (scored,) = verifier.score([QUESTION], [STEPS])
    assert scored.scores == pytest.approx(expected, abs=1e-6)
    assert scored.tokens == len(ids)


def test_rlhflow_prm_reads_p_plus_at_the_position_before_each_assistant_plus(rlhflow_prm_dir):
    verifier = load_verifier(str(rlhflow_prm_dir))
    assert isinstance(verifier, RLHFlowPRM)
    tok = verifier.tokenizer
    turn = lambda role, content: ["<|start_header_id|>", role, "<|end_header_id|>", "\n\n" + content, "<|eot_id|>"]  # noqa: E731
    segments = ["<|begin_of_text|>"] + turn("user", QUESTION + " " + STEPS[0]) + turn("assistant", "+")
    segments += turn("user", STEPS[1]) + turn("assistant", "+")
    ids = _tokens(segments, tok)
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    # the assistant "+" tokens: the text of segments before them, plus the "\n\n" of their header
    first_plus = len(_tokens(segments[:9], tok)) + 2
    second_plus = len(_tokens(segments[:19], tok)) + 2
    assert ids[first_plus] == plus and ids[second_plus] == plus
    assert ids.count(plus) == 4  # two more "+" inside the math text: they must not be scored
    with torch.no_grad():
        logits = verifier.model(input_ids=torch.tensor([ids])).logits[0].float()
    pair = logits[[first_plus - 1, second_plus - 1]][:, [plus, minus]]
    expected = F.softmax(pair, dim=-1)[:, 0].tolist()
    (scored,) = verifier.score([QUESTION], [STEPS])
    assert scored.scores == pytest.approx(expected, abs=1e-6)


def test_batched_scoring_equals_one_by_one(qwen_prm_dir, rlhflow_prm_dir):
    for path in (qwen_prm_dir, rlhflow_prm_dir):
        verifier = load_verifier(str(path), batch_size=3)
        lists = [STEPS, STEPS[:1], ["a", "b", "c"], ["only one step, longer than the others ....."]]
        batched = verifier.score([QUESTION] * 4, lists)
        for steps, result in zip(lists, batched):
            (alone,) = verifier.score([QUESTION], [steps])
            assert result.scores == pytest.approx(alone.scores, abs=1e-5)


def test_no_empty_last_step_is_scored():
    assert split_steps("Step A.\n\nStep B.\n\n") == ["Step A.", "Step B."]
    assert split_steps("Step A.\n\n\n\nStep B.") == ["Step A.", "Step B."]
    assert split_steps("\n\n") == []


def test_candidates_without_steps_score_nothing(qwen_prm_dir, rlhflow_prm_dir):
    for path in (qwen_prm_dir, rlhflow_prm_dir):
        results = load_verifier(str(path)).score([QUESTION, QUESTION], [[], STEPS])
        assert results[0].scores == () and results[0].tokens == 0 and len(results[1].scores) == 2


def test_aggregations():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert aggregate(scores, "prod") == pytest.approx(0.36)
    assert aggregate(scores, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([], "last") == 0.0
    with pytest.raises(ValueError, match="aggregation='max'"):
        aggregate(scores, "max")


def test_format_is_guessed_and_can_be_forced(qwen_prm_dir, rlhflow_prm_dir):
    from transformers import AutoConfig, AutoTokenizer

    for path, kind in ((qwen_prm_dir, "qwen_prm"), (rlhflow_prm_dir, "rlhflow_prm")):
        assert detect_format(str(path), AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)) == kind
    with pytest.raises(PRMFormatError, match="<extra_0>"):
        load_verifier(str(rlhflow_prm_dir), verifier_format="qwen_prm")
    with pytest.raises(VerifierLoadError, match="verifier_format='orm'"):
        load_verifier(str(qwen_prm_dir), verifier_format="orm")


def test_remote_code_needs_consent(qwen_prm_dir, tmp_path):
    import shutil

    copy = tmp_path / "remote_prm"
    shutil.copytree(qwen_prm_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_rm.Qwen2ForProcessRewardModel"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(VerifierLoadError, match="verifier_trust_remote_code=true"):
        load_verifier(str(copy))
