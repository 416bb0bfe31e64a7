"""Resident memory of this process, in MiB (Linux)."""
from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM; reset at exec, unlike ru_maxrss), to 0.1 MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def max_rss_mib() -> float:
    """This process's peak resident memory as ``getrusage`` reports it (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """This process's resident memory now (psutil)."""
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 20
