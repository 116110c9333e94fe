"""What one lm-eval run of a model produces besides its responses: run totals, time and memory, the generation
settings in force, and (with ``response_cache``) every finished response on disk as it completes.

A method hands the model class :class:`Generated` records, each naming the request it answers by its index;
the model class passes them to :meth:`RunRecord.finish`, which counts them and writes them to the cache. So
nothing depends on a hidden order: a record says which request it answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lm_eval_moe.cost import Cost, RunTotals
from lm_eval_moe.resources import RunUsage
from lm_eval_moe.response import MoEResponse
from lm_eval_moe.response_cache import ResponseCache, as_stored

logger = logging.getLogger(__name__)


@dataclass
class Generated:
    """One response as a method produced it: ``index`` of its request among those the method was handed, the
    text, its metadata (``cost``; ``resources``: its share of its batch's wall time and memory; candidates,
    ...) and the generation settings in force for it."""

    index: int
    text: str
    meta: dict[str, Any]
    generation: dict[str, Any]


class RunRecord:
    """Totals, usage and effective generation settings of one run, and its response cache (if any)."""

    def __init__(self, cache: ResponseCache | None = None) -> None:
        self.cache = cache
        self.totals = RunTotals()
        self.usage = RunUsage()
        self.generation: list[dict[str, Any]] = []  # the effective generation settings, each once

    def stored(self, key: str) -> MoEResponse | None:
        """A response an earlier run finished (counted in the totals; its time was that run's), or None."""
        found = self.cache.get(key) if self.cache is not None else None
        if found is None:
            return None
        response, generation = found
        self._count(response, generation)
        return response

    def finish(self, key: str, generated: Generated) -> MoEResponse:
        """A freshly generated response: counted, its time and memory added, written to the cache."""
        response = (as_stored if self.cache is not None else MoEResponse)(generated.text, generated.meta)
        if self.cache is not None:
            self.cache.put(key, response, generated.generation)
        self._count(response, generated.generation)
        self.usage.add_share(response.meta.get("resources", {}))
        return response

    def _count(self, response: MoEResponse, generation: dict[str, Any]) -> None:
        self.totals.add(Cost(**response.meta["cost"]))
        if generation not in self.generation:
            self.generation.append(generation)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def report(self, world_size: int = 1) -> dict[str, Any]:
        """The run's totals and usage, summed over the ranks of a data-parallel run (each rank calls this once,
        after its own generation): token and FLOP totals add up, wall time and peaks are the largest rank's."""
        import torch.distributed as dist

        usage = self.usage.as_dict()
        if world_size <= 1 or not dist.is_available() or not dist.is_initialized():
            return {**self.totals.as_dict(), **usage}
        gathered: list[Any] = [None] * world_size
        dist.all_gather_object(gathered, (self.totals.as_dict(), usage))
        totals = {key: sum(part[0][key] for part in gathered) for key in gathered[0][0]}
        totals.update({key: max(part[1][key] for part in gathered) for key in usage})
        return {**totals, "ranks": world_size}
