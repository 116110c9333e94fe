"""The two token rules every generator and verifier shares: which ids end a sequence, and which id pads one."""

from __future__ import annotations

from typing import Any


def eos_token_ids(eos_id: int | None, generation_config: Any) -> set[int]:
    """The ids that end a sequence: the tokenizer's EOS and the generation config's (an int or a list;
    chat models often list several there)."""
    ids: set[int] = set()
    for value in (eos_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return ids


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch row: the tokenizer's pad token, else its EOS (many causal LMs have no pad
    token), else 0. Padded positions are masked, so the value only has to be a valid id."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0
