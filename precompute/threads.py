"""How many torch CPU threads extraction uses: --threads if given, else the cores nobody else is using.

Extraction mixes large matmuls (the forward, which threads speed up: 1.47× with two threads on a
quiet two-core machine) with many small per-head linear-algebra calls. OpenMP threads that share
their cores with other busy processes spin and wait for each other, and then the small calls
crawl: 64 RTE examples took 584 s with two threads on a two-core machine that a training job
kept busy, 25 s with one. So the default counts the cores that other processes leave free, and
counts again before every chunk, so that a job starting or ending beside a long extraction is
followed within one chunk.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import psutil
import torch

# How busy (in cores) other processes may keep a core before it no longer counts as free; a
# desktop's background work stays well under it, a training job does not.
BUSY_CORE_SHARE = 0.5
FIRST_SAMPLE_SECONDS = 0.25  # the very first measurement needs a short window


class ThreadChooser:
    """Chooses the thread count for each chunk: `fixed` (--threads) when given, else free cores."""

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.cores = os.cpu_count() or 1
        self._process = psutil.Process()
        self._sampled = False

    def _busy_elsewhere(self) -> float:
        """Cores kept busy by other processes since the last call (the first call samples briefly)."""
        if not self._sampled:
            self._process.cpu_percent(None)
            total = psutil.cpu_percent(FIRST_SAMPLE_SECONDS)
            own = self._process.cpu_percent(None)
            self._sampled = True
        else:
            total, own = psutil.cpu_percent(None), self._process.cpu_percent(None)
        return max(0.0, total / 100 * self.cores - own / 100)

    def choose(self) -> int:
        if self.fixed is not None:
            return self.fixed
        busy = self._busy_elsewhere()
        return max(1, min(self.cores, int(self.cores - busy + BUSY_CORE_SHARE)))


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (numba's pool follows it)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
