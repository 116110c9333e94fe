"""LiveCodeBench rows: test cases (private ones decoded safely), problem kinds, the common preamble.

Private tests are stored as base64(zlib(pickle(json string))). Unpickling untrusted data runs
arbitrary code, so :func:`decode_private_tests` reads the pickle opcodes itself and accepts exactly one
string (protocol header, frame, a unicode string opcode, memo, stop); anything else is an error.
"""

from __future__ import annotations

import base64
import json
import struct
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


class UnsafePickle(ValueError):
    """A private-test payload that is not a single pickled string."""


def _pickled_string(data: bytes) -> str:
    position, result = 0, None
    while position < len(data):
        opcode = data[position]
        position += 1
        if opcode == 0x80:  # PROTO
            position += 1
        elif opcode == 0x95:  # FRAME
            position += 8
        elif opcode in (0x8C, 0x58, 0x8D):  # SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
            size_format, size_bytes = {0x8C: ("<B", 1), 0x58: ("<I", 4), 0x8D: ("<Q", 8)}[opcode]
            (length,) = struct.unpack_from(size_format, data, position)
            position += size_bytes
            if result is not None or position + length > len(data):
                raise UnsafePickle("more than one string, or a truncated one")
            result = data[position : position + length].decode("utf-8")
            position += length
        elif opcode == 0x94:  # MEMOIZE
            continue
        elif opcode == 0x2E:  # STOP
            if result is None:
                raise UnsafePickle("no string before STOP")
            return result
        else:
            raise UnsafePickle(f"pickle opcode 0x{opcode:02x} is not allowed (only a plain string is)")
    raise UnsafePickle("no STOP opcode")


def decode_private_tests(encoded: str) -> list[dict[str, Any]]:
    try:
        raw = zlib.decompress(base64.b64decode(encoded))
    except (ValueError, zlib.error) as error:
        raise UnsafePickle(f"private tests are not base64(zlib(...)): {error}") from None
    tests = json.loads(_pickled_string(raw))
    if not isinstance(tests, list):
        raise UnsafePickle("private tests decode to a non-list")
    return tests


def encode_private_tests(tests: list[dict[str, Any]]) -> str:
    """The dataset's own encoding (used to build test rows)."""
    import pickle

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
