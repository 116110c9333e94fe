"""Few-shot examples that never include the evaluated problem.

lm-eval removes the evaluated document from its few-shot candidates only when ``fewshot_split`` and
``test_split`` have the same NAME. Our tasks therefore draw few-shot examples "from the test split" as far as
lm-eval knows (so it always hands the sampler the evaluated document), and :class:`DistinctProblemSampler`
decides where they come from: the benchmark's own separate pool when it has one (GSM8K's training split,
MBPP's prompt split, the demo's training problems; registered by :mod:`lm_eval_moe.tasks.data` with every
problem that also appears in the test set removed), else the other test problems. In both cases a problem
with the same question as the evaluated one (duplicates included) is never drawn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from lm_eval.api.samplers import ContextSampler

from lm_eval_moe.problem_identity import problem_key

_POOLS: dict[str, list[dict[str, Any]]] = {}


def benchmark_of(doc: dict[str, Any]) -> str:
    return str(doc["moe_id"]).rsplit("/", 1)[0]


def register_pool(benchmark: str, pool: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> int:
    """The separate few-shot pool of ``benchmark``, without any problem of ``test``; returns how many were
    removed."""
    test_keys = {problem_key(doc) for doc in test}
    kept = [dict(doc) for doc in pool if problem_key(doc) not in test_keys]
    _POOLS[benchmark] = kept
    return len(pool) - len(kept)


def registered_pool(benchmark: str) -> list[dict[str, Any]] | None:
    """The separate few-shot pool registered for ``benchmark`` (None: its few-shot examples are other test
    problems)."""
    return _POOLS.get(benchmark)


class DistinctProblemSampler(ContextSampler):
    """lm-eval's random sampler, drawing from the benchmark's separate pool when it has one and never
    drawing a problem with the evaluated one's question."""

    def sample(self, n: int, eval_doc: dict[str, Any] | None = None, df: Any = None, **kwargs: Any):
        if n <= 0:
            return []
        if eval_doc is None:
            raise RuntimeError("DistinctProblemSampler needs the evaluated document: set fewshot_split to the "
                               "task's test_split (lm-eval passes it only then)")
        pool = registered_pool(benchmark_of(eval_doc)) or self.fewshot_docs()
        key = problem_key(eval_doc)
        same = Counter(problem_key(doc) for doc in pool)[key]
        if len(pool) - same < n:
            raise ValueError(f"{n} few-shot examples requested, only {len(pool) - same} problems other than the "
                             f"evaluated one are available")
        drawn = self.rnd.sample(pool, min(len(pool), n + same))
        return [doc for doc in drawn if problem_key(doc) != key][:n]
