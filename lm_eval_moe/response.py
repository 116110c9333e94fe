"""A generated text that carries per-request metadata through lm-eval.

lm-eval passes model outputs to the task's filters and ``process_results`` unchanged (and logs
them as plain strings), so a ``str`` subclass is how per-sample facts (cost, chosen k, search
candidates) reach the task metrics without changing lm-eval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MoEResponse(str):
    """``str`` with a ``meta`` dict; behaves as the plain text everywhere else."""

    meta: dict[str, Any]

    def __new__(cls, text: str, meta: dict[str, Any] | None = None) -> MoEResponse:
        obj = super().__new__(cls, text)
        obj.meta = dict(meta or {})
        return obj

    def __reduce__(self):  # keep the metadata through pickling (lm-eval's request cache)
        return (MoEResponse, (str(self), self.meta))


def response_meta(response: Any) -> dict[str, Any]:
    """Metadata of a model response, or an empty dict for plain strings (e.g. lm-eval's ``hf``)."""
    return getattr(response, "meta", None) or {}


#: Meta key marking a response to lm-eval's data-parallel padding (not a real sample of the request).
PADDING = "data_parallel_padding"


def real_responses(responses: Sequence[Any]) -> list[Any]:
    """A request's responses without data-parallel padding (see ``model_wrappers.base.padding_mask``)."""
    return [response for response in responses if not response_meta(response).get(PADDING)]
