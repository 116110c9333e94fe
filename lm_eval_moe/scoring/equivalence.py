"""Is an extracted answer equivalent to the gold answer? (docs/METHODS.md section 7)

* Math (MATH-500 style): normalised string equality, else Math-Verify with the GOLD FIRST
  (``verify(gold, pred)``). Percent signs are stripped from both sides before Math-Verify, which
  otherwise reads ``10\\%`` as 0.1 and would accept a prediction off by a factor of 100.
* Numeric (GSM8K, SVAMP, AIME): both sides parsed to exact rationals (thousands separators, ``$``,
  unit words and ``\\frac`` handled; a number inside an expression such as ``\\sqrt{2}`` or ``x^2`` is not
  that number); equal within 1e-6 absolute. Percent is never rescaled, so neither ref*100 nor ref/100 is
  accepted. AIME answers must be integers 0..999 (leading zeros allowed). Numbers of more than
  ``MAX_NUMBER_DIGITS`` digits or exponent are not read as numbers (Python refuses to convert such ints,
  and ``1e999999999`` would not fit in memory).

Every check is bounded in time (:mod:`lm_eval_moe.scoring.bounded`) from any thread, and no string makes
it raise.
"""

from __future__ import annotations

import logging
import math
import re
from fractions import Fraction

from lm_eval_moe.scoring.bounded import CheckFailed, call_bounded
from lm_eval_moe.scoring.extract import ascii_forms

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


_TEXT_COMMAND = re.compile(r"\\(?:text|mathrm)\{([^{}]*)\}")


def normalize_latex(answer: str) -> str:
    """Cosmetic normalisation for string comparison (spacing, \\left/\\right, \\dfrac, degrees, %, $)."""
    text = answer.strip()
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = _TEXT_COMMAND.sub(r"\1", text)
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


def math_equal(gold: str, predicted: str, timeout: float | None = None) -> bool:
    """Gold-first equivalence of two LaTeX answers; False (not an error) on a time-out or a failure.
    ``timeout``: seconds for math-verify (default ``MATH_VERIFY_TIMEOUT_S``)."""
    if normalize_latex(gold) == normalize_latex(predicted):
        return True
    gold_number, predicted_number = parse_number(gold), parse_number(predicted)
    if gold_number is not None and predicted_number is not None and numbers_equal(gold_number, predicted_number):
        return True  # "10,455" for 10455, "1000,99" for 1000.99, which math-verify reads as sets
    gold_plain = gold.replace("\\%", "").replace("%", "")
    predicted_plain = predicted.replace("\\%", "").replace("%", "")
    try:
        return call_bounded(_math_verify, (gold_plain, predicted_plain), timeout or MATH_VERIFY_TIMEOUT_S)
    except CheckFailed:
        return False


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?)\\frac(\d)(\d)$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)/(\d+)$")
_ANY_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:/\d+)?|[-+]?\.\d+")
#: what may stand beside a number that is still that number: nothing, or a unit word ("18dollars" once spaces
#: are gone); a single letter is a variable ("2x"), anything else (\\sqrt, ^, \\pi, !) makes an expression
_UNIT_WORD = re.compile(r"(?:[A-Za-z]{2,})?")
#: a digit group with thousands separators, and a decimal comma: any other comma between digits ("0,111",
#: "1000,99", "3,14159"); "1,000" stays one thousand
_THOUSANDS = re.compile(r"(?<![\d,.])[1-9]\d{0,2}(?:,\d{3})+(?![\d,])")
_DECIMAL_COMMA = re.compile(r"(?<![\d,.])(\d+),(\d+)(?![\d,])")
MAX_NUMBER_DIGITS = 4000  # digits, or exponent magnitude, of a number we read (Python's int limit is 4300)


def _fraction(text: str) -> Fraction | None:
    """``Fraction(text)`` for a plain decimal, refusing sizes that Python cannot convert or store."""
    mantissa, _, exponent = text.lower().partition("e")
    if sum(c.isdigit() for c in mantissa) > MAX_NUMBER_DIGITS:
        return None
    if exponent and (len(exponent.lstrip("+-")) > 5 or abs(int(exponent)) > MAX_NUMBER_DIGITS):
        return None
    return Fraction(text)


def _integer(text: str) -> int | None:
    return int(text) if len(text.lstrip("+-")) <= MAX_NUMBER_DIGITS else None


