"""kbit-dgl: knowledge-graph embeddings on DGL with honest evaluation and k-bit inference."""
import os as _os

# ogb's import runs a version check over the network ("outdated"); offline it only warns, slowly.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

# OpenMP's default wait policy keeps idle threads spinning between parallel regions; beside another
# busy process they fight it for the cores and every small op pays (results/bench/load.md, from
# pipelines/bench_load.py). PASSIVE threads sleep instead, which costs a little on a quiet machine.
# So PASSIVE is chosen when other processes are using at least half the cores as this process starts,
# measured over a moment of /proc/stat (this process sleeps meanwhile, so what is busy is someone
# else). Not the load average: it lags a minute behind and counts this user's own previous command.
# It must be set before torch loads OpenMP: importing kbit_dgl (the CLI does) before torch sets it;
# an OMP_WAIT_POLICY in the environment (even empty) always wins. The choice and its reason are kept
# in kbit_dgl.settings (omp_wait_policy_choice(), which metrics.json records), not in the environment.
from . import settings as _settings  # noqa: E402 (standard library only; after OUTDATED_IGNORE is set)

SAMPLE_SECONDS = 0.1


def _busy_cores_elsewhere(seconds: float = SAMPLE_SECONDS):
    """Cores' worth of CPU time used by all processes over ``seconds`` while this one sleeps, from
    /proc/stat; None where there is no /proc/stat."""
    import time

    def totals():
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user nice system idle iowait irq softirq steal (guest is in user)

    try:
        total_before, idle_before = totals()
        time.sleep(seconds)
        total_after, idle_after = totals()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    return (elapsed - (idle_after - idle_before)) / elapsed * (_os.cpu_count() or 1)


def _choose_wait_policy(busy_cores, cores: int):
    """PASSIVE when ``busy_cores`` (others' use, or None: unknown) is at least half of ``cores``."""
    if busy_cores is None:
        try:  # no /proc/stat: the load average, which lags, is the best there is
            busy_cores = _os.getloadavg()[0]
        except OSError:
            return None
    return "PASSIVE" if busy_cores >= 0.5 * cores else None


if "OMP_WAIT_POLICY" not in _os.environ:
    _busy = _busy_cores_elsewhere()
    if _choose_wait_policy(_busy, _os.cpu_count() or 1) == "PASSIVE":
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _settings.record_omp_wait_policy_choice(
            "PASSIVE (machine busy at start: load average)" if _busy is None else
            f"PASSIVE (other processes busy on {_busy:.1f} cores at start)")

# DGL prints a notice on its first import unless a backend is chosen; this project runs on pytorch.
_os.environ.setdefault("DGLBACKEND", "pytorch")

__version__ = "0.1.0"


def _quiet_cuda_probe() -> None:
    """Import torch.utils.cpp_extension with its "No CUDA runtime is found, using CUDA_HOME=..." line
    dropped: on a CPU machine that finds a CUDA toolkit folder the line is noise (torch.compile and
    DGL import the module); anything else it prints still shows. Older torch prints the line, newer
    torch logs it as a warning of the module's logger (through a handler that keeps the original
    stderr, so the redirect alone misses it)."""
    import contextlib
    import io
    import logging
    import sys

    if "torch.utils.cpp_extension" in sys.modules:
        return
    captured = io.StringIO()
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(captured):
            import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.setLevel(level)
    for line in captured.getvalue().splitlines():
        if "No CUDA runtime is found" not in line:
            print(line, file=sys.stderr)


_quiet_cuda_probe()


def __getattr__(name):  # the API's entry points, imported on first use (torch loads only then)
    if name in ("load_dataset", "load_run", "Run", "api"):
        import importlib

        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'kbit_dgl' has no attribute {name!r}")
