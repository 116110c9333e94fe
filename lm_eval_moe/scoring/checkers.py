"""Per-benchmark answer checkers: response text + gold -> :class:`Verdict`; response text -> answer key.

A checker reads the answer a response states (:func:`~lm_eval_moe.scoring.extract.stated_math_answer`: the
final box or the boxes that end it standing together, then "the answer is" statements), the same way
whatever the gold, and compares it with the gold answer under the benchmark's rule. What a response states
when it states nothing explicitly: the math checker reads it as math-verify's default ``parse`` does; the
numeric checkers take its last number. A response whose last box never closes states nothing.

The answer key (:meth:`AnswerChecker.key`) is what majority voting groups by: it comes from the very same
reading as the verdict (``check(response, gold).key == key(response)`` for every response), and never from
the gold, so a search can vote with it before anything is checked. A gold written with boxes or math
delimiters is read the same way as a response.

Responses longer than ``MAX_CHECKED_CHARS`` are judged on their last ``MAX_CHECKED_CHARS`` characters; the
verdict says so (``windowed``).
"""

from __future__ import annotations

from dataclasses import dataclass

from lm_eval_moe.scoring.equivalence import (
    aime_integer, math_equal, math_verify_reading, normalize_latex, numbers_equal, parse_number,
    strip_math_delimiters,
)
from lm_eval_moe.scoring.extract import (
    Extracted, checked_window, extract_choice, extract_math_answer, final_box_group, stated_math_answer,
)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    answer: str | None  # the extracted answer
    key: str | None  # canonical form for majority voting (None: no answer)
    method: str  # how the answer was extracted
    windowed: bool = False  # judged on the response's last MAX_CHECKED_CHARS characters only


def numeric_key(answer: str) -> str | None:
    value = parse_number(answer)
    return None if value is None else str(value)


def majority_key(answer: str) -> str:
    """What majority voting groups an extracted math answer by: its exact value when it is a number ("18",
    "18.0" and "18 dollars" vote together), else its normalised LaTeX (so ``\\sqrt{2}``, ``x^2`` and ``2``
    stay three answers)."""
    return numeric_key(answer) or normalize_latex(answer)


def gold_answer(gold: str) -> str:
    """The gold answer itself: without math delimiters, and read like a response if it holds boxes."""
    if "\\boxed" in gold or "\\fbox" in gold:
        return ", ".join(final_box_group(gold)) or strip_math_delimiters(gold)
    return strip_math_delimiters(gold)


class AnswerChecker:
    """One benchmark's rule: how a response's answer is read, keyed and compared with the gold."""

    name = ""

    def read(self, text: str) -> Extracted:
        raise NotImplementedError

    def answer_key(self, answer: str) -> str | None:
        raise NotImplementedError

    def equal(self, answer: str, gold: str) -> bool:
        raise NotImplementedError

    def prepare_gold(self, gold: str) -> str:
        """The gold as :meth:`equal` takes it; a malformed gold raises ValueError naming it."""
        return gold

    def read_and_compare(self, text: str, gold: str) -> tuple[Extracted, bool]:
        """The answer :meth:`read` finds and whether it equals the gold."""
        extracted = self.read(text)
        return extracted, extracted.answer is not None and self.equal(extracted.answer, gold)

    def __call__(self, response: str, gold: str) -> Verdict:
        gold = self.prepare_gold(str(gold))
        text, windowed = checked_window(response)
        extracted, correct = self.read_and_compare(text, gold)
        if extracted.answer is None:
            return Verdict(False, None, None, extracted.method, windowed)
        return Verdict(correct, extracted.answer, self.answer_key(extracted.answer), extracted.method, windowed)

    def key(self, response: str) -> str | None:
        """The majority-vote key of a response: the verdict's key, without a gold."""
        extracted = self.read(checked_window(response)[0])
        return None if extracted.answer is None else self.answer_key(extracted.answer)


class MathChecker(AnswerChecker):
    """MATH-500 style: stated answers compared by :func:`math_equal`; unboxed text read as math-verify reads it."""

    name = "math"

    def read(self, text: str) -> Extracted:
        return self.read_and_compare(text, None)[0]

    def read_and_compare(self, text: str, gold: str | None) -> tuple[Extracted, bool]:
        """A stated answer compared with the gold by :func:`math_equal`; else math-verify's reading of the text,
        verified against the gold as math-verify parses it (one bounded call)."""
        stated = stated_math_answer(text)
        if stated.method != "none":
            return stated, stated.answer is not None and gold is not None and self.equal(stated.answer, gold)
        answer, correct = math_verify_reading(text, gold)
        return (Extracted(answer, "math_verify"), correct) if answer is not None else (stated, False)

    def answer_key(self, answer: str) -> str | None:
        return majority_key(answer)

    def equal(self, answer: str, gold: str) -> bool:
        return math_equal(gold_answer(gold), answer)


class NumericChecker(AnswerChecker):
    """GSM8K, SVAMP: exact rationals within 1e-6; unboxed text falls back to its last number."""

    name = "numeric"

    def read(self, text: str) -> Extracted:
        return extract_math_answer(text)

    def answer_key(self, answer: str) -> str | None:
        return numeric_key(answer)

    def prepare_gold(self, gold: str) -> str:
        if parse_number(gold) is None:
            raise ValueError(f"gold answer {gold!r} is not a number")
        return gold

    def equal(self, answer: str, gold: str) -> bool:
        value = parse_number(answer)
        return value is not None and numbers_equal(parse_number(gold), value)


class AimeChecker(AnswerChecker):
    """AIME: an integer 0..999 (leading zeros allowed)."""

    name = "aime"

    def read(self, text: str) -> Extracted:
        return extract_math_answer(text)

    def answer_key(self, answer: str) -> str | None:
        value = aime_integer(answer)
        return None if value is None else str(value)

    def prepare_gold(self, gold: str) -> str:
        if aime_integer(gold) is None:
            raise ValueError(f"AIME gold answer {gold!r} is not an integer 0..999")
        return gold

    def equal(self, answer: str, gold: str) -> bool:
        return aime_integer(answer) == aime_integer(gold)


class ChoiceChecker(AnswerChecker):
    """Multiple choice: the last explicit answer letter; "(B)", "B" and "B because ..." are one answer."""

    def __init__(self, num_choices: int) -> None:
        self.num_choices = num_choices
        self.name = f"choice{num_choices}"

    def read(self, text: str) -> Extracted:
        return extract_choice(text, self.num_choices)

    def answer_key(self, answer: str) -> str | None:
        return answer

    def equal(self, answer: str, gold: str) -> bool:
        return answer == gold


check_math = MathChecker()
check_numeric = NumericChecker()
check_aime = AimeChecker()


def choice_checker(num_choices: int) -> ChoiceChecker:
    return ChoiceChecker(num_choices)


CHECKERS: dict[str, AnswerChecker] = {
    checker.name: checker for checker in (check_math, check_numeric, check_aime, choice_checker(4))
}
