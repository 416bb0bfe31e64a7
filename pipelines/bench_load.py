"""Throughput of `kbit-dgl train` and `kbit-dgl evaluate` on a quiet machine and beside a busy process,
under several OpenMP (libgomp) wait settings.

    python pipelines/bench_load.py --data-dir ../shared/data --dataset fb15k-237 --repeats 2 \
        --policies auto default PASSIVE

Policies: ``auto`` (no OpenMP variable set: what ``import kbit_dgl`` chooses itself, the product's
default, and the thread count refitted to the load while the command runs: ``kbit_dgl/threads.py``),
``noadapt`` (auto's wait policy with the thread count fixed: ``KBIT_DGL_ADAPT_THREADS=0``),
``default`` (libgomp's own: spin a while, then sleep), ``ACTIVE`` / ``PASSIVE`` (``OMP_WAIT_POLICY``),
``spinN`` (``GOMP_SPINCOUNT=N``: spin N iterations, then sleep).
Loads (``--loads``): ``quiet``, ``busy`` (one busy-looping process beside the command: its fair share
is 2/3 of a 2-core machine), ``busy2`` (two: its share is 1/2) and ``late`` (one busy-looping process
that starts 15 s into training, after the start-time choice and the warm-up, and runs through the
evaluation; its rate mixes quiet and loaded steps).

Each case runs the user's commands in a fresh process: `kbit-dgl train` for --steps steps of TransE
(d=200, batch 1024, 256 shared negatives, Adam; the steady-state rate from metrics.json, compile
warm-up excluded) and `kbit-dgl evaluate` on the test split (queries per second). A competing load
is one busy-looping Python process that this script starts and stops itself. Cases are interleaved
over repeats so drift in the machine's load falls on all of them. Writes results/bench/load[-<tag>].{json,md}.
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

LOADS = ("quiet", "busy", "busy2", "late")
BUSY_PROCESSES = {"quiet": 0, "busy": 1, "busy2": 2, "late": 1}
LATE_SECONDS = 15  # "late": the busy process starts this long after `kbit-dgl train`, past its warm-up


def policy_env(policy: str) -> dict:
    """The environment of a case: OpenMP's variables as the policy says (an empty OMP_WAIT_POLICY is
    libgomp's default, and stops kbit_dgl from setting its own)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy == "auto":
        pass
    elif policy == "default":
        env["OMP_WAIT_POLICY"] = ""
    elif policy == "noadapt":  # auto's wait policy, the thread count fixed (kbit_dgl/threads.py off)
        env["KBIT_DGL_ADAPT_THREADS"] = "0"
    elif policy.startswith("spin"):
        env.update(OMP_WAIT_POLICY="", GOMP_SPINCOUNT=policy[len("spin"):])
    else:
        env["OMP_WAIT_POLICY"] = policy
    return env


def busy_processes(count: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def run_case(policy: str, data_dir: str, dataset: str, steps: int, folder: str, late: int = 0) -> dict:
    """One train + evaluate pair; ``late`` busy processes start LATE_SECONDS into training and run to the end."""
    env = policy_env(policy)
    run = os.path.join(folder, f"run-{policy}-{time.time_ns()}")
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", dataset, "--data-dir", data_dir,
               "--model", "transe", "--out", run, "--no-progress", "--set", "model.dim=200",
               "train.batch_size=1024", "train.num_negatives=256", f"train.max_steps={steps}",
               f"train.valid_every_steps={steps}", "eval.valid_sample=100"]
    training = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    busy = []
    try:
        if late:
            try:
                training.wait(LATE_SECONDS)
            except subprocess.TimeoutExpired:
                busy = busy_processes(late)
        _, errors = training.communicate()
        if training.returncode:
            raise RuntimeError(f"kbit-dgl train failed ({training.returncode}): {errors[-2000:]}")
        return _measured(run, env)
    finally:
        for process in busy:
            process.kill()
            process.wait()


