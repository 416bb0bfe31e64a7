"""Does a training step's cost grow with the number of entities? Dense Adam vs sparse row updates.

    python pipelines/bench_step_scaling.py [--entities 15000 2500000] [--steps 5] [--warmup 2]

The speed issue's batch config (1024 positives, 256 shared negatives per chunk of 128 queries,
dim 200, RotatE 100 complex) on random KGs that differ only in their number of entities. Each
case builds the model and optimizer as the trainer does (``model_from_config``, ``make_optimizer``)
and times the trainer's own step (``train_step``, backward, ``optimizer.step``), alternating
directions as the trainer does: the median of ``--steps`` steps after ``--warmup``, the steps of
the KG sizes interleaved (one model per size alive at a time per case). Writes
results/bench/step_scaling.json with the ratio (largest KG / smallest KG) per model and optimizer,
the load average of the machine around the run, and the provenance.

Memory: the 2.5M-entity table is 2 GB in fp32; dense Adam adds a dense gradient and two moment
tables (8 GB in all), sparse Adam two moment tables (6 GB), sparse Adagrad one (4 GB).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Dict

import torch

from kbit_dgl.bench.steps import MODELS, time_case
from kbit_dgl.bench.timing import LoadWatch
from kbit_dgl.bench.workloads import random_kg
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import provenance
from kbit_dgl.train.optim import OPTIMIZERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, nargs="+", default=[15_000, 2_500_000])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocation)")
    parser.add_argument("--num-relations", type=int, default=200)
    parser.add_argument("--num-triples", type=int, default=200_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                      "results", "bench", "step_scaling.json"))
    args = parser.parse_args()
    started = time.time()
    load = LoadWatch()
    results: Dict[str, object] = {
        "workload": {"batch_size": 1024, "shared_negatives": 256, "negative_chunk_size": 128, "dim": 200,
                     "rotate_complex_dim": 100, "num_relations": args.num_relations,
                     "num_train_triples": args.num_triples, "timed_steps": args.steps, "warmup_steps": args.warmup,
                     "statistic": "median seconds per step (train_step + backward + optimizer.step)"},
        "torch_threads": torch.get_num_threads(), "cases": {}}
    cases: Dict[str, Dict[str, Dict[str, float]]] = results["cases"]  # type: ignore[assignment]
    kgs = {size: random_kg(size, args.num_relations, args.num_triples) for size in sorted(args.entities)}
    for model_name in args.models:
        for optimizer_name in args.optimizers:
            key = f"{model_name}/{optimizer_name}"
            cases[key] = time_case(kgs, model_name, optimizer_name, args.steps, args.warmup)
            for size, timing in cases[key].items():
                print(f"{int(size):>9,d} entities  {key:24s} step {timing['step_seconds_median'] * 1000:9.1f} ms"
                      f"  (optimizer {timing['optimizer_step_seconds_median'] * 1000:8.1f} ms)", flush=True)
    smallest, largest = str(min(args.entities)), str(max(args.entities))
    results["ratio_largest_over_smallest"] = {
        key: round(by_size[largest]["step_seconds_median"] / by_size[smallest]["step_seconds_median"], 3)
        for key, by_size in cases.items()}
    results["ratio_entities"] = f"{largest} / {smallest}"
    results["load_average_1_5_15min"] = load.record(digits=2)
    # this run keeps up to torch_threads cores busy itself; more than one core's worth of load
    # before it started means other jobs were running
    results["under_load"] = load.under_load
    results["note"] = ("timings taken while other jobs shared the machine's cores (load average above); "
                       "ratios within one run are comparable, absolute times are not"
                       if results["under_load"] else "machine otherwise idle (load average above)")
    results["provenance"] = provenance(started)
    atomic_write_json(args.out, results)
    for key, ratio in results["ratio_largest_over_smallest"].items():  # type: ignore[union-attr]
        print(f"{key:24s} step time {largest} / {smallest} entities = {ratio:.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
