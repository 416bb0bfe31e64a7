"""kbit-dgl: knowledge-graph embeddings on DGL with honest evaluation and k-bit inference."""
import os as _os

# ogb's import runs a version check over the network ("outdated"); offline it only warns, slowly.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

# OpenMP's default wait policy keeps idle threads spinning between parallel regions; beside another
# busy process they fight it for the cores and every small op pays (results/bench/load.md, from
# pipelines/bench_load.py: training keeps ~0.35x of its quiet rate beside one busy process with
# libgomp's default, ~0.56-0.60x with PASSIVE, which costs 5-15 % on a quiet machine). So PASSIVE is
# chosen only when the machine is already busy as the process starts (1-minute load average of at
# least half the cores). It must be set before torch loads OpenMP: importing kbit_dgl (the CLI
# does) before torch sets it; an OMP_WAIT_POLICY in the environment (even empty) always wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    try:
        _busy = _os.getloadavg()[0] >= 0.5 * (_os.cpu_count() or 1)
    except OSError:  # no load average on this platform
        _busy = False
    if _busy:
        _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _os.environ["KBIT_DGL_OMP_CHOICE"] = "PASSIVE (machine busy at start)"

# DGL prints a notice on its first import unless a backend is chosen; this project runs on pytorch.
_os.environ.setdefault("DGLBACKEND", "pytorch")

__version__ = "0.1.0"


def _quiet_cuda_probe() -> None:
    """Import torch.utils.cpp_extension with its "No CUDA runtime is found, using CUDA_HOME=..." line
    dropped: on a CPU machine that finds a CUDA toolkit folder the line is noise (torch.compile and
    DGL import the module); anything else it prints still shows."""
    import contextlib
    import io
    import sys

    if "torch.utils.cpp_extension" in sys.modules:
        return
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        import torch.utils.cpp_extension  # noqa: F401
    for line in captured.getvalue().splitlines():
        if not line.startswith("No CUDA runtime is found"):
            print(line, file=sys.stderr)


_quiet_cuda_probe()


def __getattr__(name):  # the API's entry points, imported on first use (torch loads only then)
    if name in ("load_dataset", "load_run", "Run", "api"):
        import importlib

        api = importlib.import_module(".api", __name__)
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'kbit_dgl' has no attribute {name!r}")
