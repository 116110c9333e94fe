"""Where a generated text stops: the one rule for stop strings (a task's ``until``, a step delimiter) and for
the tokens a row really generated before it stopped."""

from __future__ import annotations

from collections.abc import Callable, Sequence

#: tokens decoded, beyond the longest stop string, to look for a stop at the end of a growing text (a token
#: is at least one character; the slack covers tokens that decode to nothing)
STOP_WINDOW_TOKENS = 16


def holds_stop(tokens: Sequence[int], stops: Sequence[str], decode: Callable[[Sequence[int]], str],
               before: str = "") -> bool:
    """Whether the text now holds one of ``stops``, read at its end only: the last tokens and, while they are
    few, the end of the text ``before`` them (a stop may straddle the boundary)."""
    stops = [stop for stop in stops if stop]
    if not stops:
        return False
    longest = max(len(stop) for stop in stops)
    window = STOP_WINDOW_TOKENS + longest
    head = before[-longest:] if len(tokens) <= window else ""
    tail = head + decode(tokens[-window:])
    return any(stop in tail for stop in stops)


def tokens_until_stop(tokens: Sequence[int], eos_ids: set[int], stops: Sequence[str],
                      decode: Callable[[Sequence[int]], str]) -> int:
    """Tokens a row really generated before it finished: through its first EOS, or through the token that
    completed a stop string (``generate`` pads finished rows until the whole batch is done)."""
    end = len(tokens)
    for position, token in enumerate(tokens):
        if token in eos_ids:
            end = position + 1
            break
    stops = [s for s in stops if s]
    if not stops or not any(s in decode(tokens[:end]) for s in stops):
        return end
    low, high = 1, end  # smallest prefix whose text contains a stop string (containment is monotone)
    while low < high:
        middle = (low + high) // 2
        if any(s in decode(tokens[:middle]) for s in stops):
            high = middle
        else:
            low = middle + 1
    return low
