"""Does lazy Adam explain the 2-process kinship RotatE gap? Three arms through `kbit-dgl train`, one run at a time.

    python pipelines/lazy_adam_kinship.py --data-dir /work/shared/data --work /tmp/lazy-adam-kinship --seeds 0 1 2

`train.optimizer=adam` is dense Adam in one process but lazy (sparse) Adam on the tables in several
(kbit_dgl/train/distributed.py), so a multi-process run changes the optimizer as well as the process count.
The arms separate the two, at the earlier run's config (RotatE, 60 epochs, 1 thread per process):

* ``1proc-adam``: one process, dense Adam;
* ``1proc-sparse_adam``: one process, torch's lazy Adam on the tables (``train.optimizer=sparse_adam``);
* ``2proc-adam``: two processes x 1 thread (``--num-procs 2``), which is lazy Adam on the tables.

Within a seed the arms run one after another (never two trainings at once). With --work a finished run is
read back (its row, wall time and load included, from the results file when that has it) and an interrupted
one resumed from its checkpoint. Writes results/bench/lazy-adam-kinship.json
after every run (command, commit, machine, load before/after, wall time, test MRRs per arm and seed).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from kbit_dgl.bench.runner import train_to_the_end
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import project_root, provenance
from kbit_dgl.runs import run_finished

ARMS = {  # name: (processes, optimizer)
    "1proc-adam": (1, "adam"),
    "1proc-sparse_adam": (1, "sparse_adam"),
    "2proc-adam": (2, "adam"),
}


def run_arm(args, folder: str, arm: str, seed: int, earlier=()) -> dict:
    """One `kbit-dgl train` run of ``arm`` at ``seed``; returns its row (test MRR, wall time, load). A finished
    run's row in ``earlier`` (the rows of the results file) is kept as it was measured."""
    procs, optimizer = ARMS[arm]
    run = os.path.join(folder, f"{arm}-s{seed}")
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", args.dataset, "--data-dir",
               args.data_dir, "--model", "rotate", "--out", run, "--no-progress", "--num-procs", str(procs),
               "--set", "train.num_threads=1", f"train.max_epochs={args.epochs}", f"train.optimizer={optimizer}",
               f"train.seed={seed}", *args.set]
    shown = " ".join(command[3:]).replace(run, "RUN")
    if run_finished(run):
        for row in earlier:
            if row["arm"] == arm and row["seed"] == seed and row["command"] == shown:
                return row
    began, load_before = time.time(), os.getloadavg()
    metrics = train_to_the_end(command, run)
    return {"arm": arm, "procs": procs, "threads": 1, "optimizer": optimizer, "seed": seed,
            "test_mrr": metrics["test"]["mrr"], "test_hits@10": metrics["test"]["hits@10"],
            "valid_mrr": metrics["valid"]["mrr"], "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.time() - began, 1),
            "load_before": list(load_before), "load_after": list(os.getloadavg()),
            "command": shown}


def summary(rows) -> dict:
    """Per arm: the seeds run, their test MRRs, mean and (2+ seeds) sample std."""
    out = {}
    for arm in ARMS:
        mrrs = [row["test_mrr"] for row in rows if row["arm"] == arm]
        if mrrs:
            out[arm] = {"seeds": [row["seed"] for row in rows if row["arm"] == arm], "test_mrr": mrrs,
                        "mean": statistics.mean(mrrs), "std": statistics.stdev(mrrs) if len(mrrs) > 1 else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="kinship")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--set", nargs="*", default=[], help="further config overrides shared by every run")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench", "lazy-adam-kinship.json"))
    parser.add_argument("--work", default=None,
                        help="keep the runs here (default: a temporary folder); rerunning reads finished runs back")
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    earlier = []
    if args.work and os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as handle:
            earlier = json.load(handle).get("rows", [])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.work or scratch
        os.makedirs(folder, exist_ok=True)
        for seed in args.seeds:
            for arm in args.arms:
                rows.append(run_arm(args, folder, arm, seed, earlier))
                print({k: rows[-1][k] for k in ("arm", "seed", "test_mrr", "wall_seconds")}, flush=True)
                atomic_write_json(args.out, {**provenance(started), "dataset": args.dataset, "model": "rotate",
                                             "epochs": args.epochs, "arms": {a: list(ARMS[a]) for a in args.arms},
                                             "load_before": list(load_before), "load_after": list(os.getloadavg()),
                                             "runs_wall_seconds": round(sum(row["wall_seconds"] for row in rows), 1),
                                             "summary": summary(rows), "rows": rows})
    print(json.dumps(summary(rows), indent=1))


if __name__ == "__main__":
    main()
