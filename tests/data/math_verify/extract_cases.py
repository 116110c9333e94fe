"""Writes ``cases.jsonl``: every (gold, prediction, expected verdict) row of Math-Verify's own test tables
(github.com/huggingface/Math-Verify, tests/*.py), with the arguments each test passes to its comparison:
the ``compare_strings`` helper's (match types, precision, strict, set-relation rule), or ``"helper":
"parse_verify"`` for tables that call plain ``verify(parse(gold), parse(pred))``.

    python tests/data/math_verify/extract_cases.py <Math-Verify checkout> > tests/data/math_verify/cases.jsonl

Rows are read from the test files' ``pytest.mark.parametrize`` tables by parsing them (nothing of the test
files is run). A row written as an f-string of ``math`` calls (``f"{math.sqrt(17):.15f}"``) is evaluated with
the ``math`` module alone in scope.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path

HELPER_DEFAULTS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}
EXPECTED_COLUMNS = ("expected", "result")


def _parametrize(decorator: ast.expr) -> tuple[list[str], list[ast.expr]] | None:
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize")):
        return None
    names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
    return names, list(decorator.args[1].elts)


def _comparison(function: ast.FunctionDef) -> tuple[str, dict[str, ast.expr]] | None:
    """Which comparison the test makes: ``compare_strings`` (with its keywords) or plain parse + verify."""
    calls = [node for node in ast.walk(function) if isinstance(node, ast.Call)]
    for node in calls:
        if ast.unparse(node.func) == "compare_strings":
            return "compare_strings", {keyword.arg: keyword.value for keyword in node.keywords}
    names = {ast.unparse(node.func) for node in calls}
    if {"parse", "verify"} <= names:
        return "parse_verify", {}
    return None


def _value(element: ast.expr) -> object:
    if isinstance(element, ast.JoinedStr):
        return eval(compile(ast.Expression(element), "<row>", "eval"), {"__builtins__": {}, "math": math})  # noqa: S307
    return ast.literal_eval(element)


def cases(test_file: Path) -> list[dict]:
    rows = []
    for function in ast.parse(test_file.read_text()).body:
        if not isinstance(function, ast.FunctionDef):
            continue
        comparison = _comparison(function)
        tables = [table for table in map(_parametrize, function.decorator_list) if table]
        if comparison is None or not tables:
            continue
        helper, keywords = comparison
        names, elements = tables[0]
        expected_column = next(column for column in EXPECTED_COLUMNS if column in names)
        for element in elements:
            values = dict(zip(names, (_value(item) for item in element.elts)))
            settings = dict(HELPER_DEFAULTS)
            for key, expression in keywords.items():
                settings[key] = values[expression.id] if isinstance(expression, ast.Name) else ast.literal_eval(expression)
            rows.append({"source": f"tests/{test_file.name}::{function.name}", "helper": helper, "gold": values["gold"],
                         "pred": values["pred"], "expected": bool(values[expected_column]), **settings})
    return rows


def main() -> None:
    checkout = Path(sys.argv[1])
    for test_file in sorted((checkout / "tests").glob("test_*.py")):
        for row in cases(test_file):
            print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
