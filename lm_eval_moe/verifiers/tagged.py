"""PRMs that read a score at a marked token after each step of a plain-text layout (no chat template).

* ``math_shepherd`` (peiyi9979/math-shepherd-mistral-7b-prm): a causal LM reading ``f"{question} {steps}"``,
  each step followed by `` ки`` and a newline; the reward of step i is p("+") from the softmax over the "+"/"-"
  logits at the i-th tag (the tag's logits predict the label). The text is tokenised whole, as the format's own
  code does; the tag positions come from tokenising each prefix (never from searching for the tag, which a step
  may contain), and a tokeniser that merges a tag with its neighbours is refused.
* ``value_head`` (Skywork-o1-Open-PRM; trl's value-head layout): a base model and a linear head ``v_head.summary``
  giving one scalar per token; the ids are ``encode(bos + question + "\\n")`` followed, per step, by
  ``encode(step)`` and the separator token, and the reward of step i is ``sigmoid(head)`` at its separator.
* ``token_classification``: transformers' ``AutoModelForTokenClassification`` on the same concatenated layout;
  the reward is the positive label's probability (two labels) or the sigmoid of the logit (one label).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lm_eval_moe.verifiers.base import StepScores
from lm_eval_moe.verifiers.prm import PRMFormatError, _BatchedPRM, _encode, dense_flops_per_token

MATH_SHEPHERD_TAG = "ки"


class _MarkedPRM(_BatchedPRM):
    """A PRM whose step rewards are read at one position per step (:meth:`layout`) of its output (:meth:`read`)."""

    def layout(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        raise NotImplementedError

    def read(self, output: torch.Tensor, positions: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        wanted = [i for i, steps in enumerate(step_lists) if steps]  # a candidate without steps scores nothing
        layouts = [self.layout(questions[i], step_lists[i]) for i in wanted]
        results = [StepScores((), 0) for _ in step_lists]
        outputs = self._forward([sequence for sequence, _ in layouts])
        for index, (sequence, positions), output in zip(wanted, layouts, outputs):
            results[index] = StepScores(tuple(self.read(output, positions).tolist()), len(sequence))
        return results


class MathShepherdPRM(_MarkedPRM):
    """Math-Shepherd step tags on a causal LM."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "math_shepherd",
                 tag: str = MATH_SHEPHERD_TAG) -> None:
        super().__init__(model, tokenizer, batch_size, name)
        self.tag = tag
        labels = self._encode("+ -")
        self.good_id, self.bad_id = labels[0], labels[-1]
        self.tag_id = self._encode(f" {tag}")[-1]
        if self.good_id == self.bad_id:
            raise PRMFormatError("this tokenizer maps '+' and '-' to the same token: not a Math-Shepherd PRM")

    def layout(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        segments = [f"{question} "]
        for step in steps:
            segments += [f"{step} {self.tag}", "\n"]
        text = "".join(segments)
        sequence = _encode(self.tokenizer, text)
        positions = []
        for index in range(len(steps)):
            prefix = _encode(self.tokenizer, "".join(segments[: 2 + 2 * index]))
            at = len(prefix) - 1
            if sequence[: len(prefix)] != prefix or sequence[at] != self.tag_id:
                raise PRMFormatError(f"the tag {self.tag!r} after step {index} is not a token of its own in the whole "
                                     "text: this tokenizer does not fit the Math-Shepherd layout (verifier_step_tag "
                                     "sets the tag)")
            positions.append(at)
        return sequence, positions

    def read(self, output: torch.Tensor, positions: list[int]) -> torch.Tensor:
        return F.softmax(output[positions][:, [self.good_id, self.bad_id]], dim=-1)[:, 0]


class _SeparatorPRM(_MarkedPRM):
    """The concatenated layout: ``encode(bos + question + "\\n")``, then per step ``encode(step)`` + the separator,
    the reward read at the separator's last token."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "", separator: str = "\n") -> None:
        super().__init__(model, tokenizer, batch_size, name)
        self.separator_ids = self._encode(separator)
        if not self.separator_ids:
            raise PRMFormatError(f"the step separator {separator!r} encodes to no token")
        self.bos = tokenizer.bos_token or ""

    def layout(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        sequence = self._encode(f"{self.bos}{question}\n")
        positions = []
        for step in steps:
            sequence += self._encode(step) + self.separator_ids
            positions.append(len(sequence) - 1)
        return sequence, positions


class ValueHeadPRM(_SeparatorPRM):
    """A base model with a scalar value head (``v_head.summary``: Skywork-o1-Open-PRM, trl's layout)."""

    def __init__(self, model: Any, head: torch.nn.Linear, tokenizer: Any, batch_size: int = 8,
                 name: str = "value_head", separator: str = "\n") -> None:
        super().__init__(model, tokenizer, batch_size, name, separator)
        self.head = head.to(self.device).eval()
        self.flops_per_token = dense_flops_per_token(model, head)

    def _model_output(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype))

    def read(self, output: torch.Tensor, positions: list[int]) -> torch.Tensor:
        return torch.sigmoid(output[positions, 0])


class TokenClassificationPRM(_SeparatorPRM):
    """transformers' token classifier read at each step's separator."""

    def read(self, output: torch.Tensor, positions: list[int]) -> torch.Tensor:
        logits = output[positions]
        return torch.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else F.softmax(logits, dim=-1)[:, 1]
