"""LiveCodeBench rows: test cases (private ones decoded safely), problem kinds, the common preamble.

Private tests are stored as base64(zlib(pickle(json string))). Unpickling untrusted data runs arbitrary
code only through the classes and functions a pickle names; :class:`PlainUnpickler` refuses to resolve any
name, so every pickle protocol decodes to plain data (str, numbers, lists, dicts, ...) or fails, and the
payload must then be a single string. The decompressed size is bounded (a zlib bomb fails, not the run).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from typing import Any

from lm_eval_moe.scoring.code.judge import CodeProblem

# what LiveCodeBench prepends to every program (lcb_runner/evaluation/testing_util.py)
PREAMBLE = "\n".join(
    [f"from {m} import *" for m in ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math",
                                     "random", "statistics", "itertools", "functools", "operator", "io", "sys", "json",
                                     "builtins", "typing")]
    + [f"import {m}" for m in ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                               "statistics", "itertools", "functools", "operator", "io", "sys", "json")]
) + "\n"
RECURSION_LIMIT = 50000
MAX_PRIVATE_TESTS_BYTES = 1 << 30  # decompressed (the largest problems of release_v6 hold a few hundred MB)


class UnsafePickle(ValueError):
    """A private-test payload that is not a single pickled string."""


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global: classes, functions and reducers are refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickle(f"the pickle names {module}.{name}; only plain data is allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("the pickle refers to a persistent object; only plain data is allowed")


def decode_private_tests(encoded: str) -> list[dict[str, Any]]:
    try:
        compressed = base64.b64decode(encoded, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(compressed, MAX_PRIVATE_TESTS_BYTES)
        if inflater.unconsumed_tail:
            raise UnsafePickle(f"private tests decompress to more than {MAX_PRIVATE_TESTS_BYTES} bytes")
    except (ValueError, binascii.Error, zlib.error) as error:
        raise UnsafePickle(f"private tests are not base64(zlib(...)): {error}") from None
    try:
        value = PlainUnpickler(io.BytesIO(raw)).load()
    except UnsafePickle:
        raise
    except Exception as error:  # noqa: BLE001 - any malformed pickle
        raise UnsafePickle(f"private tests are not a readable pickle: {type(error).__name__}: {error}") from None
    if not isinstance(value, str):
        raise UnsafePickle(f"private tests unpickle to a {type(value).__name__}, not the expected JSON string")
    tests = json.loads(value)
    if not isinstance(tests, list):
        raise UnsafePickle("private tests decode to a non-list")
    return tests


def encode_private_tests(tests: list[dict[str, Any]]) -> str:
    """The dataset's own encoding (used to build test rows)."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def row_problem(row: dict[str, Any], include_private: bool = True) -> CodeProblem:
    public = json.loads(row["public_test_cases"]) if row.get("public_test_cases") else []
    private = decode_private_tests(row["private_test_cases"]) if include_private and row.get("private_test_cases") else []
    tests = public + private
    if not tests:
        raise ValueError(f"LiveCodeBench problem {row.get('question_id')} has no test case")
    kinds = {t.get("testtype") for t in tests}
    if len(kinds) != 1 or kinds - {"stdin", "functional"}:
        raise ValueError(f"LiveCodeBench problem {row.get('question_id')}: unexpected test types {sorted(map(str, kinds))}")
    metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    functional = kinds == {"functional"}
    if functional and not metadata.get("func_name"):
        raise ValueError(f"LiveCodeBench problem {row.get('question_id')}: functional tests but no func_name")
    return CodeProblem(
        task_id=str(row["question_id"]),
        kind="functional_io" if functional else "stdio_io",
        entry_point=metadata.get("func_name", ""),
        io_tests=tuple((str(t["input"]), str(t["output"])) for t in tests),
        preamble=PREAMBLE,
        recursion_limit=RECURSION_LIMIT,
        int_max_str_digits=0,
    )
