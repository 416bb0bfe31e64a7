"""Timing side by side on a shared machine: best-of-n seconds, the fp32 matmul rate, the load average.

The machines are shared, so a benchmark reports ratios measured in one run and records the load
average around it (:class:`LoadWatch`), which says whether other jobs shared the cores.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional

import torch


def best_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (seconds), after ``warmup`` untimed calls
    (compilation, allocation)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(repeats: int = 5, warmup: int = 1, size: int = 2048) -> float:
    """This machine's fp32 matmul rate now: GFLOP/s of the best ``size`` x ``size`` product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size ** 3 / best_seconds(lambda: a @ b, repeats, warmup) / 1e9


class LoadWatch:
    """The 1 / 5 / 15-minute load averages when a benchmark starts (``before``) and when it is
    recorded (``record``)."""

    def __init__(self) -> None:
        self.before = os.getloadavg()

    def record(self, digits: Optional[int] = None) -> Dict[str, List[float]]:
        """``{"before": [...], "after": [...]}`` with the load now as ``after``, rounded to ``digits``."""
        after = os.getloadavg()
        if digits is None:
            return {"before": list(self.before), "after": list(after)}
        return {"before": [round(x, digits) for x in self.before], "after": [round(x, digits) for x in after]}

    @property
    def under_load(self) -> bool:
        """Whether other jobs were running when the benchmark started: more than one core's worth
        of 1-minute load (the benchmark itself had not started yet)."""
        return self.before[0] >= 1.0
