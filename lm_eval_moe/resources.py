"""Wall time and peak memory of a batch of work, shared out to its samples (reported beside tokens and FLOPs).

Peak CPU memory is the process's resident-set high-water mark (``VmHWM``), reset at the start of each batch
through ``/proc/self/clear_refs`` where the kernel allows it (else it is the peak since the process began,
and ``rss_peak_reset`` says so); peak CUDA memory is torch's peak allocation on the current device since the
batch began. A batch's samples share its wall time equally and each reports the batch's peaks: samples of
one batch are generated together and their memory cannot be told apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _peak_rss_mb() -> float | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _cuda_in_use() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


@dataclass
class Usage:
    wall_seconds: float
    peak_rss_mb: float | None
    cuda_peak_mb: float | None
    rss_peak_reset: bool

    def per_sample(self, samples: int) -> dict[str, float | bool]:
        """What each of ``samples`` samples of the batch reports."""
        usage: dict[str, float | bool] = {"wall_seconds": self.wall_seconds / max(1, samples),
                                          "rss_peak_reset": self.rss_peak_reset}
        if self.peak_rss_mb is not None:
            usage["peak_rss_mb"] = self.peak_rss_mb
        if self.cuda_peak_mb is not None:
            usage["cuda_peak_mb"] = self.cuda_peak_mb
        return usage


class Meter:
    """``meter = Meter()`` at the start of a batch, ``meter.stop()`` at its end."""

    def __init__(self) -> None:
        self.rss_reset = _reset_peak_rss()
        if _cuda_in_use():
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()

    def stop(self) -> Usage:
        cuda = torch.cuda.max_memory_allocated() / 2**20 if _cuda_in_use() else None
        return Usage(time.perf_counter() - self.started, _peak_rss_mb(), cuda, self.rss_reset)


@dataclass
class RunUsage:
    """Run-level wall time (the sum of the batches') and peaks (the largest batch's)."""

    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cuda_peak_mb: float = 0.0

    def add_share(self, share: dict[str, float | bool]) -> None:
        """One sample's share of its batch (:meth:`Usage.per_sample`): the shares of a batch add up to its wall
        time, and each carries the batch's peaks."""
        self.wall_seconds += float(share.get("wall_seconds", 0.0))
        self.peak_rss_mb = max(self.peak_rss_mb, float(share.get("peak_rss_mb") or 0.0))
        self.cuda_peak_mb = max(self.cuda_peak_mb, float(share.get("cuda_peak_mb") or 0.0))

    def as_dict(self) -> dict[str, float]:
        return {"wall_seconds": self.wall_seconds, "peak_rss_mb": self.peak_rss_mb, "cuda_peak_mb": self.cuda_peak_mb}
