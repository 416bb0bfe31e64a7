"""Test MRR of the same model and budget under each optimizer: what the low-memory ones cost in quality.

    python pipelines/optimizer_quality.py --data-dir ../shared/data --dataset fb15k-237 \
        --models transe rotate --optimizers adam:0.001 rowwise_adagrad:0.1 sparse_adagrad:0.1 \
        --set train.max_epochs=40 train.valid_every=5

At wikikg2 size Adam's two moment tables (2 x 5 GB at dim 500) do not fit beside the table, so the
leaderboard configs train with DGL-KE's row-wise Adagrad (one float of state per row). This runs
`kbit-dgl train` once per (model, optimizer:lr, seed) with everything else at the defaults plus --set,
each in its own process, and tabulates test MRR / Hits@10, epochs and time, and the optimizer
state's bytes per entity. Writes results/optim/<dataset>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance


def state_bytes_per_entity(optimizer: str, dim: int) -> int:
    """Bytes of optimizer state per entity row (float32): Adam two moments, Adagrad one sum, row-wise one float."""
    return {"adam": 8 * dim, "sparse_adam": 8 * dim, "sparse_adagrad": 4 * dim, "rowwise_adagrad": 4}[optimizer]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--models", nargs="+", default=["transe", "rotate"])
    parser.add_argument("--optimizers", nargs="+", default=["adam:0.001", "rowwise_adagrad:0.1"],
                        help="optimizer:learning rate pairs")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides shared by every run")
    parser.add_argument("--out", default=None, help="default: results/optim/<dataset>")
    args = parser.parse_args()
    out = args.out or os.path.join(project_root(), "results", "optim", args.dataset)
    started, load_before = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for model in args.models:
                for pair in args.optimizers:
                    optimizer, lr = pair.split(":")
                    run = os.path.join(folder, f"{model}-{optimizer}-{lr}-{seed}")
                    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", args.dataset,
                               "--data-dir", args.data_dir, "--model", model, "--out", run, "--no-progress",
                               "--set", f"train.optimizer={optimizer}", f"train.lr={lr}", f"train.seed={seed}",
                               f"model.dim={args.dim}", *args.set]
                    began = time.time()
                    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                    with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
                        metrics = json.load(handle)
                    rows.append({"model": model, "optimizer": optimizer, "lr": float(lr), "seed": seed,
                                 "test_mrr": metrics["test"]["mrr"], "test_hits@10": metrics["test"]["hits@10"],
                                 "valid_mrr": metrics["valid"]["mrr"], "epochs": metrics["epochs"],
                                 "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
                                 "wall_seconds": round(time.time() - began, 1),
                                 "state_bytes_per_entity": state_bytes_per_entity(optimizer, args.dim),
                                 "command": " ".join(command[1:])})
                    print(rows[-1], flush=True)
                    record = {**provenance(started), "load_before": list(load_before),
                              "load_after": list(os.getloadavg()), "dataset": args.dataset, "shared_set": args.set,
                              "rows": rows}
                    atomic_write_json(out + ".json", record)
    atomic_write_text(out + ".md", table(record))


def table(record: dict) -> str:
    shared = " ".join(record["shared_set"]) or "none"
    lines = [f"# Optimizers on {record['dataset']}: test MRR at one budget", "",
             f"`{record['command']}` (commit {record['commit'][:7]}, load {record['load_before'][0]:.1f} before, "
             f"{record['load_after'][0]:.1f} after). Shared overrides: `{shared}`.", "",
             "| model | optimizer | lr | seed | test MRR | test Hits@10 | epochs (best) | train time "
             "| state bytes / entity |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        lines.append(f"| {row['model']} | {row['optimizer']} | {row['lr']:g} | {row['seed']} | {row['test_mrr']:.4f} | "
                     f"{row['test_hits@10']:.4f} | {row['epochs']} ({row['best_epoch']}) | "
                     f"{row['train_seconds'] / 60:.1f} min | {row['state_bytes_per_entity']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
