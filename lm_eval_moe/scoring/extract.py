"""Answer extraction from model text (docs/METHODS.md section 7).

Math: the LAST ``\\boxed{}`` / ``\\fbox{}`` (brace-matched, nested braces allowed) unless a "final answer is
..." statement follows every box, else the last "the answer is ..." / "Final Answer: ..." statement, else the
last number. :func:`final_box_group` gives the boxes of an answer written in several (the checker uses it
where the gold has several parts). Multiple choice: the LAST
explicit answer statement (``\\boxed{B}``, "answer is (B)", "Answer: B"), never the first capital
letter in the text.

Model text is untrusted: every function here runs in time linear in the text (one pass for the braces,
scans that never revisit a character, and regexes only where no two adjacent quantifiers can match the
same characters; whitespace runs are collapsed before the choice patterns for that reason). Signs and
digits typed as other Unicode characters (U+2212 minus, dashes, full-width digits) are read as ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_WHITESPACE_RUN = re.compile(r"\s+")

#: characters models (or their tokenizers) use for "-", "+", "." and digits
_ASCII_FORMS = str.maketrans({
    "\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-", "\uff0b": "+", "\uff0e": ".",
    **{chr(0xFF10 + digit): str(digit) for digit in range(10)},
})


def ascii_forms(text: str) -> str:
    """Minus signs, dashes used as minus, full-width digits and signs as their ASCII characters."""
    return text.translate(_ASCII_FORMS)


@dataclass(frozen=True)
class Extracted:
    answer: str | None
    method: str  # "boxed" | "answer_phrase" | "last_number" | "none"


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of the matching ``}`` of every ``{`` that has one (escaped braces ``\\{`` ``\\}`` do not count),
    in one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, char in enumerate(text):
        if char in "{}" and index and text[index - 1] == "\\":
            continue
        if char == "{":
            stack.append(index)
        elif char == "}" and stack:
            pairs[stack.pop()] = index
    return pairs


@dataclass(frozen=True)
class Box:
    start: int  # position of the command
    end: int  # position after the argument
    content: str


def boxes(text: str) -> list[Box]:
    """Every complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x``, in order."""
    pairs: dict[int, int] | None = None
    found: list[Box] = []
    for command in _BOX_COMMANDS:
        position = text.find(command)
        while position != -1:
            after = position + len(command)
            cursor = after
            while cursor < len(text) and text[cursor] == " ":
                cursor += 1
            if cursor < len(text) and text[cursor] == "{":
                pairs = _brace_pairs(text) if pairs is None else pairs
                close = pairs.get(cursor)
                if close is not None:
                    found.append(Box(position, close + 1, text[cursor + 1 : close]))
            elif cursor > after:  # "\boxed 5": the argument is the next token
                cursor = _skip_space(text, cursor)
                end = cursor
                while end < len(text) and not text[end].isspace() and text[end] != "$":
                    end += 1
                if end > cursor:
                    found.append(Box(position, end, text[cursor:end]))
            position = text.find(command, max(after, cursor))
    return sorted(found, key=lambda box: box.start)


def boxed_contents(text: str) -> list[str]:
    return [box.content for box in boxes(text)]


def last_boxed(text: str) -> str | None:
    contents = boxed_contents(text)
    return contents[-1] if contents else None


#: what may stand between the boxes of one answer given in several boxes ("\boxed{1}, \boxed{2} and
#: \boxed{3}", "$\boxed{(2, 2)}$ \quad or \quad $\boxed{(6, 2)}$", "\( y_1 = \boxed{..} \) and \( y_2 = \boxed{..} \)",
#: "\boxed{1} papers and \boxed{2} bins"): spacing, punctuation, math delimiters, a short \text{...}, a variable
#: label "y_2 =", "(a)", and words (each matched whole, so no input makes the match backtrack) provided a
#: connector ("," ";" "and" "or") joins them: "\boxed{1}. So x = \boxed{2}" is two answers, the last one final
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[,;.:]|\$|\\[()\[\],;:! ]|\\q?quad(?![A-Za-z])|\\text\{[^{}]{0,40}\}|\([a-z]\)"
    r"|[A-Za-z](?:_\{?[A-Za-z0-9]{1,3}\}?)?\s?=|[A-Za-z]+(?![A-Za-z]))*"
)
_CONNECTOR = re.compile(r"[,;]|(?<![A-Za-z])(?:and|or)(?![A-Za-z])")
_COMMAND = re.compile(r"\\[A-Za-z]+")
MAX_BOX_GAP = 80  # characters between two boxes of one answer
MAX_BOX_GROUP = 32  # boxes of one answer (math-verify reads up to 6)


def _joins(gap: str) -> bool:
    if len(gap) > MAX_BOX_GAP or not _BOX_SEPARATOR.fullmatch(gap):
        return False
    return bool(_CONNECTOR.search(gap)) or not any(char.isalpha() for char in _COMMAND.sub("", gap))


def final_box_group(text: str) -> list[str]:
    """The contents of the boxes that end the text's boxed answers and stand together (only separators
    between them): the parts of an answer given in several boxes; just the last box otherwise."""
    found = boxes(text)
    group = found[-1:]  # last box first
    for earlier in reversed(found[:-1]):
        if len(group) == MAX_BOX_GROUP or not _joins(text[earlier.end : group[-1].start]):
            break
        group.append(earlier)
    return [box.content.strip() for box in reversed(group)]


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


_ANSWER_WORD = re.compile("answer", re.IGNORECASE)


def _is_word_at(text: str, index: int) -> bool:
    return text[index : index + 2].lower() == "is"


@dataclass(frozen=True)
class Phrase:
    start: int
    text: str
    final: bool  # "final answer is ...", "Final Answer: ..."


def _answer_phrases(text: str) -> list[Phrase]:
    """What follows every "answer is|:|=" (optionally "... is is", colons): the rest of that line. A scan
    from each "answer" stops at the first character that is not whitespace or ':', so the scans of
    successive occurrences never overlap: linear time."""
    phrases = []
    resume = 0
    for word in _ANSWER_WORD.finditer(text):
        if word.start() < resume:
            continue
        index = _skip_space(text, word.end())
        if _is_word_at(text, index):
            index += 2
        elif index < len(text) and text[index] in ":=":
            index += 1
        else:
            continue
        index = _skip_space(text, index)
        if _is_word_at(text, index):
            index = _skip_space(text, index + 2)
        while index < len(text) and (text[index] == ":" or text[index].isspace()):
            index += 1
        end = text.find("\n", index)
        phrase = text[index : len(text) if end == -1 else end]
        if phrase:
            final = text[max(0, word.start() - 6) : word.start()].lower().rstrip().endswith("final")
            phrases.append(Phrase(index, phrase, final))
        resume = index
    return phrases


#: the sentence Minerva-style prompts end an answer with ("The final answer is $x$. I hope it is correct.")
_MINERVA_TAIL = re.compile(r"\s*I hope it is correct\.?\s*$")


def _clean_phrase(answer: str) -> str:
    answer = _MINERVA_TAIL.sub("", answer).strip().strip("*").strip()  # markdown bold
    answer = answer.rstrip(". \t\r\f\v").removeprefix('\\"').removesuffix('\\"').strip('"').strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.replace("$", " ")  # "$12$ and $13$": the whole statement
    elif answer.startswith("$"):
        close = answer.find("$", 1)
        if close != -1:
            answer = answer[1:close]
    answer = answer.rstrip(". \t\r\f\v")
    return answer.strip().strip("*").strip()


def extract_math_answer(text: str) -> Extracted:
    found = boxes(text)
    phrases = _answer_phrases(text)
    # a "final answer is ..." statement after every box is the final word ("... \boxed{255} ... The final
    # answer is $10,455$."); otherwise a box wins over any phrase
    closing = [p for p in phrases if p.final and found and p.start >= found[-1].end]
    if found and found[-1].content.strip() and not closing:
        return Extracted(ascii_forms(found[-1].content.strip()), "boxed")
    for phrase in reversed(closing or phrases):
        answer = _clean_phrase(phrase.text)
        if answer:
            return Extracted(ascii_forms(answer), "answer_phrase")
    numbers = _NUMBER.findall(ascii_forms(text).replace("**", ""))
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
    lines = [line for line in text.strip().splitlines() if line.strip()]
    final_line = _WHITESPACE_RUN.sub(" ", lines[-1]) if lines else ""
    text = _WHITESPACE_RUN.sub(" ", text)  # one space per run: no two adjacent \s* can split a long run
    candidates: list[tuple[int, str, str]] = []
    for box in boxes(text):
        match = _BOXED_LETTER.match(box.content)
        if match and match.group("letter").upper() in valid:
            candidates.append((box.start, match.group("letter").upper(), "boxed"))
    for pattern in _CHOICE_STATEMENTS:
        for match in pattern.finditer(text):
            letter = match.group("letter")
            if letter.upper() in valid and (letter.isupper() or "(" in match.group(0)):
                candidates.append((match.start("letter"), letter.upper(), "answer_phrase"))
    if candidates:
        _, letter, method = max(candidates)
        return Extracted(letter, method)
    match = _FINAL_LINE_LETTER.match(final_line)
    if match and match.group("letter") in valid:
        return Extracted(match.group("letter"), "final_line")
    return Extracted(None, "none")
