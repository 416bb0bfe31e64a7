"""One process against N on one machine: training speed and final quality through `kbit-dgl train`.

    # speed: 1 process x 2 threads against 2 processes x 1 thread, interleaved, 3 rounds
    python pipelines/bench_multiproc.py speed --data-dir ../shared/data --dataset fb15k-237 \
        --set model.dim=200 train.batch_size=1024 train.max_epochs=3 --rounds 3
    # quality: default-config runs, 1 process and 2, test MRR side by side
    python pipelines/bench_multiproc.py quality --data-dir ../shared/data --dataset codex-s --model transe
    # distdgl: the same pair with DistDGL on 2 loopback machines (kbit-dgl partition, then train --partitions)
    python pipelines/bench_multiproc.py distdgl --data-dir ../shared/data --dataset codex-s --model transe

Each run is the user's command (`kbit-dgl train ... --num-procs N`) in its own process tree, so the
rate is the CLI's steady-state rate (metrics.json, torch.compile's warm-up excluded). Speed runs
skip validation (`train.valid_every` above the epochs); the peers alternate within each round, and
the load is recorded before and after. Writes results/bench/multiproc-<task>-<dataset>.{json,md}
(distdgl: results/bench/distdgl-quality-<dataset>.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance
from kbit_dgl.runs import run_finished


def run_train(args, folder: str, procs: int, threads: int, extra, partitions: str = "", index: int = 0) -> dict:
    """One `kbit-dgl train` run; with --work a finished run is read back and an interrupted one resumed."""
    run = os.path.join(folder, f"p{procs}t{threads}-{index}")
    scale_out = ["--partitions", partitions] if partitions else ["--num-procs", str(procs)]
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", args.dataset, "--data-dir",
               args.data_dir, "--model", args.model, "--out", run, "--no-progress", *scale_out,
               "--set", f"train.num_threads={threads}", *args.set, *extra]
    began, load = time.time(), os.getloadavg()[0]
    if not run_finished(run):
        resume = ["--resume"] if os.path.exists(os.path.join(run, "checkpoint.pt")) else ["--overwrite"]
        subprocess.run(command + resume, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    return {"procs": procs, "threads": threads, "mode": "distdgl" if partitions else "procs",
            "steady": metrics["train_triples_per_second_steady"],
            "overall": metrics["train_triples_per_second"], "test_mrr": metrics["test"]["mrr"],
            "test_hits@10": metrics["test"]["hits@10"], "valid_mrr": metrics["valid"]["mrr"],
            "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": round(time.time() - began, 1),
            "load_before": load, "command": " ".join(command[3:]).replace(run, "RUN")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["speed", "quality", "distdgl"])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--model", default="transe")
    parser.add_argument("--procs", type=int, default=2, help="N: N processes x 1 thread against 1 x N threads")
    parser.add_argument("--rounds", type=int, default=3, help="speed: interleaved rounds")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides shared by every run")
    parser.add_argument("--method", default="random", choices=["random", "metis"],
                        help="distdgl: partitioning (kbit-dgl partition --method)")
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument("--out", default=None)
    parser.add_argument("--work", default=None,
                        help="keep the runs here (default: a temporary folder); rerunning the same command "
                             "reads finished runs back and resumes interrupted ones from their checkpoints")
    args = parser.parse_args()
    stem = "distdgl-quality" if args.task == "distdgl" else f"multiproc-{args.task}"
    name = f"{stem}-{args.dataset}{'-' + args.tag if args.tag else ''}"
    out = args.out or os.path.join(project_root(), "results", "bench", name)
    started, load_before = time.time(), os.getloadavg()
    peers = [(1, args.procs), (args.procs, 1)]  # (processes, threads each)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.work or scratch
        os.makedirs(folder, exist_ok=True)
        rounds = args.rounds if args.task == "speed" else 1
        extra = ["train.valid_every=100000", "eval.valid_sample=500"] if args.task == "speed" else []
        partitions = ""
        if args.task == "distdgl":  # N machines on loopback, one partition, server and trainer each
            partitions = os.path.join(folder, "partitions")
            if not os.path.exists(os.path.join(partitions, "kbit_partition.pt")):  # --work: made once
                subprocess.run([sys.executable, "-m", "kbit_dgl.cli", "partition", "--dataset", args.dataset,
                                "--data-dir", args.data_dir, "--parts", str(args.procs), "--method", args.method,
                                "--out", partitions, "--overwrite"], check=True, stdout=subprocess.DEVNULL)
            os.makedirs(os.path.join(folder, "runs"), exist_ok=True)
        runs = os.path.join(folder, "runs") if partitions else folder
        for round_index in range(rounds):
            for procs, threads in (peers if round_index % 2 == 0 else peers[::-1]):
                rows.append({"round": round_index, **run_train(args, runs, procs, threads, extra,
                                                               partitions if procs > 1 else "", len(rows))})
                print(rows[-1], flush=True)
                record = {**provenance(started), "task": args.task, "dataset": args.dataset, "model": args.model,
                          "partition_method": args.method if partitions else None,
                          "shared_set": args.set, "load_before": list(load_before),
                          "load_after": list(os.getloadavg()), "rows": rows}
                atomic_write_json(out + ".json", record)
    atomic_write_text(out + ".md", table(record))
    print(table(record))


def table(record: dict) -> str:
    rows = record["rows"]
    by_peer = {}
    for row in rows:
        by_peer.setdefault((row["procs"], row["threads"]), []).append(row)
    many = max(p for p, _ in by_peer)
    against = (f"DistDGL on {many} loopback machines ({record['partition_method']} partitions, a server and a "
               f"trainer each)" if record["task"] == "distdgl" else str(many))
    lines = [f"# {record['task'].capitalize()}: 1 process against {against} on "
             f"{record['dataset']} ({record['model']})", "",
             f"`{record['command']}` (commit {record['commit'][:7]}, load {record['load_before'][0]:.1f} before, "
             f"{record['load_after'][0]:.1f} after). "
             f"Shared overrides: `{' '.join(record['shared_set']) or 'none'}`.", ""]
    if record["task"] == "speed":
        lines += ["| processes x threads | steady triples/s per round | median |", "|---|---|---|"]
        medians = {}
        for (procs, threads), group in by_peer.items():
            medians[procs] = statistics.median(r["steady"] for r in group)
            rates = ", ".join(f"{r['steady']:,.0f}" for r in group)
            lines.append(f"| {procs} x {threads} | {rates} | {medians[procs]:,.0f} |")
        one, many = medians[1], medians[max(medians)]
        lines += ["", f"Ratio (N processes / one process), medians: **{many / one:.2f}**."]
    else:
        lines += ["| processes x threads | test MRR | Hits@10 | valid MRR | epochs (best) | train s "
                  "| steady triples/s |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            label = f"{row['procs']} x {row['threads']}" + (" (DistDGL)" if row.get("mode") == "distdgl" else "")
            lines.append(f"| {label} | {row['test_mrr']:.4f} | "
                         f"{row['test_hits@10']:.4f} | {row['valid_mrr']:.4f} | "
                         f"{row['epochs']} ({row['best_epoch']}) | {row['train_seconds']:.0f} | {row['steady']:,.0f} |")
        mrr = {row["procs"]: row["test_mrr"] for row in rows}
        lines += ["", f"Test MRR difference (N processes - one): **{mrr[max(mrr)] - mrr[1]:+.4f}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
