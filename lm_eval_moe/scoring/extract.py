"""Answer extraction from model text (docs/METHODS.md section 7).

Math: the LAST ``\\boxed{}`` / ``\\fbox{}`` (brace-matched, nested braces allowed), else the last
"the answer is ..." / "Final Answer: ..." statement, else the last number. Multiple choice: the LAST
explicit answer statement (``\\boxed{B}``, "answer is (B)", "Answer: B"), never the first capital
letter in the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?:is\s*)?[:\s]*(?P<answer>[^\n]+)", re.IGNORECASE
)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


@dataclass(frozen=True)
class Extracted:
    answer: str | None
    method: str  # "boxed" | "answer_phrase" | "last_number" | "none"


def _matching_brace(text: str, open_index: int) -> int | None:
    depth = 0
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "\\":  # an escaped brace (\{ \}) does not count
            continue
        if char == "{" and (index == 0 or text[index - 1] != "\\"):
            depth += 1
        elif char == "}" and (index == 0 or text[index - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return index
    return None


def boxed_spans(text: str) -> list[tuple[int, str]]:
    """(position, content) of every complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x``, in order."""
    found: list[tuple[int, str]] = []
    for command in _BOX_COMMANDS:
        start = 0
        while (position := text.find(command, start)) != -1:
            after = position + len(command)
            start = after
            rest = text[after:]
            stripped = rest.lstrip(" ")
            if stripped.startswith("{"):
                open_index = after + len(rest) - len(stripped)
                close_index = _matching_brace(text, open_index)
                if close_index is not None:
                    found.append((position, text[open_index + 1 : close_index]))
            elif rest.startswith(" "):  # "\boxed 5": the argument is the next token
                token = re.match(r"\s+([^\s$]+)", rest)
                if token:
                    found.append((position, token.group(1)))
    return sorted(found)


def boxed_contents(text: str) -> list[str]:
    return [content for _, content in boxed_spans(text)]


def last_boxed(text: str) -> str | None:
    contents = boxed_contents(text)
    return contents[-1] if contents else None


def _clean_phrase(answer: str) -> str:
    answer = answer.strip()
    answer = re.sub(r"^\*+|\*+$", "", answer).strip()  # markdown bold
    if answer.startswith("$") and answer.count("$") >= 2:
        answer = answer[1 : answer.index("$", 1)]
    answer = re.sub(r"[.\s]+$", "", answer)
    return answer.strip().strip("*").strip()


def extract_math_answer(text: str) -> Extracted:
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return Extracted(boxed.strip(), "boxed")
    phrases = list(_ANSWER_PHRASE.finditer(text))
    if phrases:
        answer = _clean_phrase(phrases[-1].group("answer"))
        if answer:
            return Extracted(answer, "answer_phrase")
    numbers = _NUMBER.findall(text.replace("**", ""))
    if numbers:
        return Extracted(numbers[-1].replace(" ", ""), "last_number")
    return Extracted(None, "none")


_CHOICE_STATEMENTS = (
    re.compile(r"answer\s*(?:is|:|=)?\s*(?:option|choice)?\s*[:\s]*\**\s*[(\[]?\s*(?P<letter>[A-Z])\s*[)\]]?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?:option|choice)\s+[(\[]?(?P<letter>[A-Z])[)\]]?\s+is\s+(?:the\s+)?correct", re.IGNORECASE),
)
_BOXED_LETTER = re.compile(r"^\s*(?:\\text\{\s*)?[(\[]?\s*(?P<letter>[A-Z])\s*[)\].:]?\s*\}?(?:\s|$|[).:])")
_FINAL_LINE_LETTER = re.compile(r"^\s*\**\s*[(\[]?(?P<letter>[A-Z])[)\].]?\s*\**\s*$")


def extract_choice(text: str, num_choices: int = 4) -> Extracted:
    """The last explicit answer letter among the first ``num_choices`` letters, or none."""
    valid = {chr(ord("A") + i) for i in range(num_choices)}
    candidates: list[tuple[int, str, str]] = []
    for position, content in boxed_spans(text):
        match = _BOXED_LETTER.match(content)
        if match and match.group("letter").upper() in valid:
            candidates.append((position, match.group("letter").upper(), "boxed"))
    for pattern in _CHOICE_STATEMENTS:
        for match in pattern.finditer(text):
            letter = match.group("letter")
            if letter.upper() in valid and (letter.isupper() or "(" in match.group(0)):
                candidates.append((match.start("letter"), letter.upper(), "answer_phrase"))
    if candidates:
        _, letter, method = max(candidates)
        return Extracted(letter, method)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        match = _FINAL_LINE_LETTER.match(lines[-1])
        if match and match.group("letter") in valid:
            return Extracted(match.group("letter"), "final_line")
    return Extracted(None, "none")
