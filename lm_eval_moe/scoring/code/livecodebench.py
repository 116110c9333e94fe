"""LiveCodeBench rows: test cases (private ones decoded safely), problem kinds, the common preamble.

Private tests are stored as base64(zlib(pickle(json string))). Unpickling untrusted data runs arbitrary
code through the classes and functions a pickle names, and a few hundred bytes of pickle can build
gigabytes of objects. So the pickle is never unpickled: its opcodes are read (``pickletools.genops``) and
must be exactly those that write ONE string (a protocol and frame header, the string, an optional memo
entry, the end); the string is the payload. Every other step is bounded too: the base64 text and the
decompressed bytes by size (a zlib bomb fails, not the run), the pickle by its number of opcodes, the JSON by
Python's recursion guard and a count of test cases; the test cases are read one at a time and checked as
they are read (a list of strings' objects, nothing else), so memory stays a small multiple of the
decompressed text. Anything else raises :class:`LiveCodeBenchDataError`, the one error type of this module,
naming what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
import pickletools
import re
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

#: the opcodes of a pickled str, protocols 0-5
_STRING_OPCODES = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_FRAMING_OPCODES = frozenset({"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"})
_MAX_OPCODES = 8
_TEST_FIELDS = ("input", "output", "testtype")
MAX_TEST_CASES = 10_000  # per problem (LiveCodeBench problems have tens)
_JSON = json.JSONDecoder()
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


class LiveCodeBenchDataError(ValueError):
    """A LiveCodeBench row whose test cases cannot be read safely."""


def _pickled_string(raw: bytes) -> str:
    """The one string a pickle holds, read from its opcodes without unpickling."""
    found: list[str] = []
    try:
        for count, (opcode, argument, _) in enumerate(pickletools.genops(raw)):
            if count == _MAX_OPCODES:
                raise LiveCodeBenchDataError(f"the pickle has more than {_MAX_OPCODES} opcodes; a string has 5")
            if opcode.name in _STRING_OPCODES and not found:
                found.append(argument)
            elif opcode.name not in _FRAMING_OPCODES:
                raise LiveCodeBenchDataError(f"the pickle holds {opcode.name}; only a single string is allowed")
    except LiveCodeBenchDataError:
        raise
    except Exception as error:  # noqa: BLE001 - any malformed opcode stream
        raise LiveCodeBenchDataError(f"private tests are not a readable pickle ({type(error).__name__})") from None
    if not found:
        raise LiveCodeBenchDataError("the pickle holds no string")
    return found[0]


def decode_private_tests(encoded: str) -> list[dict[str, str]]:
    if not isinstance(encoded, str) or len(encoded) > 2 * MAX_PRIVATE_TESTS_BYTES:
        raise LiveCodeBenchDataError("private tests are not a base64 text of a readable size")
    try:
        compressed = base64.b64decode(encoded, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(compressed, MAX_PRIVATE_TESTS_BYTES)
        if inflater.unconsumed_tail:
            raise LiveCodeBenchDataError(f"private tests decompress to more than {MAX_PRIVATE_TESTS_BYTES} bytes")
    except (ValueError, binascii.Error, zlib.error) as error:
        if isinstance(error, LiveCodeBenchDataError):
            raise
        raise LiveCodeBenchDataError(f"private tests are not base64(zlib(...)): {error}") from None
    return test_cases(_pickled_string(raw), "private tests")


def test_cases(text: str, what: str) -> list[dict[str, str]]:
    """A JSON list of test cases ({"input", "output", "testtype"}, all strings), read one case at a time and
    checked as it is read: no payload builds more than ``MAX_TEST_CASES`` small objects beside its strings,
    so memory stays within a small multiple of the text (a list of millions of empty objects is refused at
    its first element, not after building them)."""
    index = _JSON_SPACE.match(text).end()
    if not text.startswith("[", index):
        raise LiveCodeBenchDataError(f"{what} are not a JSON list")
    index = _JSON_SPACE.match(text, index + 1).end()
    cases: list[dict[str, str]] = []
    closed = text.startswith("]", index)
    while not closed:
        try:
            case, index = _JSON.raw_decode(text, index)
        except (ValueError, RecursionError) as error:
            raise LiveCodeBenchDataError(f"{what} are not readable JSON ({type(error).__name__})") from None
        if not (isinstance(case, dict) and all(isinstance(case.get(field), str) for field in _TEST_FIELDS)):
            raise LiveCodeBenchDataError(f"{what}: test case {len(cases)} is not an object of strings "
                                         f"{', '.join(_TEST_FIELDS)}")
        cases.append(case)
        if len(cases) > MAX_TEST_CASES:
            raise LiveCodeBenchDataError(f"{what}: more than {MAX_TEST_CASES} test cases")
        index = _JSON_SPACE.match(text, index).end()
        closed = text.startswith("]", index)
        if not closed:
            if not text.startswith(",", index):
                raise LiveCodeBenchDataError(f"{what} are not readable JSON (at character {index})")
            index = _JSON_SPACE.match(text, index + 1).end()
    if _JSON_SPACE.match(text, index + 1).end() != len(text):
        raise LiveCodeBenchDataError(f"{what}: text after the list")
    return cases


def encode_private_tests(tests: list[dict[str, Any]]) -> str:
    """The dataset's own encoding (used to build test rows)."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def row_problem(row: dict[str, Any], include_private: bool = True) -> CodeProblem:
    public = test_cases(row["public_test_cases"], "public tests") if row.get("public_test_cases") else []
    private = decode_private_tests(row["private_test_cases"]) if include_private and row.get("private_test_cases") else []
    tests = public + private
    if not tests:
        raise LiveCodeBenchDataError(f"LiveCodeBench problem {row.get('question_id')} has no test case")
    kinds = {t.get("testtype") for t in tests}
    if len(kinds) != 1 or kinds - {"stdin", "functional"}:
        raise LiveCodeBenchDataError(f"LiveCodeBench problem {row.get('question_id')}: unexpected test types {sorted(map(str, kinds))}")
    try:
        metadata = json.loads(row["metadata"]) if row.get("metadata") else {}
    except (ValueError, RecursionError) as error:
        raise LiveCodeBenchDataError(f"metadata is not readable JSON ({type(error).__name__})") from None
    if not isinstance(metadata, dict):
        raise LiveCodeBenchDataError("metadata is not a JSON object")
    functional = kinds == {"functional"}
    if functional and not metadata.get("func_name"):
        raise LiveCodeBenchDataError(f"LiveCodeBench problem {row.get('question_id')}: functional tests but no func_name")
    return CodeProblem(
        task_id=str(row["question_id"]),
        kind="functional_io" if functional else "stdio_io",
        entry_point=metadata.get("func_name", ""),
        io_tests=tuple((str(t["input"]), str(t["output"])) for t in tests),
        preamble=PREAMBLE,
        recursion_limit=RECURSION_LIMIT,
        int_max_str_digits=0,
    )
