"""Run several ``kbit-dgl`` commands in one process in which ``import dgl`` fails.

Usage: ``python tests/shallow_cli.py COMMANDS.json RESULTS.json``. COMMANDS.json holds a list of
argument lists (``[["train", "--dataset", ...], ["evaluate", ...]]``); each is passed to
:func:`kbit_dgl.cli.main` in turn. RESULTS.json receives, per command, its exit code (``"raised"``,
with the traceback in stderr, for an exception) and what it printed to stdout and stderr, plus every
attempt to import DGL (even one the code caught and survived, as ``except ImportError`` would) and
whether ``dgl`` ended up in ``sys.modules``. Warnings are all shown (once per place, deprecations
included), so a command's stderr holds them.

tests/test_shallow_without_dgl.py starts this in a subprocess, in the pinned environment (where DGL
is installed, so an import would succeed without the block) and in CI's newest-torch environment
(where it is not installed at all).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import shutil
import sys
import time
import traceback
import warnings
from typing import List


class BlockDGL(importlib.abc.MetaPathFinder):
    """A meta-path finder that records and refuses every import of ``dgl`` or a submodule."""

    def __init__(self) -> None:
        self.attempts: List[str] = []

    def find_spec(self, name, path=None, target=None):
        if name == "dgl" or name.startswith("dgl."):
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the shallow-model path must not "
                                      "import DGL)", name=name)
        return None


def main(commands_path: str, results_path: str) -> int:
    """Run the commands in ``commands_path``; write their results to ``results_path``; return 0."""
    block = BlockDGL()
    sys.meta_path.insert(0, block)
    # every warning once per place, deprecations included: a newer torch or numpy warns before it breaks
    warnings.simplefilter("default")
    with open(commands_path) as f:
        commands = json.load(f)
    from kbit_dgl.cli import main as cli_main

    results = []
    for argv in commands:
        out, err, started = io.StringIO(), io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv)
            except SystemExit as stop:  # argparse errors
                code = stop.code
            except Exception:  # the blocked import, say: recorded, and the next command still runs
                code = "raised"
                traceback.print_exc()
        results.append({"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                        "seconds": round(time.perf_counter() - started, 2)})
    import numpy
    import torch

    from kbit_dgl.models import native

    # the C++ kernels (L1, RotatE) build on first use; a failed build falls back, with a warning
    toolchain = bool((shutil.which("c++") or shutil.which("g++")) and shutil.which("ninja"))
    summary = {"results": results, "dgl_import_attempts": block.attempts,
               "native_error": native._STATE.get("error"), "compiler": toolchain,
               "dgl_in_sys_modules": sorted(m for m in sys.modules if m == "dgl" or m.startswith("dgl.")),
               "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                            "numpy": numpy.__version__}}
    with open(results_path, "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
