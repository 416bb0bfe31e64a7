"""The trainer's step at two commits, side by side: worker processes alternate between the checkouts.

    python pipelines/bench_step_commits.py BASE [NEW] [--models transe rotate] [--rounds 6] [--steps 80]

Each commit is checked out once into a temporary git worktree (NEW defaults to HEAD). Each round runs
one worker process per (model, commit), the commits alternating, so that load from other jobs falls
on both alike. A worker loads the dataset (FB15k-237 by default, from --data-dir) and times
``kbit_dgl.bench.steps.StepTimer``: the trainer's ``train_step`` + backward + ``optimizer.step`` on the
speed issue's batch (1024 positives, 256 shared negatives per chunk of 128 queries, dim 200), median
of ``--steps`` steps after ``--warmup``. Reported: each worker's median, and per model the median over
rounds of the round's speedup (base seconds / new seconds). Writes results/bench/step_commits.json
(or --out) with the load average around the run and the provenance.
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
from typing import Dict, List

from kbit_dgl.bench.timing import LoadWatch
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = """
import json, sys, torch
from kbit_dgl.bench.steps import StepTimer
from kbit_dgl.data import load_dataset
model, optimizer, dataset, data_dir, warmup, steps = sys.argv[1:7]
kg = load_dataset(dataset, data_dir)
timer = StepTimer(kg, model, optimizer)
for index in range(int(warmup) + int(steps)):
    timer.step(record=index >= int(warmup))
print("RESULT " + json.dumps(timer.summary()))
"""


def run_worker(checkout: str, args, model: str) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=checkout)
    result = subprocess.run([sys.executable, "-c", WORKER, model, args.optimizer, args.dataset, args.data_dir,
                             str(args.warmup), str(args.steps)], cwd=checkout, env=env, capture_output=True,
                            text=True, timeout=args.worker_timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"worker at {checkout} ({model}) failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare against")
    parser.add_argument("new", nargs="?", default="HEAD")
    parser.add_argument("--models", nargs="+", default=["transe", "rotate"])
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA") or os.path.join(ROOT, "..", "shared",
                                                                                                "data"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--worker-timeout", type=int, default=900)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "step_commits.json"))
    args = parser.parse_args()
    args.data_dir = os.path.abspath(args.data_dir)
    started, load = time.time(), LoadWatch()
    commits = {name: subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout.strip()
               for name, ref in (("base", args.base), ("new", args.new))}
    with tempfile.TemporaryDirectory(prefix="kbit-step-commits-") as work:
        checkouts = {}
        for name, commit in commits.items():
            checkouts[name] = os.path.join(work, name)
            subprocess.run(["git", "worktree", "add", "--detach", checkouts[name], commit], cwd=ROOT, check=True,
                           capture_output=True)
        try:
            seconds: Dict[str, Dict[str, List[float]]] = {m: {"base": [], "new": []} for m in args.models}
            for round_index in range(args.rounds):
                for model in args.models:
                    order = ("base", "new") if round_index % 2 == 0 else ("new", "base")
                    for name in order:
                        summary = run_worker(checkouts[name], args, model)
                        seconds[model][name].append(summary["step_seconds_median"])
                    print(f"round {round_index}: {model} base {seconds[model]['base'][-1] * 1e3:.2f} ms, "
                          f"new {seconds[model]['new'][-1] * 1e3:.2f} ms", flush=True)
        finally:
            for checkout in checkouts.values():
                subprocess.run(["git", "worktree", "remove", "--force", checkout], cwd=ROOT, capture_output=True)
    cases = {}
    for model, by in seconds.items():
        ratios = [b / n for b, n in zip(by["base"], by["new"])]
        cases[model] = {"base_step_seconds": by["base"], "new_step_seconds": by["new"],
                        "base_triples_per_second_median": round(1024 / statistics.median(by["base"])),
                        "new_triples_per_second_median": round(1024 / statistics.median(by["new"])),
                        "speedup_per_round": [round(r, 3) for r in ratios],
                        "speedup_median": round(statistics.median(ratios), 3)}
        print(f"{model}: speedup (base / new seconds per step) median {cases[model]['speedup_median']}x over "
              f"{len(ratios)} rounds {cases[model]['speedup_per_round']}")
    atomic_write_json(args.out, {"commits": commits, "optimizer": args.optimizer, "dataset": args.dataset,
                                 "workload": "batch 1024, 256 shared negatives per chunk of 128, dim 200",
                                 "rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "cases": cases,
                                 "load_average": load.record(2), "provenance": provenance(started)})


if __name__ == "__main__":
    main()
