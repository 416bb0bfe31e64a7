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


def process_memory_kib(pid: int) -> dict:
    """``{"VmRSS": KiB, "VmHWM": KiB}`` of another process now; empty once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            return {line.split(":")[0]: int(line.split()[1]) for line in handle
                    if line.startswith(("VmRSS:", "VmHWM:"))}
    except (OSError, IndexError, ValueError):
        return {}


def run_watched(command, env=None, poll_seconds: float = 1.0, log_path=None) -> dict:
    """Run ``command`` to its end, polling its peak resident memory (VmHWM); returns its exit code,
    wall seconds and peak in GiB. Output goes to ``log_path`` (appended) or is discarded."""
    import subprocess
    import time

    started, peak = time.time(), 0
    sink = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        while process.poll() is None:
            peak = max(peak, process_memory_kib(process.pid).get("VmHWM", 0))
            time.sleep(poll_seconds)
    finally:
        if log_path:
            sink.close()
    return {"returncode": process.returncode, "wall_seconds": round(time.time() - started, 1),
            "peak_rss_gib": round(peak / 2 ** 20, 2)}
