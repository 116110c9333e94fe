"""Is an extracted answer equivalent to the gold answer? (docs/METHODS.md section 7)

* Math (MATH-500 style): normalised string equality, else Math-Verify with the GOLD FIRST
  (``verify(gold, pred)``). Percent signs are stripped from both sides before Math-Verify, which
  otherwise reads ``10\\%`` as 0.1 and would accept a prediction off by a factor of 100.
* Numeric (GSM8K, SVAMP, AIME): both sides parsed to exact rationals (thousands separators, ``$``,
  units and ``\\frac`` handled); equal within 1e-6 absolute. Percent is never rescaled, so neither
  ref*100 nor ref/100 is accepted. AIME answers must be integers 0..999 (leading zeros allowed).

Every check is bounded in time (:mod:`lm_eval_moe.scoring.bounded`) and safe from any thread.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction

from lm_eval_moe.scoring.bounded import CheckTimeout, call_bounded

MATH_VERIFY_TIMEOUT_S = 5.0


class _OwnTimeoutsFilter(logging.Filter):
    """math-verify warns that its timeouts are off; they are, because we bound the calls ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_OwnTimeoutsFilter())

_LATEX_NOISE = (
    ("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""), ("\\,", ""),
    ("\\;", ""), ("\\:", ""), ("\\ ", ""), ("\\displaystyle", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""),
    ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""),
)


def normalize_latex(answer: str) -> str:
    """Cosmetic normalisation for string comparison (spacing, \\left/\\right, \\dfrac, degrees, %, $)."""
    text = answer.strip()
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", text)
    text = re.sub(r"\\mathrm\{\s*([^{}]*?)\s*\}", r"\1", text)
    text = text.replace("**", "")
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".")


def _math_verify(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    predicted_parsed = parse(f"${predicted}$", parsing_timeout=None)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))


def math_equal(gold: str, predicted: str, timeout: float = MATH_VERIFY_TIMEOUT_S) -> bool:
    """Gold-first equivalence of two LaTeX answers; False (not an error) on a time-out."""
    if normalize_latex(gold) == normalize_latex(predicted):
        return True
    gold_plain = gold.replace("\\%", "").replace("%", "")
    predicted_plain = predicted.replace("\\%", "").replace("%", "")
    try:
        return call_bounded(_math_verify, (gold_plain, predicted_plain), timeout)
    except CheckTimeout:
        return False


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\frac(\d)(\d)$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)/(\d+)$")
_ANY_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")


def parse_number(answer: str | int | float) -> Fraction | None:
    """An exact rational from a numeric answer as models write it, or None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return Fraction(str(answer))
    text = answer.strip()
    text = re.sub(r"\\text\{[^{}]*\}", " ", text)
    text = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", text)
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = text.replace("**", "").replace("{,}", "").strip().rstrip(".")
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    text = re.sub(r"\s+", "", text)
    if _PLAIN_NUMBER.match(text):
        return Fraction(text)
    if match := _SLASH_FRACTION.match(text):
        return Fraction(int(match.group(1)), int(match.group(2))) if int(match.group(2)) else None
    if match := _FRAC.match(text):
        sign = match.group(1) or match.group(4)
        numerator = int(match.group(2) or match.group(5))
        denominator = int(match.group(3) or match.group(6))
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
        return -value if sign else value
    numbers = _ANY_NUMBER.findall(text)
    if len(numbers) == 1:  # a number with unit words around it ("18dollars", "x5")
        return parse_number(numbers[0])
    return None


def numbers_equal(gold: Fraction, predicted: Fraction, tolerance: float = 1e-6) -> bool:
    """Exact, or within an ABSOLUTE 1e-6 (a rounded 1/3); never relative: 1450001 is not 1450000."""
    return gold == predicted or abs(float(gold - predicted)) <= tolerance


def aime_integer(answer: str) -> int | None:
    """The AIME answer as an integer 0..999, or None if it is not one."""
    value = parse_number(answer)
    if value is None or value.denominator != 1 or not 0 <= value.numerator <= 999:
        return None
    return value.numerator
