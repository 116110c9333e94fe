"""Code benchmarks as documents: HumanEval, MBPP (sanitized), LiveCodeBench.

Each document gets the common fields of :mod:`lm_eval_moe.tasks.data` (``moe_question`` is the problem
statement a verifier sees, ``moe_solution`` a reference program in a fenced block, used as few-shot
target) plus ``moe_problem``: the judge's :class:`~lm_eval_moe.scoring.code.CodeProblem` as JSON, and
``moe_prompt_code``: code the prompt gives the model (HumanEval's signature, imports and helpers).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from typing import Any

from lm_eval_moe.scoring.code.judge import CodeProblem, called_names, parse_trusted
from lm_eval_moe.scoring.code.livecodebench import row_problem

#: MBPP problems whose tests need objects the candidate returns that are not plain data (a Counter,
#: a re.Match) or measure the candidate's own objects (sys.getsizeof): found by running every
#: reference solution through the proxy judge (tests/tasks/test_code_tasks.py recomputes this set). Their
#: assertions run inside the sandbox and their verdicts are marked forgeable.
MBPP_IN_SANDBOX = frozenset({88, 596, 737, 787, 794})


def _fenced(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def _problem_json(problem: CodeProblem) -> str:
    return json.dumps(dataclasses.asdict(problem))


def problem_from_doc(doc: dict[str, Any]) -> CodeProblem:
    fields = json.loads(doc["moe_problem"])
    for key in ("asserts", "io_tests", "candidate_functions"):
        fields[key] = tuple(tuple(t) if isinstance(t, list) else t for t in fields[key])
    return CodeProblem(**fields)


def humaneval(row: dict[str, Any]) -> dict[str, Any]:
    problem = CodeProblem(row["task_id"], "check_function", entry_point=row["entry_point"], test_code=row["test"],
                          trusted_code=row["prompt"])
    return {
        "moe_question": row["prompt"],
        "moe_gold": "",
        "moe_solution": _fenced(row["prompt"] + row["canonical_solution"]),
        "moe_problem": _problem_json(problem),
        "moe_prompt_code": row["prompt"],
    }


def _defined_functions(code: str) -> set[str]:
    """Top-level functions and classes a (trusted) reference solution defines."""
    try:
        tree = parse_trusted(code)
    except SyntaxError as error:
        raise ValueError(f"the reference solution does not parse: {error}") from None
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def mbpp(row: dict[str, Any]) -> dict[str, Any]:
    tests = tuple(row["test_list"])
    # what the task asks the candidate to write: the functions of the reference solution the asserts call
    # (the first one is the entry point); a builtin the asserts call (set, sum, ...) is the builtin unless the
    # reference defines that very name (MBPP 126 asks for a function named sum)
    asked = [name for name in called_names(tests) if name in _defined_functions(row["code"])]
    if not asked:
        raise ValueError(f"MBPP {row['task_id']}: the asserts call no function of the reference solution")
    problem = CodeProblem(
        str(row["task_id"]), "assert_list", entry_point=asked[0], candidate_functions=tuple(asked[1:]), asserts=tests,
        setup_code="\n".join(row.get("test_imports") or []), in_sandbox=int(row["task_id"]) in MBPP_IN_SANDBOX,
    )
    statement = f"{row['prompt'].strip()} Your code should pass these tests:\n\n" + "\n".join(tests)
    return {
        "moe_question": statement,
        "moe_gold": "",
        "moe_solution": _fenced(row["code"]),
        "moe_problem": _problem_json(problem),
        "moe_prompt_code": "",
    }


def livecodebench(row: dict[str, Any]) -> dict[str, Any]:
    problem = row_problem(row)
    return {
        "moe_question": row["question_content"],
        "moe_gold": "",
        "moe_solution": "",
        "moe_problem": _problem_json(problem),
        "moe_prompt_code": "",
        "moe_starter_code": row.get("starter_code") or "",
    }


#: LiveCodeBench's files: release_vN is test.jsonl .. testN.jsonl; vN alone is the delta testN.jsonl.
LCB_FILES = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]


def lcb_files(release: str) -> list[str]:
    match = re.fullmatch(r"(release_)?v(\d)", release)
    if not match or not 1 <= int(match.group(2)) <= len(LCB_FILES):
        raise ValueError(f"LiveCodeBench release {release!r}: expected release_v1..release_v6 or v1..v6 (a delta)")
    version = int(match.group(2))
    return LCB_FILES[:version] if match.group(1) else [LCB_FILES[version - 1]]
