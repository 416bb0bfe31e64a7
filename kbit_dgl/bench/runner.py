"""Quality pipelines' runs: `kbit-dgl train` commands that span sessions."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Dict, List

from ..runs import CHECKPOINT, METRICS, run_finished


def train_to_the_end(command: List[str], run: str) -> Dict:
    """Bring the run folder ``run`` of the `kbit-dgl train` ``command`` (whose ``--out`` is ``run``) to its
    end and return its metrics: a finished run is read back, an interrupted one resumed from its
    checkpoint, anything else (nothing, or a folder without a checkpoint) started over."""
    if not run_finished(run):
        resume = ["--resume"] if os.path.exists(os.path.join(run, CHECKPOINT)) else ["--overwrite"]
        subprocess.run(command + resume, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(run, METRICS), encoding="utf-8") as handle:
        return json.load(handle)
