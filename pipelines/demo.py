"""Run the README's main job (`kbit-dgl demo`) and store its output with the wall time.

    python pipelines/demo.py

Writes results/demo/README.md: the printed comparison (overall and per relation) as the user
sees it, plus the command, commit, machine and wall time of the whole job.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import provenance

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "demo")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "kbit_dgl.cli", "demo", "--out", os.path.join(folder, "demo"),
                   "--no-progress"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    record = provenance(started)
    record["demo_command"] = "kbit-dgl demo"
    atomic_write_json(os.path.join(RESULTS, "provenance.json"), record)
    text = (f"# `kbit-dgl demo` (the README's main job)\n\nWall time of the whole job: "
            f"{record['wall_seconds']:.0f} s on {record['machine']['cpu_cores']} cores "
            f"(torch {record['machine']['torch']}, {record['machine']['torch_threads']} threads), commit "
            f"`{record['commit'][:10]}`; produced by `python pipelines/demo.py`.\n\n```\n{output.rstrip()}\n```\n")
    atomic_write_text(os.path.join(RESULTS, "README.md"), text)
    print(text)


if __name__ == "__main__":
    main()
