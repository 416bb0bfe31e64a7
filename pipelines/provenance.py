"""What every stored result carries: the command, the git commit, the machine and the wall time."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Dict


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> Dict[str, str]:
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
    return {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "commit": git_commit(),
            "machine": machine(), "wall_seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
