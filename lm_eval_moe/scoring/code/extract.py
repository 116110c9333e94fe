"""Program text from a model response: fenced blocks of chat answers, or completion-style code.

* A response with fenced blocks (```python ... ```, or an unclosed last fence): the last block that
  defines the entry point if one does, else the last block.
* A completion (code continuing the prompt, i.e. starting indented): cut at a closing fence, then at
  the first top-level line
  that cannot belong to the program (prose, ``print(...)``, ``if __name__``, asserts): base models
  often go on writing tests or text after the function.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PROGRAM_LINE = re.compile(r"^(def |class |async def |import |from |@|#|[A-Za-z_][A-Za-z0-9_, ]*\s*[:=]|\s|$)")
_STOPPERS = ("if __name__", "print(", "assert ")


def fenced_blocks(text: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]


def truncate_completion(text: str) -> str:
    text = text.split("```", 1)[0]
    kept = []
    for line in text.splitlines():
        if not line.startswith((" ", "\t")) and line.strip():
            if line.startswith(_STOPPERS) or not _PROGRAM_LINE.match(line):
                break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def extract_program(response: str, entry_point: str = "") -> tuple[str, bool]:
    """(code, complete): ``complete`` is True when the code is a whole program (from a fence, or a
    completion that itself defines the entry point), False when it continues the prompt."""
    before_fence = response.split("```", 1)[0]
    continues_prompt = before_fence.strip() != "" and before_fence.lstrip("\n")[:1] in (" ", "\t")
    blocks = [] if continues_prompt else fenced_blocks(response)  # a fence after indented code closes it
    if blocks:
        defining = [b for b in blocks if entry_point and re.search(rf"\bdef {re.escape(entry_point)}\s*\(", b)]
        return (defining or blocks)[-1], True
    code = truncate_completion(response)
    defines = bool(entry_point) and re.search(rf"^\s*def {re.escape(entry_point)}\s*\(", code, re.M) is not None
    return code, defines
