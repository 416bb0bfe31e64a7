"""Train an OGB leaderboard config for a step budget at wikikg2's full size and record speed and memory.

    python pipelines/bench_wikikg2_train.py --root /tmp/standin-full --steps 3000
    python pipelines/bench_wikikg2_train.py --root /tmp/standin-full --entry wikikg2-rotate-250 --steps 3000

Runs `kbit-dgl train` with a leaderboard entry's config (``kbit_dgl/bench/leaderboard.py``; default
TransE-500: gamma 30, batch 512, 128 negatives; the entity table with DGL-KE's row-wise Adagrad, lr
0.1) on the data under --root (the real download
or pipelines/wikikg2_standin.py's stand-in) for --steps steps, validating on 2,000 sampled valid
triples at the end. It polls the process's resident memory (VmRSS, VmHWM) and stops it once the
step budget's checkpoint is written, before the final full-split evaluation. Records time to the
first step, steady-state and overall triples/s (from the checkpoint), resident memory while
training and the peak, in results/bench/wikikg2_train.json.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from kbit_dgl.bench.leaderboard import ENTRIES
from kbit_dgl.bench.memory import process_memory_kib
from kbit_dgl.io import atomic_write_json, load_saved
from kbit_dgl.provenance import project_root, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--entry", default="wikikg2-transe-500", choices=sorted(ENTRIES))
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides")
    parser.add_argument("--out", help="default: results/bench/wikikg2_train.json (TransE-500), else "
                                      "results/bench/wikikg2_train-<entry>.json")
    args = parser.parse_args()
    entry = ENTRIES[args.entry]
    if args.out is None:
        name = "wikikg2_train" + ("" if args.entry == "wikikg2-transe-500" else f"-{args.entry}")
        args.out = os.path.join(project_root(), "results", "bench", f"{name}.json")
    started, load_before = time.time(), os.getloadavg()
    overrides = entry.config_overrides(seed=0, steps=args.steps, valid_every_steps=args.steps) + args.set
    with tempfile.TemporaryDirectory(dir=os.path.dirname(args.root.rstrip("/")) or None) as folder:
        run = os.path.join(folder, "run")
        command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", "ogbl-wikikg2", "--data-dir",
                   args.root, "--model", entry.model, "--out", run, "--no-progress", "--set", *overrides]
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1"}  # forked compile workers copy the table
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log_path, training_rss, peak = os.path.join(run, "train.log"), 0, 0
        first_step = None
        while process.poll() is None:
            time.sleep(1)
            memory = process_memory_kib(process.pid)
            peak = max(peak, memory.get("VmHWM", 0))
            log = open(log_path, encoding="utf-8").read() if os.path.exists(log_path) else ""
            if f"training {entry.model}" in log and "stopped at step" not in log:
                training_rss = max(training_rss, memory.get("VmRSS", 0))
            if "valid mrr" in log and os.path.exists(os.path.join(run, "checkpoint.pt")):
                time.sleep(5)  # the checkpoint after the last validation
                peak = max(peak, process_memory_kib(process.pid).get("VmHWM", 0))
                process.send_signal(signal.SIGTERM)
                process.wait()
                break
        else:
            raise SystemExit(f"kbit-dgl train exited with {process.returncode} before the step budget's checkpoint")
        stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ training", log, flags=re.M)
        state = load_saved(os.path.join(run, "checkpoint.pt"), only=("state",))["state"]
        triples = state["step"] * 512  # every leaderboard entry trains with batches of 512
        first_step = state["warmup_seconds"]
        record = {**provenance(started), "entry": args.entry, "load_before": list(load_before),
                  "load_after": list(os.getloadavg()),
                  "command_run": " ".join(command), "steps": state["step"],
                  "train_seconds": round(state["train_seconds"], 1),
                  "triples_per_second_overall": round(triples / state["train_seconds"], 1),
                  "triples_per_second_steady": round((triples - state["warmup_triples"])
                                                     / (state["train_seconds"] - state["warmup_seconds"]), 1),
                  "warmup_seconds_first_10_steps": round(first_step, 1),
                  "training_started": stamps[0] if stamps else None,
                  "resident_gib_while_training": round(training_rss / 2 ** 20, 2),
                  "peak_resident_gib": round(peak / 2 ** 20, 2),
                  "valid_sample_mrr": [entry["valid_mrr"] for entry in state["history"]]}
    atomic_write_json(args.out, record)
    print({key: record[key] for key in ("steps", "triples_per_second_steady", "triples_per_second_overall",
                                        "resident_gib_while_training", "peak_resident_gib")})


if __name__ == "__main__":
    main()
