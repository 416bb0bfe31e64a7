"""What every stored result carries: the command, the git commit, the machine and the wall time.

The commit is that of the source checkout the package was imported from (an editable install or
a run from the repository root), or, when the package is installed elsewhere (site-packages), of
the git repository around the current directory; ``unknown`` outside any repository.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Dict, Optional

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_checkout() -> Optional[str]:
    """The repository root holding this package's source (``.git`` beside ``kbit_dgl/``: a clone
    or a worktree), or None for an installed copy."""
    root = os.path.dirname(PACKAGE_DIR)
    return root if os.path.exists(os.path.join(root, ".git")) else None


def project_root() -> str:
    """Where the project's ``runs/`` and ``results/`` live: the source checkout, else the current directory."""
    return source_checkout() or os.getcwd()


def git_commit(root: Optional[str] = None) -> str:
    """``HEAD``'s commit of the repository at ``root`` (default: :func:`project_root`), with
    ``+dirty`` when tracked files differ from it; ``unknown`` without git or a repository."""
    root = root or project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> Dict[str, str]:
    """Cores, torch threads, platform, Python / torch / DGL versions and the GPU, if any."""
    import torch

    info = {"cpu_cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
    try:
        import dgl

        info["dgl"] = dgl.__version__
    except Exception:  # DGL is optional for the shallow-model paths
        info["dgl"] = "not importable"
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def provenance(started: float) -> Dict[str, object]:
    """The record stored with a result: command line, commit, machine, wall seconds since
    ``started`` (a ``time.time()``) and the finishing time."""
    return {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "commit": git_commit(),
            "machine": machine(), "wall_seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
