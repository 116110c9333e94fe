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

* Digits are never glued across a separator: ``5 \\text{ or } 7`` is not 57 and ``2 \\text{ hours } 30`` is
  not 230; only groups of three digits after single spaces are thousands (``1 000``).
* Unboxed responses (no stated answer) are read as math-verify reads them (:func:`math_verify_reading`).

Every check is bounded in time (:mod:`lm_eval_moe.scoring.bounded`) from any thread, math-verify sees at most
``MAX_VERIFY_CHARS`` of an answer (longer ones are compared as normalised strings only) and the last
``MATH_VERIFY_READ_CHARS`` of a response, and no string makes a check raise.
"""

from __future__ import annotations

import logging
import math
import re
from fractions import Fraction

from lm_eval_moe.scoring.bounded import CheckFailed, call_bounded, preload
from lm_eval_moe.scoring.extract import ascii_forms

MATH_VERIFY_TIMEOUT_S = 5.0
MAX_VERIFY_CHARS = 4096  # longer answers are compared as normalised strings only
MATH_VERIFY_READ_CHARS = 16384  # the tail of an unboxed response that math-verify reads


class _OwnTimeoutsFilter(logging.Filter):
    """math-verify warns that its timeouts are off; they are, because we bound the calls ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_OwnTimeoutsFilter())
preload("math_verify")

_LATEX_NOISE = (
    ("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""), ("\\,", ""),
    ("\\;", ""), ("\\:", ""), ("\\ ", ""), ("\\displaystyle", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\circ", ""),
    ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""),
)


_TEXT_COMMAND = re.compile(r"\\(?:text|mathrm)\{([^{}]*)\}")
#: thousands grouped by single spaces ("1 000 000"), and any other whitespace between two digits
_SPACE_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?: \d{3})+(?![\d]| \d)")
_DIGITS_APART = re.compile(r"(?<=\d)\s+(?=\d)")
_APART = "\x00"  # not whitespace: survives the removal of spaces


def _without_spaces(text: str) -> str:
    """Whitespace removed, except that digits it separates stay apart (``_APART`` between them): "5 7" is
    not 57; thousands grouped by single spaces are one number."""
    text = _SPACE_THOUSANDS.sub(lambda match: match.group().replace(" ", ""), text)
    return re.sub(r"\s+", "", _DIGITS_APART.sub(_APART, text))


def normalize_latex(answer: str) -> str:
    """Cosmetic normalisation for string comparison (spacing, \\left/\\right, \\dfrac, degrees, %, $)."""
    text = answer.strip()
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = _TEXT_COMMAND.sub(r" \1 ", text)
    text = text.replace("**", "")
    return _without_spaces(text).replace(_APART, " ").rstrip(".")


def _math_verify(gold: str, predicted: str) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    predicted_parsed = parse(f"${predicted}$", parsing_timeout=None)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(gold_parsed, predicted_parsed, timeout_seconds=None))


def _math_verify_read(text: str, gold: str | None) -> tuple[str | None, bool]:
    from math_verify import parse, verify

    parsed = parse(text, parsing_timeout=None)
    if len(parsed) < 2:
        return None, False
    if gold is None:
        return str(parsed[-1]), False
    gold_parsed = parse(gold, parsing_timeout=None) or parse(f"${strip_math_delimiters(gold)}$", parsing_timeout=None)
    return str(parsed[-1]), bool(gold_parsed) and bool(verify(gold_parsed, parsed, timeout_seconds=None))


def math_verify_reading(text: str, gold: str | None = None, timeout: float | None = None) -> tuple[str | None, bool]:
    """What math-verify's default ``parse`` reads in the text (its last ``MATH_VERIFY_READ_CHARS``
    characters): the string it matched (None if it reads none or runs out of time), and whether that
    reading verifies against ``gold`` as math-verify parses the gold (gold first; False without a gold)."""
    try:
        return call_bounded(_math_verify_read, (text[-MATH_VERIFY_READ_CHARS:], gold),
                            timeout or MATH_VERIFY_TIMEOUT_S)
    except CheckFailed:
        return None, False


def math_equal(gold: str, predicted: str, timeout: float | None = None) -> bool:
    """Gold-first equivalence of two LaTeX answers; False (not an error) on a time-out or a failure.
    ``timeout``: seconds for math-verify (default ``MATH_VERIFY_TIMEOUT_S``)."""
    if normalize_latex(gold) == normalize_latex(predicted):
        return True
    gold_number, predicted_number = parse_number(gold), parse_number(predicted)
    if gold_number is not None and predicted_number is not None and numbers_equal(gold_number, predicted_number):
        return True  # "10,455" for 10455, "1000,99" for 1000.99, which math-verify reads as sets
    if len(predicted) > MAX_VERIFY_CHARS or len(gold) > MAX_VERIFY_CHARS:
        return False
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
#: what may name a value before "=": a variable ("x", "y_1", "\\theta"), possibly applied ("f(2)", "P(A)")
_LABEL = re.compile(r"\\?[A-Za-z]+(?:_\{?[A-Za-z0-9]+\}?)?(?:\([^()=]{0,40}\))?")
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
    text = re.sub(r"\\text\{([^{}]*)\}", r" \1 ", text)  # unit words read as words, never as a glue
    text = re.sub(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", text)
    for old, new in _LATEX_NOISE:
        text = text.replace(old, new)
    text = _THOUSANDS.sub(lambda match: match.group().replace(",", ""), text)  # 1,000,000
    text = _DECIMAL_COMMA.sub(r"\1.\2", text)  # 1000,99 and 0,111 (a decimal comma)
    text = text.replace("**", "").replace("{,}", "").strip().rstrip(".")
    if "=" in text:
        label, text = text.rsplit("=", 1)
        if not _LABEL.fullmatch(label.strip()):
            return None  # "a + 3z = 0" is an equation, not the number 0
    text = _without_spaces(text)
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