_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_PART_SEPARATOR = re.compile(r",|;|\\q?quad(?![A-Za-z])|(?<![A-Za-z])(?:and|or)(?![A-Za-z])")


def strip_math_delimiters(answer: str) -> str:
    """``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]`` -> ``x``."""
    text = answer.strip()
    for opening, closing in _MATH_DELIMITERS:
        if len(text) >= len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
            return text[len(opening) : len(text) - len(closing)].strip()
    return text


def _closes_at_end(text: str) -> bool:
    """Whether the ``{`` opening ``text`` is closed by its last character."""
    depth = 0
    for index, char in enumerate(text):
        escaped = index > 0 and text[index - 1] == "\\"
        if char == "{" and not escaped:
            depth += 1
        elif char == "}" and not escaped:
            depth -= 1
            if depth == 0:
                return index == len(text) - 1
    return False


def _unwrap_set(text: str) -> str:
    if text.startswith("\\{") and text.endswith("\\}") and "\\}" not in text[2:-2]:
        return text[2:-2]
    if text.startswith("{") and text.endswith("}") and _closes_at_end(text):
        return text[1:-1]
    return text


def answer_parts(answer: str) -> list[str]:
    """The parts of an answer that states several ("(2, 1), (1, 2)", "k = 45, n = 2", "\\{1, 2, 3\\}"):
    split at top-level commas, semicolons, \\quad, "and", "or"; a number ("1,000", "1000,99") or a tuple or
    interval ("(2, 3)", "[0, 1)") is one part."""
    text = strip_math_delimiters(answer)
    if "=" not in text and parse_number(text) is not None:
        return [text]
    text = _THOUSANDS.sub(lambda match: match.group().replace(",", ""), _unwrap_set(text))
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"\\[{}]|[()\[\]{}]|" + _PART_SEPARATOR.pattern, text):
        token = match.group()
        if token in ("(", "[", "{", "\\{"):
            depth += 1
        elif token in (")", "]", "}", "\\}"):
            depth = max(0, depth - 1)
        elif depth == 0:
            parts.append(text[start : match.start()])
            start = match.end()
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def parse_number(answer: str | int | float) -> Fraction | None:
    """An exact rational from a numeric answer as models write it, or None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        return _fraction(str(answer)) if math.isfinite(answer) else None
    text = ascii_forms(answer).strip()
    text = re.sub(r"\\text\{[^{}]*\}", " ", text)
    text = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", text)
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = _THOUSANDS.sub(lambda match: match.group().replace(",", ""), text)  # 1,000,000
    text = _DECIMAL_COMMA.sub(r"\1.\2", text)  # 1000,99 and 0,111 (a decimal comma)
    text = text.replace("**", "").replace("{,}", "").strip().rstrip(".")
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    text = re.sub(r"\s+", "", text)
    if _PLAIN_NUMBER.match(text):
        return _fraction(text)
    if match := _SLASH_FRACTION.match(text):
        numerator, denominator = _integer(match.group(1)), _integer(match.group(2))
        return Fraction(numerator, denominator) if numerator is not None and denominator else None
    if match := _FRAC.match(text):
        sign = match.group(1) or match.group(4)
        numerator = _integer(match.group(2) or match.group(5))
        denominator = _integer(match.group(3) or match.group(6))
        if numerator is None or not denominator:
            return None
        value = Fraction(numerator, denominator)
        return -value if sign else value
    numbers = list(_ANY_NUMBER.finditer(text))
    if len(numbers) == 1:  # a number with unit words around it ("18dollars"), never inside an expression
        number = numbers[0]
        if _UNIT_WORD.fullmatch(text[: number.start()]) and _UNIT_WORD.fullmatch(text[number.end() :]):
            return parse_number(number.group())
    return None


def numbers_equal(gold: Fraction, predicted: Fraction, tolerance: Fraction = Fraction(1, 10**6)) -> bool:
    """Exact, or within an ABSOLUTE 1e-6 (a rounded 1/3); never relative: 1450001 is not 1450000."""
    return gold == predicted or abs(gold - predicted) <= tolerance


def aime_integer(answer: str) -> int | None:
    """The AIME answer as an integer 0..999, or None if it is not one."""
    value = parse_number(answer)
    if value is None or value.denominator != 1 or not 0 <= value.numerator <= 999:
        return None
    return value.numerator
