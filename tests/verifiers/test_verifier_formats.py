"""Every verifier format on a tiny random checkpoint of its architecture: the positions it reads and what it
reads there, against a hand tokenisation (the byte tokenizer: one id per byte, one per special token); the
detection rules; the format's default aggregation reaching the search."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lm_eval_moe.search.settings import SearchSettings
from lm_eval_moe.testing import TINY_VERIFIER_KINDS
from lm_eval_moe.verifiers import (
    FORMATS, VERIFIER_FORMATS, JudgeVerifier, MathShepherdPRM, OutcomeRM, TokenClassificationPRM, ValueHeadPRM,
    VerifierLoadError, detect_format, load_verifier,
)
from lm_eval_moe.verifiers.settings import VERIFIER_FORMATS as PARSED_FORMATS
from lm_eval_moe.verifiers.whole import JUDGE_PROMPT

QUESTION = "What is 1+1?"
STEPS = ["We add 1+1.", "So the answer is \\boxed{2}."]


def _bytes(text: str, tokenizer) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())  # plain text: one id per byte
    return ids


def test_every_format_is_built_and_named_once():
    assert tuple(FORMATS) == VERIFIER_FORMATS == PARSED_FORMATS and set(TINY_VERIFIER_KINDS) == set(FORMATS)


def test_each_checkpoint_is_detected_as_its_format_and_the_judge_only_when_asked(verifier_dirs):
    from transformers import AutoConfig, AutoTokenizer

    for kind, path in verifier_dirs.items():
        found = detect_format(str(path), AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path))
        assert found == ("rlhflow_prm" if kind == "judge" else kind), kind  # any causal LM could be a judge


def test_math_shepherd_reads_plus_at_each_tag_and_never_a_tag_inside_a_step(verifier_dirs):
    verifier = load_verifier(str(verifier_dirs["math_shepherd"]))
    assert isinstance(verifier, MathShepherdPRM) and verifier.default_aggregation == "min"
    tok = verifier.tokenizer
    tag = tok.convert_tokens_to_ids("ки")
    steps = ["We add 1+1 (ки is only text here).", STEPS[1]]
    inner = steps[0].index("ки")
    ids = (_bytes(QUESTION + " ", tok) + _bytes(steps[0][:inner], tok) + [tag] + _bytes(steps[0][inner + 2:] + " ", tok)
           + [tag] + _bytes("\n" + steps[1] + " ", tok) + [tag] + _bytes("\n", tok))
    positions = [i for i, token in enumerate(ids) if token == tag][1:]  # the tag in the text is not a step's
    plus, minus = tok.convert_tokens_to_ids("+"), tok.convert_tokens_to_ids("-")
    with torch.no_grad():
        logits = verifier.model(input_ids=torch.tensor([ids])).logits[0].float()
    expected = F.softmax(logits[positions][:, [plus, minus]], dim=-1)[:, 0].tolist()
    (scored,) = verifier.score([QUESTION], [steps])
    assert scored.scores == pytest.approx(expected, abs=1e-6) and scored.tokens == len(ids)


def _separator_layout(tok) -> tuple[list[int], list[int]]:
    ids = [tok.bos_token_id] + _bytes(QUESTION + "\n", tok)
    positions = []
    for step in STEPS:
        ids += _bytes(step + "\n", tok)
        positions.append(len(ids) - 1)
    return ids, positions


def test_value_head_reads_the_sigmoid_of_its_head_at_each_separator(verifier_dirs):
    from safetensors.torch import load_file

    path = verifier_dirs["value_head"]
    verifier = load_verifier(str(path))
    assert isinstance(verifier, ValueHeadPRM)
    ids, positions = _separator_layout(verifier.tokenizer)
    weights = load_file(path / "model.safetensors")
    with torch.no_grad():
        hidden = verifier.model(input_ids=torch.tensor([ids])).last_hidden_state[0].float()
    values = hidden[positions] @ weights["v_head.summary.weight"][0].float() + weights["v_head.summary.bias"].float()
    (scored,) = verifier.score([QUESTION], [STEPS])
    assert scored.scores == pytest.approx(torch.sigmoid(values).tolist(), abs=1e-6) and scored.tokens == len(ids)


def test_token_classification_reads_the_positive_label_at_each_separator(verifier_dirs):
    verifier = load_verifier(str(verifier_dirs["token_classification"]))
    assert isinstance(verifier, TokenClassificationPRM)
    ids, positions = _separator_layout(verifier.tokenizer)
    with torch.no_grad():
        logits = verifier.model(input_ids=torch.tensor([ids])).logits[0].float()
    (scored,) = verifier.score([QUESTION], [STEPS])
    assert scored.scores == pytest.approx(F.softmax(logits[positions], dim=-1)[:, 1].tolist(), abs=1e-6)


def test_a_step_separator_given_by_the_user_is_the_one_read(verifier_dirs):
    verifier = load_verifier(str(verifier_dirs["token_classification"]), step_tag=" ;")
    tok = verifier.tokenizer
    ids = [tok.bos_token_id] + _bytes(QUESTION + "\n", tok)
    ids += _bytes(STEPS[0] + " ;", tok)
    with torch.no_grad():
        logits = verifier.model(input_ids=torch.tensor([ids])).logits[0].float()
    (scored,) = verifier.score([QUESTION], [STEPS[:1]])
    assert scored.scores == pytest.approx([F.softmax(logits[-1], dim=-1)[1].item()], abs=1e-6)


def test_outcome_rm_scores_the_whole_solution_once(verifier_dirs):
    verifier = load_verifier(str(verifier_dirs["outcome"]), batch_size=2)
    assert isinstance(verifier, OutcomeRM)
    tok = verifier.tokenizer
    text = f"<|user|>\n{QUESTION}\n<|assistant|>\n{STEPS[0]}\n\n{STEPS[1]}\n"  # the byte tokenizer's chat template
    ids = _bytes(text, tok)
    with torch.no_grad():
        reward = verifier.model(input_ids=torch.tensor([ids])).logits[0, 0].float()
    scored = verifier.score([QUESTION] * 3, [STEPS, STEPS[:1], []])
    assert scored[0].scores == pytest.approx([torch.sigmoid(reward).item()], abs=1e-6) and scored[0].tokens == len(ids)
    (alone,) = verifier.score([QUESTION], [STEPS[:1]])  # padding in a batch does not move the pooled position
    assert scored[1].scores == pytest.approx(alone.scores, abs=1e-5) and scored[2].scores == ()


def test_judge_asks_about_each_prefix_and_reads_yes_against_no(verifier_dirs):
    verifier = load_verifier(str(verifier_dirs["judge"]), verifier_format="judge")
    assert isinstance(verifier, JudgeVerifier)
    tok = verifier.tokenizer
    yes, no = tok.convert_tokens_to_ids("Y"), tok.convert_tokens_to_ids("N")
    expected, tokens = [], 0
    for end in (1, 2):
        numbered = "\n".join(f"Step {n}: {step}" for n, step in enumerate(STEPS[:end], 1))
        ids = _bytes(f"<|user|>\n{JUDGE_PROMPT.format(question=QUESTION, steps=numbered)}\n<|assistant|>\n", tok)
        with torch.no_grad():
            logits = verifier.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        expected.append(F.softmax(logits[[yes, no]], dim=-1)[0].item())
        tokens += len(ids)
    (scored,) = verifier.score([QUESTION], [STEPS])
    assert scored.scores == pytest.approx(expected, abs=1e-6) and scored.tokens == tokens


def test_a_checkpoint_loaded_as_another_format_is_refused_not_run_on_random_weights(verifier_dirs):
    with pytest.raises(VerifierLoadError, match="is verifier_format right"):
        load_verifier(str(verifier_dirs["outcome"]), verifier_format="token_classification")
    with pytest.raises(VerifierLoadError, match="v_head.summary.weight"):
        load_verifier(str(verifier_dirs["token_classification"]), verifier_format="value_head")
    with pytest.raises(VerifierLoadError, match="verifier_format='orm'"):
        load_verifier(str(verifier_dirs["outcome"]), verifier_format="orm")


def test_the_formats_default_aggregation_reaches_the_search_unless_one_is_given():
    settings = SearchSettings.from_model_args({"strategy": "des", "verifier": "majority", "budget": "4"})
    assert settings.search_config([2], 8, 16, default_aggregation="min").aggregation == "min"
    given = SearchSettings.from_model_args({"strategy": "des", "verifier": "majority", "budget": "4", "aggregation": "mean"})
    assert given.search_config([2], 8, 16, default_aggregation="min").aggregation == "mean"


def test_each_format_counts_its_forward_flops(verifier_dirs):
    """2 x the parameters a token meets (embeddings are looked up), the value head's layer included."""
    for kind, path in verifier_dirs.items():
        verifier = load_verifier(str(path), verifier_format="judge" if kind == "judge" else None)
        modules = [verifier.model] + ([verifier.head] if kind == "value_head" else [])
        expected = 2.0 * sum(p.numel() for module in modules for name, p in module.named_parameters()
                             if "embed_tokens" not in name)
        assert verifier.flops_per_token == expected > 0, kind
