"""Writes ``cases.jsonl``: the (gold, prediction, expected verdict) rows of Math-Verify's own test tables
(github.com/huggingface/Math-Verify, tests/*.py) whose prediction holds ``\\boxed{}``, with the arguments
each test passes to its ``compare_strings`` helper (match types, precision, strict, set-relation rule).

    python tests/data/math_verify/extract_cases.py <Math-Verify checkout> > tests/data/math_verify/cases.jsonl

Rows are read from the test files' ``pytest.mark.parametrize`` tables by parsing them (nothing is run).
Tables whose rows are not literals (e.g. built with f-strings) are skipped.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

HELPER_DEFAULTS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}


def _parametrize(decorator: ast.expr) -> tuple[list[str], list[ast.expr]] | None:
    if not (isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("parametrize")):
        return None
    names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
    return names, list(decorator.args[1].elts)


def _helper_arguments(function: ast.FunctionDef) -> dict[str, ast.expr] | None:
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "compare_strings":
            return {keyword.arg: keyword.value for keyword in node.keywords}
    return None


def cases(test_file: Path) -> list[dict]:
    rows = []
    for function in ast.parse(test_file.read_text()).body:
        if not isinstance(function, ast.FunctionDef):
            continue
        keywords = _helper_arguments(function)
        tables = [table for table in map(_parametrize, function.decorator_list) if table]
        if keywords is None or not tables:
            continue
        names, elements = tables[0]
        for element in elements:
            try:
                values = dict(zip(names, ast.literal_eval(element)))
            except ValueError:
                continue
            settings = dict(HELPER_DEFAULTS)
            for key, expression in keywords.items():
                settings[key] = values[expression.id] if isinstance(expression, ast.Name) else ast.literal_eval(expression)
            if "\\boxed{" not in values["pred"]:
                continue
            rows.append({"source": f"tests/{test_file.name}::{function.name}", "gold": values["gold"],
                         "pred": values["pred"], "expected": bool(values["expected"]), **settings})
    return rows


def main() -> None:
    checkout = Path(sys.argv[1])
    for test_file in sorted((checkout / "tests").glob("test_*.py")):
        for row in cases(test_file):
            print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
