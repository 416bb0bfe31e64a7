"""kbit-dgl: knowledge-graph embeddings on DGL with honest evaluation and k-bit inference."""
import os as _os

# ogb's import runs a version check over the network ("outdated"); offline it only warns, slowly.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

# OpenMP's default wait policy keeps idle threads spinning between parallel regions; on a shared
# machine they fight other processes for the cores and every small op pays for it (see
# results/bench/load.md: pipelines/bench_load.py, quiet and beside a busy process). PASSIVE lets
# them sleep. It must be set before torch loads OpenMP: importing kbit_dgl (the CLI does) before
# torch sets it; an explicit OMP_WAIT_POLICY in the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