def _measured(run: str, env: dict) -> dict:
    with open(os.path.join(run, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    evaluated = subprocess.run([sys.executable, "-m", "kbit_dgl.cli", "evaluate", run, "--split", "test"],
                               check=True, env=env, capture_output=True, text=True)
    result = json.loads(evaluated.stdout)
    return {"train_triples_per_second": metrics["train_triples_per_second_steady"],
            "eval_queries_per_second": 2 * metrics["kg"]["test"] / result["eval_seconds"],
            "thread_changes": metrics.get("thread_changes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--policies", nargs="+", default=["auto", "default", "PASSIVE"],
                        help="auto | default | ACTIVE | PASSIVE | spinN (GOMP_SPINCOUNT=N)")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=LOADS)
    parser.add_argument("--tag", default="", help="suffix of the output files (load-<tag>.json / .md)")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench"))
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for load in LOADS:
                if load not in args.loads:
                    continue
                busy = busy_processes(0 if load == "late" else BUSY_PROCESSES[load])
                try:
                    for policy in args.policies:
                        measured = run_case(policy, args.data_dir, args.dataset, args.steps, folder,
                                            late=BUSY_PROCESSES[load] if load == "late" else 0)
                        rows.append({"repeat": repeat, "load": load, "policy": policy, **measured})
                        print(rows[-1], flush=True)
                finally:
                    for process in busy:
                        process.kill()
                        process.wait()
    summary = {}
    loads = [load for load in LOADS if load in args.loads]
    for policy in args.policies:
        for load in loads:
            picked = [row for row in rows if row["policy"] == policy and row["load"] == load]
            summary[f"{policy}/{load}"] = {key: statistics.median(row[key] for row in picked)
                                           for key in ("train_triples_per_second", "eval_queries_per_second")}
    for policy in args.policies:
        for load in loads[1:]:
            for key in ("train_triples_per_second", "eval_queries_per_second"):
                summary[f"{policy}/{load}"][f"{key}_vs_quiet"] = (summary[f"{policy}/{load}"][key]
                                                                  / summary[f"{policy}/quiet"][key])
            summary[f"{policy}/{load}"]["fair_share"] = 2 / (2 + BUSY_PROCESSES[load])
    record = {**provenance(started), "load_before": list(load_before), "load_after": list(os.getloadavg()),
              "dataset": args.dataset, "steps": args.steps, "repeats": args.repeats, "rows": rows, "summary": summary}
    record["policies"] = args.policies
    atomic_write_json(os.path.join(args.out, f"load{'-' + args.tag if args.tag else ''}.json"), record)
    lines = ["# Throughput beside a busy process, by OpenMP wait setting", "",
             f"`{record['command']}` at commit `{record['commit'][:10]}`, {record['machine']['cpu_cores']} cores, "
             f"load before {load_before[0]:.2f}, after {record['load_after'][0]:.2f}; medians of {args.repeats} "
             f"interleaved repeats. Train: steady-state triples/s of `kbit-dgl train` (TransE d=200, batch 1024, "
             f"256 negatives); eval: test queries/s of `kbit-dgl evaluate`.", "",
             "| policy | load | fair share of the CPU | train triples/s | x quiet | eval queries/s | x quiet |",
             "|---|---|---|---|---|---|---|"]
    for policy in args.policies:
        for load in loads:
            cell = summary[f"{policy}/{load}"]
            ratio = (lambda key: f"{cell[key + '_vs_quiet']:.2f}" if load != "quiet" else "1")  # noqa: E731
            share = f"{2 / (2 + BUSY_PROCESSES[load]):.2f}" if load != "quiet" else "1"
            lines.append(f"| {policy} | {load} | {share} | {cell['train_triples_per_second']:,.0f} | "
                         f"{ratio('train_triples_per_second')} | {cell['eval_queries_per_second']:,.0f} | "
                         f"{ratio('eval_queries_per_second')} |")
    if "auto" in args.policies and "noadapt" in args.policies:
        quiet_cost = 1 - summary["auto/quiet"]["train_triples_per_second"] / summary["noadapt/quiet"][
            "train_triples_per_second"]
        lines += ["", f"`auto` (the thread count refitted to the load) on the quiet machine against `noadapt`: "
                      f"{quiet_cost:+.1%} train time cost (negative: faster)."]
    if "auto" in args.policies and "default" in args.policies:
        quiet_cost = 1 - summary["auto/quiet"]["train_triples_per_second"] / summary["default/quiet"][
            "train_triples_per_second"]
        lines += ["", f"`auto` (the product default) on the quiet machine against libgomp's default: "
                      f"{quiet_cost:+.1%} train time cost (negative: faster)."]
    atomic_write_text(os.path.join(args.out, f"load{'-' + args.tag if args.tag else ''}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
