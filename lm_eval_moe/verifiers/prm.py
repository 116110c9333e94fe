"""Process reward models in the two formats of docs/METHODS.md section 4, batched, on any device.

* ``qwen_prm`` (Qwen/Qwen2.5-Math-PRM-7B): system prompt, the question as the user turn, the steps
  joined by ``<extra_0>`` plus a trailing ``<extra_0>`` as the assistant turn; the reward of step i is
  the positive-class probability (softmax over the 2 labels) at the i-th ``<extra_0>``.
* ``rlhflow_prm`` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a conversation of user turns (the first is
  question + " " + step 0) each answered by an assistant "+"; the reward of step i is p("+") from the
  softmax over the "+"/"-" logits at the position that predicts the i-th assistant "+". Positions are
  found by tokenising the conversation prefix of each turn, never by searching for "+" tokens (a "+"
  in the math would otherwise be scored as a step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lm_eval_moe.generation.special_tokens import pad_token_id
from lm_eval_moe.verifiers.base import StepScores, StepVerifier

QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_TOKEN = "<extra_0>"


class PRMFormatError(ValueError):
    """The checkpoint's tokenizer cannot express the PRM format."""


def _logits(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output[0]


def dense_flops_per_token(*modules: Any) -> float:
    """2 x the parameters a token meets in a forward pass (embedding tables are looked up, not multiplied; the
    attention's quadratic term is left out): the verifier's FLOPs per input token."""
    return 2.0 * sum(p.numel() for module in modules for name, p in module.named_parameters()
                     if "embed" not in name and "wte" not in name)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _BatchedPRM(StepVerifier):
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name
        self.device = next(model.parameters()).device
        self.pad_id = pad_token_id(tokenizer)
        self.flops_per_token = dense_flops_per_token(model)

    def _forward(self, sequences: Sequence[list[int]]) -> list[torch.Tensor]:
        """Float outputs per sequence (right padding), in batches."""
        outputs: list[torch.Tensor] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, sequence in enumerate(chunk):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            with torch.no_grad():
                logits = self._model_output(ids.to(self.device), mask.to(self.device))
            # per token (batch x length x outputs), or per sequence (a sequence classifier: batch x labels)
            outputs += [(logits[row, : len(sequence)] if logits.dim() == 3 else logits[row]).float().cpu()
                        for row, sequence in enumerate(chunk)]
        return outputs

    def _model_output(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token outputs of the checkpoint (logits; a value head's scalars)."""
        return _logits(self.model(input_ids=ids, attention_mask=mask))

    def _encode(self, text: str) -> list[int]:
        return _encode(self.tokenizer, text)


class QwenPRM(_BatchedPRM):
    """Qwen2.5-Math-PRM format."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "qwen_prm") -> None:
        super().__init__(model, tokenizer, batch_size, name)
        ids = self._encode(QWEN_STEP_TOKEN)
        if len(ids) != 1:
            raise PRMFormatError(f"tokenizer has no single {QWEN_STEP_TOKEN!r} token (got ids {ids}): not a Qwen PRM")
        self.step_token_id = ids[0]

    def format(self, question: str, steps: Sequence[str]) -> str:
        messages = [
            {"role": "system", "content": QWEN_SYSTEM_PROMPT},
            {"role": "user", "content": question},
            {"role": "assistant", "content": QWEN_STEP_TOKEN.join(steps) + QWEN_STEP_TOKEN},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        wanted = [i for i, steps in enumerate(step_lists) if steps]  # a candidate without steps scores nothing
        sequences = [self._encode(self.format(questions[i], step_lists[i])) for i in wanted]
        results = [StepScores((), 0) for _ in step_lists]
        for index, sequence, logits in zip(wanted, sequences, self._forward(sequences)):
            positions = [i for i, token in enumerate(sequence) if token == self.step_token_id]
            if len(positions) != len(step_lists[index]):
                raise PRMFormatError(
                    f"expected {len(step_lists[index])} {QWEN_STEP_TOKEN} markers, found {len(positions)} "
                    "(does a step contain the marker text?)"
                )
            probs = F.softmax(logits[positions], dim=-1)[:, 1]
            results[index] = StepScores(tuple(probs.tolist()), len(sequence))
        return results


class RLHFlowPRM(_BatchedPRM):
    """RLHFlow "+"/"-" PRM format."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, name: str = "rlhflow_prm") -> None:
        super().__init__(model, tokenizer, batch_size, name)
        self.plus_id = self._encode("+")[-1]
        self.minus_id = self._encode("-")[-1]
        if self.plus_id == self.minus_id:
            raise PRMFormatError("tokenizer maps '+' and '-' to the same token")

    @staticmethod
    def conversation(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for index, step in enumerate(steps):
            turns.append({"role": "user", "content": f"{question} {step}" if index == 0 else step})
            turns.append({"role": "assistant", "content": "+"})
        return turns

    def score(self, questions: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[StepScores]:
        layouts = [rlhflow_layout(self.tokenizer, question, steps) for question, steps in zip(questions, step_lists)]
        sequences = [sequence for sequence, _ in layouts]
        all_positions = [positions for _, positions in layouts]
        scored = self._forward([s for s in sequences if s]) if any(sequences) else []
        results, cursor = [], 0
        for sequence, positions in zip(sequences, all_positions):
            if not sequence:
                results.append(StepScores((), 0))
                continue
            logits = scored[cursor]
            cursor += 1
            pair = logits[positions][:, [self.plus_id, self.minus_id]]
            results.append(StepScores(tuple(F.softmax(pair, dim=-1)[:, 0].tolist()), len(sequence)))
        return results


def rlhflow_layout(tokenizer: Any, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """The RLHFlow conversation's token ids and, per step, the position whose logits predict its assistant
    "+" (found by templating each turn prefix). Shared by scoring and by the demo PRM's training, so both
    read the same positions."""
    if not steps:
        return [], []
    turns = RLHFlowPRM.conversation(question, steps)

    def template(prefix: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(prefix, tokenize=False, add_generation_prompt=generation_prompt)
        return _encode(tokenizer, text)

    sequence, positions = template(turns, False), []
    plus_id = _encode(tokenizer, "+")[-1]
    for index in range(len(steps)):
        plus_at = len(template(turns[: 2 * index + 1], True))
        if plus_at >= len(sequence) or sequence[plus_at] != plus_id:
            raise PRMFormatError(
                f"the assistant '+' of step {index} is not a separate token at position {plus_at}: "
                "this chat template does not fit the RLHFlow PRM format"
            )
        positions.append(plus_at - 1)
    return sequence, positions
