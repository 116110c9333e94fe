"""Per-benchmark answer checkers: response text + gold -> :class:`Verdict`.

A checker extracts the answer the response gives (last box, fallbacks) and compares it with the gold
answer under the benchmark's rule; the answer key it returns is what majority voting groups by.

Math answers given in several boxes ("\\boxed{(2, 2)} and \\boxed{(6, 2)}", "\\boxed{1}, \\boxed{2}, \\boxed{3}")
are read as the one tuple/set they state when the gold has several parts, as math-verify reads them; with a
gold of one part the last box is the answer. A gold written with boxes or math delimiters is read the same
way as a response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lm_eval_moe.scoring.equivalence import (
    aime_integer, answer_parts, math_equal, normalize_latex, numbers_equal, parse_number, strip_math_delimiters,
)
from lm_eval_moe.scoring.extract import Extracted, ascii_forms, extract_choice, extract_math_answer, final_box_group


@dataclass(frozen=True)
class Verdict:
    correct: bool
    answer: str | None  # the extracted answer
    key: str | None  # canonical form for majority voting (None: no answer)
    method: str  # how the answer was extracted


def numeric_key(answer: str) -> str | None:
    value = parse_number(answer)
    return None if value is None else str(value)


def majority_key(answer: str) -> str:
    """What majority voting groups an extracted answer by: its exact value when it is a number ("18",
    "18.0" and "18 dollars" vote together), else its normalised LaTeX (so ``\\sqrt{2}``, ``x^2`` and ``2``
    stay three answers). The one voting rule of every strategy and task."""
    return numeric_key(answer) or normalize_latex(answer)


def gold_answer(gold: str) -> str:
    """The gold answer itself: without math delimiters, and read like a response if it holds boxes."""
    if "\\boxed" in gold or "\\fbox" in gold:
        return ", ".join(final_box_group(gold)) or strip_math_delimiters(gold)
    return strip_math_delimiters(gold)


def math_answer(response: str, gold: str) -> Extracted:
    """The response's answer; the tuple/set of its final boxes where the gold has several parts."""
    extracted = extract_math_answer(response)
    if extracted.method == "boxed" and len(answer_parts(gold)) > 1:
        group = final_box_group(response)
        if len(group) > 1:
            return Extracted(ascii_forms(", ".join(group)), "boxed_group")
    return extracted


def check_math(response: str, gold: str) -> Verdict:
    gold = gold_answer(gold)
    extracted = math_answer(response, gold)
    if extracted.answer is None:
        return Verdict(False, None, None, extracted.method)
    return Verdict(math_equal(gold, extracted.answer), extracted.answer, majority_key(extracted.answer),
                   extracted.method)


def check_numeric(response: str, gold: str) -> Verdict:
    extracted = extract_math_answer(response)
    gold_value = parse_number(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    if extracted.answer is None:
        return Verdict(False, None, None, extracted.method)
    value = parse_number(extracted.answer)
    key = None if value is None else str(value)
    return Verdict(value is not None and numbers_equal(gold_value, value), extracted.answer, key, extracted.method)


def check_aime(response: str, gold: str) -> Verdict:
    extracted = extract_math_answer(response)
    gold_value = aime_integer(str(gold))
    if gold_value is None:
        raise ValueError(f"AIME gold answer {gold!r} is not an integer 0..999")
    if extracted.answer is None:
        return Verdict(False, None, None, extracted.method)
    value = aime_integer(extracted.answer)
    key = None if value is None else str(value)
    return Verdict(value == gold_value, extracted.answer, key, extracted.method)


def choice_checker(num_choices: int) -> Callable[[str, str], Verdict]:
    def check_choice(response: str, gold: str) -> Verdict:
        extracted = extract_choice(response, num_choices)
        return Verdict(extracted.answer == gold, extracted.answer, extracted.answer, extracted.method)

    return check_choice


CHECKERS: dict[str, Callable[[str, str], Verdict]] = {
    "math": check_math,
    "numeric": check_numeric,
    "aime": check_aime,
    "choice4": choice_checker(4),
}
