"""The identity of a problem, for the checks that keep evaluated problems out of prompts and reference sets.

Two documents are the same problem when their questions match after whitespace and case are normalised
(benchmarks repeat problems with different spacing, e.g. across GSM8K's splits).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any


def problem_key(doc: Mapping[str, Any]) -> str:
    return re.sub(r"\s+", " ", str(doc["moe_question"])).strip().lower()


def problem_hash(doc: Mapping[str, Any]) -> str:
    """sha256 of :func:`problem_key`: stored in reference sets instead of the questions themselves."""
    return hashlib.sha256(problem_key(doc).encode()).hexdigest()
