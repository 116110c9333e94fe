"""Answer extraction from model text (docs/METHODS.md section 7).

Math: the answer a response STATES, read the same way whatever the gold: its final box, or the boxes that
end it standing together (``\\boxed{1}, \\boxed{2}``: one stated answer "1, 2", so a list of candidates is
never right for a one-part gold), unless a "final answer is ..." statement follows every box; else the last
"the answer is ..." / "Final Answer: ..." statement. A response whose last box never closes (a reasoning
model cut off mid-answer, or degenerate ``\\boxed{\\boxed{...``) states nothing: no fallback reading is taken
from it. :func:`extract_math_answer` adds the last-number fallback the numeric checkers use; the math
checker reads unboxed text as math-verify does instead (:mod:`lm_eval_moe.scoring.checkers`).
Multiple choice: the LAST explicit answer statement (``\\boxed{B}``, "answer is (B)", "Answer: B"), never
the first capital letter in the text.

Model text is untrusted and can be degenerate (megabytes of ``\\boxed{`` or "answer: 1 " from a reasoning
model at a large ``max_gen_toks``). Every function here runs in time AND memory linear in the text: one
pass for the braces, boxes and statements held as positions (a box's content is sliced only when read),
statements at most ``MAX_STATEMENT_CHARS`` long, regexes only where no two adjacent quantifiers can match
the same characters. Checkers read at most the last ``MAX_CHECKED_CHARS`` characters of a response
(:func:`checked_window`); their verdicts say when they did. Signs and digits typed as other Unicode
characters (U+2212 minus, dashes, full-width digits) are read as ASCII.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: responses longer than this are judged on their last MAX_CHECKED_CHARS characters (where the answer is)
MAX_CHECKED_CHARS = 1 << 20
#: an answer statement ("the answer is ...") longer than this is not a readable answer
MAX_STATEMENT_CHARS = 2000
#: how many of the last answer statements are tried, from the last, for one that reads as an answer
STATEMENTS_TRIED = 8

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE = re.compile(r"(?<!\\)[{}]")
#: a number as the last-number fallback reads it; thousands grouped with commas or with single spaces
#: ("1 000", as math-verify reads it), never digits glued across other separators ("5 7" is two numbers)
_NUMBER = re.compile(
    r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d{1,3}(?: \d{3})+(?:\.\d+)?(?!\d| \d)"
    r"|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+"
)
_WHITESPACE_RUN = re.compile(r"\s+")

#: characters models (or their tokenizers) use for "-", "+", "." and digits
_ASCII_FORMS = str.maketrans({
    "\u2212": "-", "\u2012": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-", "\uff0b": "+", "\uff0e": ".",
    **{chr(0xFF10 + digit): str(digit) for digit in range(10)},
})


def ascii_forms(text: str) -> str:
    """Minus signs, dashes used as minus, full-width digits and signs as their ASCII characters."""
    return text.translate(_ASCII_FORMS)


def checked_window(text: str) -> tuple[str, bool]:
    """The part of a response a checker reads (the whole text, or its last ``MAX_CHECKED_CHARS``
    characters), and whether it was cut."""
    if len(text) <= MAX_CHECKED_CHARS:
        return text, False
    return text[-MAX_CHECKED_CHARS:], True


@dataclass(frozen=True)
class Extracted:
    answer: str | None
    method: str  # "boxed" | "boxed_group" | "answer_phrase" | "last_number" | "unclosed_box" | "none"


def _brace_pairs(text: str) -> tuple[dict[int, int], list[int]]:
    """Position of the matching ``}`` of every ``{`` that has one, and the ``{`` that never close (escaped
    braces ``\\{`` ``\\}`` do not count), in one pass over the braces."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE.finditer(text):
        index = match.start()
        if text[index] == "{":
            stack.append(index)
        elif stack:
            pairs[stack.pop()] = index
    return pairs, stack


@dataclass(frozen=True)
class Box:
    """A box command and its argument, as positions in ``text`` (no copy until :attr:`content` is read)."""

    text: str
    start: int  # position of the command
    end: int  # position after the argument
    content_start: int
    content_end: int

    @property
    def content(self) -> str:
        return self.text[self.content_start : self.content_end]


@dataclass(frozen=True)
class BoxScan:
    boxes: list[Box]  # every complete box, in order
    last_unclosed: int | None  # position of the last box command whose brace never closes

    @property
    def final_box_unclosed(self) -> bool:
        """The text's last box attempt never closes: it states no final answer."""
        return self.last_unclosed is not None and (not self.boxes or self.last_unclosed > self.boxes[-1].start)


def scan_boxes(text: str) -> BoxScan:
    """Every complete ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed x`` in order, and the last unclosed one."""
    pairs: dict[int, int] | None = None
    found: list[Box] = []
    last_unclosed: int | None = None
    for command in _BOX_COMMANDS:
        position = text.find(command)
        while position != -1:
            after = position + len(command)
            cursor = after
            while cursor < len(text) and text[cursor] == " ":
                cursor += 1
            if cursor < len(text) and text[cursor] == "{":
                if pairs is None:
                    pairs, _ = _brace_pairs(text)
                close = pairs.get(cursor)
                if close is not None:
                    found.append(Box(text, position, close + 1, cursor + 1, close))
                else:
                    last_unclosed = max(position, -1 if last_unclosed is None else last_unclosed)
            elif cursor > after:  # "\boxed 5": the argument is the next token
                cursor = _skip_space(text, cursor)
                end = cursor
                while end < len(text) and not text[end].isspace() and text[end] != "$":
                    end += 1
                if end > cursor:
                    found.append(Box(text, position, end, cursor, end))
            position = text.find(command, max(after, cursor))
    found.sort(key=lambda box: box.start)
    return BoxScan(found, last_unclosed)


def boxes(text: str) -> list[Box]:
    return scan_boxes(text).boxes


def boxed_contents(text: str) -> list[str]:
    return [box.content for box in boxes(text)]


def last_boxed(text: str) -> str | None:
    found = boxes(text)
    return found[-1].content if found else None


#: what may stand between the boxes of one answer given in several boxes ("\boxed{1}, \boxed{2} and
#: \boxed{3}", "$\boxed{(2, 2)}$ \quad or \quad $\boxed{(6, 2)}$", "\( y_1 = \boxed{..} \) and \( y_2 = \boxed{..} \)",
#: "\boxed{1} papers and \boxed{2} bins"): spacing, punctuation, math delimiters, a short \text{...}, a variable
#: label "y_2 =", "(a)", and words (each matched whole, so no input makes the match backtrack) provided a
#: connector ("," ";" "and" "or") joins them: "\boxed{1}. So x = \boxed{2}" is two answers, the last one final,
#: and so is a correction or a conclusion ("\boxed{3}, but actually \boxed{5}", "\boxed{3}, so \boxed{5}")
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[,;.:]|\$|\\[()\[\],;:! ]|\\q?quad(?![A-Za-z])|\\text\{[^{}]{0,40}\}|\([a-z]\)"
    r"|[A-Za-z](?:_\{?[A-Za-z0-9]{1,3}\}?)?\s?=|[A-Za-z]+(?![A-Za-z]))*"
)
_CONNECTOR = re.compile(r"[,;]|(?<![A-Za-z])(?:and|or)(?![A-Za-z])")
_BREAKER = re.compile(
    r"(?<![A-Za-z])(?:but|actually|wait|instead|however|rather|correction|so|thus|therefore|hence|hmm|mistake|oops"
    r"|sorry|recheck|again|not|no|final)(?![A-Za-z])", re.IGNORECASE)
_COMMAND = re.compile(r"\\[A-Za-z]+")
MAX_BOX_GAP = 80  # characters between two boxes of one answer
MAX_BOX_GROUP = 32  # boxes of one answer (math-verify reads up to 6)


def _joins(text: str, start: int, end: int) -> bool:
    if end - start > MAX_BOX_GAP:
        return False
    gap = text[start:end]
    if not _BOX_SEPARATOR.fullmatch(gap) or _BREAKER.search(_COMMAND.sub("", gap)):
        return False
    return bool(_CONNECTOR.search(gap)) or not any(char.isalpha() for char in _COMMAND.sub("", gap))


def box_group(found: list[Box]) -> list[Box]:
    """The boxes that end the text's boxed answers and stand together (only separators between them): the
    parts of an answer given in several boxes; just the last box otherwise."""
    group = found[-1:]
    for earlier in reversed(found[:-1]):
        if len(group) == MAX_BOX_GROUP or not _joins(earlier.text, earlier.end, group[-1].start):
            break
        group.append(earlier)
    return group[::-1]


def final_box_group(text: str) -> list[str]:
    """The contents of :func:`box_group`, stripped."""
    return [box.content.strip() for box in box_group(boxes(text))]


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


_ANSWER_WORD = re.compile("answer", re.IGNORECASE)


def _is_word_at(text: str, index: int) -> bool:
    return text[index : index + 2].lower() == "is"


@dataclass(frozen=True)
class Phrase:
    """What follows an "answer is|:|=": positions in the text, at most ``MAX_STATEMENT_CHARS`` long."""

    start: int
    end: int
    final: bool  # "final answer is ...", "Final Answer: ..."


def _answer_phrases(text: str) -> list[Phrase]:
    """Every "answer is|:|=" statement (optionally "... is is", colons) up to the end of its line. A scan
    from each "answer" stops at the first character that is not whitespace or ':', so the scans of
    successive occurrences never overlap, and each looks for the line end at most ``MAX_STATEMENT_CHARS``
    ahead: linear time and memory. A statement whose line runs on past that is not an answer."""
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
        resume = index
        limit = min(len(text), index + MAX_STATEMENT_CHARS)
        end = text.find("\n", index, limit + 1)
        if end == -1:
            if limit < len(text):
                continue  # no line end within reach: not a statement of an answer
            end = len(text)
        if end > index:
            final = text[max(0, word.start() - 6) : word.start()].lower().rstrip().endswith("final")
            phrases.append(Phrase(index, end, final))
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


def stated_math_answer(text: str) -> Extracted:
    """The answer the text states (boxes, then statements), or ``none`` / ``unclosed_box``; no fallback."""
    scan = scan_boxes(text)
    if scan.final_box_unclosed:
        return Extracted(None, "unclosed_box")
    found = scan.boxes
    phrases = _answer_phrases(text)
    # a "final answer is ..." statement after every box is the final word ("... \boxed{255} ... The final
    # answer is $10,455$."); otherwise a box wins over any phrase
    closing = [p for p in phrases if p.final and found and p.start >= found[-1].end]
    if found and found[-1].content.strip() and not closing:
        group = box_group(found)
        if len(group) > 1:
            return Extracted(ascii_forms(", ".join(box.content.strip() for box in group)), "boxed_group")
        return Extracted(ascii_forms(found[-1].content.strip()), "boxed")
    for phrase in (closing or phrases)[::-1][:STATEMENTS_TRIED]:
        answer = _clean_phrase(text[phrase.start : phrase.end])
        if answer:
            return Extracted(ascii_forms(answer), "answer_phrase")
    return Extracted(None, "none")


def last_number(text: str) -> str | None:
    """The last number written in the text (the numeric checkers' fallback), spaces and thousands
    separators removed."""
    last = None
    for last in _NUMBER.finditer(ascii_forms(text).replace("**", "")):
        pass
    return None if last is None else re.sub(r"\s+", "", last.group())


def extract_math_answer(text: str) -> Extracted:
    """:func:`stated_math_answer`, else the last number."""
    stated = stated_math_answer(text)
    if stated.method != "none":
        return stated
    number = last_number(text)
    return Extracted(number, "last_number") if number is not None else stated


_CHOICE_STATEMENTS = (
    re.compile(r"answer\s*(?:is|:|=)?\s*(?:option|choice)?\s*[:\s]*\**\s*[(\[]?\s*(?P<letter>[A-Z])\s*[)\]]?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?:option|choice)\s+[(\[]?(?P<letter>[A-Z])[)\]]?\s+is\s+(?:the\s+)?correct", re.IGNORECASE),
)
#: a letter alone in a box ("B", "(B)", "\text{B}", "B." and "B because" read from the box's start)
_BOXED_LETTER = re.compile(r"\s*(?:\\text\{\s*)?[(\[]?\s*(?P<letter>[A-Z])\s*[)\].:]?\s*\}?(?:\s|$|[).:])")
_FINAL_LINE_LETTER = re.compile(r"^\s*\**\s*[(\[]?(?P<letter>[A-Z])[)\].]?\s*\**\s*$")


def extract_choice(text: str, num_choices: int = 4) -> Extracted:
    """The last explicit answer letter among the first ``num_choices`` letters, or none."""
    valid = {chr(ord("A") + i) for i in range(num_choices)}
    stripped = text.rstrip()
    final_line = _WHITESPACE_RUN.sub(" ", stripped[stripped.rfind("\n") + 1 :])
    text = _WHITESPACE_RUN.sub(" ", text)  # one space per run: no two adjacent \s* can split a long run
    scan = scan_boxes(text)
    candidates: list[tuple[int, str, str]] = []
    for box in scan.boxes:
        match = _BOXED_LETTER.match(text, box.content_start, box.content_end)
        if match and match.group("letter").upper() in valid:
            candidates.append((box.start, match.group("letter").upper(), "boxed"))
    for pattern in _CHOICE_STATEMENTS:
        for match in pattern.finditer(text):
            letter = match.group("letter")
            if letter.upper() in valid and (letter.isupper() or "(" in match.group(0)):
                candidates.append((match.start("letter"), letter.upper(), "answer_phrase"))
    if scan.final_box_unclosed and (not candidates or max(candidates)[0] < (scan.last_unclosed or 0)):
        return Extracted(None, "unclosed_box")
    if candidates:
        _, letter, method = max(candidates)
        return Extracted(letter, method)
    match = _FINAL_LINE_LETTER.match(final_line)
    if match and match.group("letter") in valid:
        return Extracted(match.group("letter"), "final_line")
    return Extracted(None, "none")
