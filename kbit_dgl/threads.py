"""torch's CPU thread count, refitted while a run goes on to the cores other processes leave free.

``import kbit_dgl`` picks OpenMP's wait policy once, from the load at start. Load that arrives later
is not seen there: two spinning threads on the one core a newcomer left free ran FB15k-237 TransE at
14-17k triples/s instead of ~50k (results/bench/load-threads.md). So between training steps and
evaluation batches :func:`tick` asks, at most every ``PERIOD`` seconds, how many cores the other
processes used since the last look (/proc/stat's busy time minus this process's own CPU time), and
sets ``torch.set_num_threads`` to the cores left, rounded, between 1 and the count the run started
with. A new count is applied once two looks in a row agree, so a short burst elsewhere (a compile
worker, a shell command) changes nothing.

One exception: when other processes alone keep at least as many threads runnable as there are cores
(/proc/stat's ``procs_running`` minus this process's own running threads) and OpenMP's threads sleep
while they wait (``OMP_WAIT_POLICY=PASSIVE``), the count stays at the starting one. The cores are then
oversubscribed whatever this run does, and the scheduler shares them by thread: beside two busy
processes on 2 cores, two threads get half the CPU and one thread a third. (Spinning threads would
burn their share waiting for each other, so with any other wait policy the rule above holds.)

Only runs that left ``train.num_threads`` at 0 adapt; a fixed count, several training processes and
``KBIT_DGL_ADAPT_THREADS=0`` keep the count fixed. Without /proc/stat it does nothing.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, List, Optional, Tuple

import torch

from .settings import env_flag

PERIOD = 2.0  # seconds between looks at the machine
AGREEING_LOOKS = 2  # a new thread count needs this many looks in a row to agree

log = logging.getLogger("kbit_dgl")


def busy_cpu_seconds() -> Optional[float]:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and iowait)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def others_running() -> Optional[int]:
    """Threads of other processes runnable now: /proc/stat's ``procs_running`` minus this process's own
    threads in state R (among them the one reading)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            running = next((int(line.split()[1]) for line in handle if line.startswith("procs_running")), None)
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat", encoding="ascii") as handle:
                    own += handle.read().rpartition(")")[2].split()[0] == "R"
            except (OSError, IndexError):  # the thread ended meanwhile
                continue
    except (OSError, ValueError):
        return None
    return None if running is None else max(0, running - own)


def sleeping_waits() -> bool:
    """Whether OpenMP's waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``, as ``import kbit_dgl`` sets it
    on a busy machine)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


class ThreadGovernor:
    """Fits torch's thread count to the cores other processes leave free (see the module docstring).

    ``busy``, ``own`` and ``clock`` read the machine's busy CPU seconds, this process's CPU seconds and
    wall time, ``running`` the other processes' runnable threads now, ``passive`` whether waiting
    threads sleep (tests pass fakes); ``apply`` sets the count.
    """

    def __init__(self, max_threads: int, cores: Optional[int] = None, period: float = PERIOD,
                 busy: Callable[[], Optional[float]] = busy_cpu_seconds, own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic, apply: Callable[[int], None] = torch.set_num_threads,
                 running: Callable[[], Optional[int]] = others_running, passive: Callable[[], bool] = sleeping_waits):
        self.max_threads, self.cores = max(1, max_threads), cores or os.cpu_count() or 1
        self.period, self._busy, self._own, self._clock, self._apply = period, busy, own, clock, apply
        self._running, self._passive = running, passive
        self.threads = self.max_threads
        self.changes: List[Tuple[float, int, float]] = []  # (seconds since start, threads, others' cores)
        self._started = clock()
        self._candidate, self._agreeing = self.threads, 0
        self._last = self._sample()

    def _sample(self) -> Tuple[float, Optional[float], float]:
        return self._clock(), self._busy(), self._own()

    def tick(self) -> None:
        """Between steps: look at the machine if ``period`` has passed, and refit the thread count."""
        now = self._clock()
        if now - self._last[0] < self.period:
            return
        sample = self._sample()
        (then, busy_then, own_then), self._last = self._last, sample
        if sample[1] is None or busy_then is None:
            return
        wall = sample[0] - then
        others = max(0.0, (sample[1] - busy_then) - (sample[2] - own_then)) / wall
        wanted = min(self.max_threads, max(1, int(self.cores - others + 0.5)))
        if wanted < self.max_threads and self._passive():
            running = self._running()
            if running is not None and running >= self.cores:  # oversubscribed by the others alone
                wanted = self.max_threads
        self._agreeing = self._agreeing + 1 if wanted == self._candidate else 1
        self._candidate = wanted
        if wanted != self.threads and self._agreeing >= AGREEING_LOOKS:
            log.info("threads %d -> %d (other processes busy on %.1f of %d cores)", self.threads, wanted,
                     others, self.cores)
            self._apply(wanted)
            self.threads = wanted
            self.changes.append((round(now - self._started, 1), wanted, round(others, 2)))


_governor: Optional[ThreadGovernor] = None


def adapt(enabled: bool = True) -> Optional[ThreadGovernor]:
    """Start (or, with ``enabled`` False, stop) adapting this process's thread count; returns the governor."""
    global _governor
    on = enabled and env_flag("KBIT_DGL_ADAPT_THREADS") and busy_cpu_seconds() is not None
    _governor = ThreadGovernor(torch.get_num_threads()) if on else None
    return _governor


def tick() -> None:
    """Refit the thread count if adaptation is on (cheap: a clock read between looks)."""
    if _governor is not None:
        _governor.tick()


def changes() -> Optional[List[Tuple[float, int, float]]]:
    """The thread-count changes of the running governor, (seconds, threads, others' cores) each; None when off."""
    return None if _governor is None else list(_governor.changes)


def stop() -> Optional[ThreadGovernor]:
    """Stop adapting and restore the starting thread count; returns the governor that ran (or None)."""
    global _governor
    governor, _governor = _governor, None
    if governor is not None and governor.threads != governor.max_threads:
        governor._apply(governor.max_threads)
    return governor
