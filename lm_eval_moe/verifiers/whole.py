"""Verifiers that judge a whole solution (or the steps so far) at once.

* ``outcome`` reward models (``AutoModelForSequenceClassification``: Skywork-Reward, ArmoRM-style heads): one
  score per path, ``sigmoid`` of the reward (one label) or the positive label's probability (two labels), on
  the question and the path as a chat (the tokenizer's template; ``question + "\\n\\n" + solution`` without
  one). For Best-of-N that is the paper's use; a step-wise search that prunes with it scores each partial path
  as a whole solution.
* a generative ``judge`` from any causal LM: for each prefix of the path (steps 1..i), :data:`JUDGE_PROMPT` as
  the user turn (the chat template when the tokenizer has one), and the reward of step i is
  ``p(Yes) / (p(Yes) + p(No))`` over the first tokens of "Yes" and "No" at the answer's first position. Step i
  therefore costs a forward pass of its own prefix: the verifier tokens count them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lm_eval_moe.verifiers.base import StepScores
from lm_eval_moe.verifiers.prm import PRMFormatError, _BatchedPRM

JUDGE_PROMPT = (
    "Here is a math problem and the first steps of a solution.\n\nProblem: {question}\n\nSteps so far:\n{steps}\n\n"
    "Are all the steps so far correct? Answer Yes or No."
)


def chat_or_plain(tokenizer: Any, user: str, assistant: str | None) -> str:
    """The turn(s) in the tokenizer's chat template (the assistant's answer to come when ``assistant`` is None),
    or plain text joined by blank lines when it has none."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=assistant is None)
    return f"{user}\n\n{assistant}" if assistant is not None else f"{user}\n\n"


class OutcomeRM(_BatchedPRM):
    """One reward per path, from a sequence classifier."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "outcome") -> None:
        super().__init__(model, tokenizer, batch_size, name)
        if getattr(model.config, "pad_token_id", None) is None:  # the classifier finds each row's end by its padding
            model.config.pad_token_id = self.pad_id

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        wanted = [i for i, steps in enumerate(step_lists) if steps]
        sequences = [self._encode(chat_or_plain(self.tokenizer, questions[i], "\n\n".join(step_lists[i])))
                     for i in wanted]
        results = [StepScores((), 0) for _ in step_lists]
        for index, sequence, logits in zip(wanted, sequences, self._forward(sequences)):
            results[index] = StepScores((float(self._reward(logits)),), len(sequence))
        return results

    @staticmethod
    def _reward(logits: torch.Tensor) -> torch.Tensor:
        """The classifier's output for the whole sequence (already pooled at its last token)."""
        row = logits.reshape(-1)
        return torch.sigmoid(row[0]) if row.numel() == 1 else F.softmax(row, dim=-1)[1]


class JudgeVerifier(_BatchedPRM):
    """Any causal LM asked whether the steps so far are correct."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "judge") -> None:
        super().__init__(model, tokenizer, batch_size, name)
        self.yes_id, self.no_id = self._encode("Yes")[0], self._encode("No")[0]
        if self.yes_id == self.no_id:
            raise PRMFormatError("this tokenizer starts 'Yes' and 'No' with the same token: it cannot judge")

    def prompt(self, question: str, steps: Sequence[str]) -> str:
        numbered = "\n".join(f"Step {number}: {step.strip()}" for number, step in enumerate(steps, 1))
        return chat_or_plain(self.tokenizer, JUDGE_PROMPT.format(question=question, steps=numbered), None)

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        prefixes = [(index, self._encode(self.prompt(questions[index], steps[: end])))
                    for index, steps in enumerate(step_lists) for end in range(1, len(steps) + 1)]
        scores: list[list[float]] = [[] for _ in step_lists]
        tokens = [0] * len(step_lists)
        for (index, sequence), logits in zip(prefixes, self._forward([sequence for _, sequence in prefixes])):
            pair = logits[len(sequence) - 1, [self.yes_id, self.no_id]]
            scores[index].append(float(F.softmax(pair, dim=-1)[0]))
            tokens[index] += len(sequence)
        return [StepScores(tuple(values), count) for values, count in zip(scores, tokens)]
