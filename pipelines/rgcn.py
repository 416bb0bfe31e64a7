"""R-GCN encoder under the DistMult / TransE / RotatE decoders, full-graph and sampled training.

    python pipelines/rgcn.py --data-dir ../shared/data                      # fb15k-237, all runs (hours)
    python pipelines/rgcn.py --only distmult:full --set train.max_epochs=50
    python pipelines/rgcn.py --quick                                        # nations, 2 epochs: a smoke test
    python pipelines/rgcn.py --random-kg 1000000 --only distmult:sampled distmult:full \
        --memory-limit-gb 12 --set train.max_epochs=1 train.optimizer=sparse_adam  # a KG too large for full-graph

``--random-kg N`` trains on a generated KG of N entities and ``--random-triples`` uniformly random
triples (default 2N) over 100 relations: only its size matters there, not its MRR.
``--memory-limit-gb`` caps each run's address space (``RLIMIT_AS``, which includes the address
space torch's libraries map): a run that needs more fails with an allocation error, recorded in its
JSON as ``out_of_memory``, instead of taking the machine's memory from everything else.

Each ``decoder:mode`` trains in its own child process (so its peak memory is its own) into
``runs/rgcn/<dataset>-rgcn-<decoder>-<mode>`` and stores ``results/rgcn/<same name>.json``: the
metrics, seconds per epoch, the process's peak resident memory (``ru_maxrss``) and its resident
memory before training (imports + data), the resolved config and the provenance (command,
commit, machine, wall time). ``results/rgcn/README.md`` tables them. Runs go one after another,
so full vs sampled timings are comparable. The hyperparameters below are a starting point,
not tuned per dataset; ``--set`` changes any of them.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from kbit_dgl.bench.memory import current_rss_mib, max_rss_mib
from kbit_dgl.bench.tables import rgcn_table
from kbit_dgl.config import Config
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import provenance

RUNS = ["distmult:full", "distmult:sampled", "transe:full", "rotate:full"]
# Full-graph training runs the encoder over the whole graph every step, so it wants large batches
# (DGL's R-GCN example samples 30,000 edges per step). On FB15k-237 (544k edges with inverses,
# width 200) one GroupedRelGraphConv layer's forward + backward costs seconds on one core
# (results/bench/rgcn_layer.json), so a step costs about layers x that whatever the batch: one
# layer and batches of 8192 give ~35 updates per epoch (272k training triples / 8192); the seconds
# per epoch are in results/rgcn/*.json. ``--set encoder.layers=2`` doubles the encoder's cost.
SETTINGS = ["model.dim=200", "encoder.layers=1", "encoder.regularizer=bdd", "encoder.num_bases=100",
            "encoder.dropout=0.2", "train.batch_size=8192", "train.num_negatives=256",
            "train.negative_chunk_size=128", "train.lr=0.005", "train.max_epochs=100", "train.valid_every=5",
            "encoder.fanouts=10"]
QUICK = ["model.dim=32", "encoder.num_bases=4", "train.batch_size=512", "train.max_epochs=2", "train.valid_every=1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "results", "rgcn")


def load_kg(dataset: str, data_dir: str, random_triples: int):
    if dataset.startswith("random-"):
        from kbit_dgl.bench.workloads import random_kg

        num_entities = int(dataset.split("-", 1)[1])
        return random_kg(num_entities, 100, random_triples or 2 * num_entities)
    from kbit_dgl.data import load_dataset

    return load_dataset(dataset, data_dir)


def run_one(spec: str, dataset: str, data_dir: str, runs_dir: str, overrides, suffix: str,
            random_triples: int = 0, memory_limit_gb: float = 0.0) -> dict:
    """Train one ``decoder:mode`` in this process and store its result JSON."""
    from kbit_dgl.train.trainer import train

    decoder, mode = spec.split(":")
    started = time.time()
    kg = load_kg(dataset, data_dir, random_triples)
    config = Config()
    config.data.dataset, config.model.name, config.model.encoder = dataset, decoder, "rgcn"
    config.apply_overrides(SETTINGS + list(overrides) + [f"encoder.mode={mode}"])
    rss_before = current_rss_mib()
    name = f"{kg.name}-rgcn-{decoder}-{mode}{suffix}"
    if memory_limit_gb:
        limit = int(memory_limit_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    record = {"spec": spec, "name": name, "dataset": kg.name, "model": decoder, "overrides": list(overrides),
              "config": config.to_dict(), "num_entities": kg.num_entities, "num_train": len(kg.train),
              "message_passing_edges": 2 * len(kg.train), "memory_limit_gb": memory_limit_gb or None}
    try:
        metrics = train(config, kg, os.path.join(runs_dir, name), overwrite=True, progress=False)
    except (MemoryError, RuntimeError) as error:
        out_of_memory = isinstance(error, MemoryError) or "can't allocate memory" in str(error)
        if not (memory_limit_gb and out_of_memory):
            raise
        record.update(out_of_memory=str(error).splitlines()[0][:300], peak_rss_mb=round(max_rss_mib(), 1),
                      rss_before_training_mb=round(rss_before, 1), provenance=provenance(started))
        atomic_write_json(os.path.join(RESULTS, f"{name}.json"), record)
        print(f"{name}: out of memory under {memory_limit_gb} GiB: {record['out_of_memory']}", flush=True)
        return record
    record.update(metrics)
    record.update(seconds_per_epoch=round(metrics["train_seconds"] / max(metrics["epochs"], 1), 3),
                  peak_rss_mb=round(max_rss_mib(), 1), rss_before_training_mb=round(rss_before, 1),
                  provenance=provenance(started))
    atomic_write_json(os.path.join(RESULTS, f"{name}.json"), record)
    print(f"{name}: test MRR {metrics['test']['mrr']:.4f} valid {metrics['valid']['mrr']:.4f}  "
          f"{record['seconds_per_epoch']} s/epoch  peak RSS {record['peak_rss_mb']:.0f} MiB "
          f"({record['provenance']['wall_seconds']} s)", flush=True)
    return record


def write_table() -> None:
    atomic_write_text(os.path.join(RESULTS, "README.md"), rgcn_table(RESULTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", "../shared/data"))
    parser.add_argument("--runs-dir", default="runs/rgcn")
    parser.add_argument("--only", nargs="*", help="decoder:mode specs, mode full | sampled (default: all)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides applied to every run")
    parser.add_argument("--suffix", default="", help="added to result names, for runs with overrides")
    parser.add_argument("--quick", action="store_true", help="smoke test: nations, tiny model, 2 epochs")
    parser.add_argument("--random-kg", type=int, default=0, metavar="N",
                        help="train on a generated KG of N entities instead of --dataset")
    parser.add_argument("--random-triples", type=int, default=0, help="its training triples (default 2N)")
    parser.add_argument("--memory-limit-gb", type=float, default=0.0,
                        help="cap each run's address space (RLIMIT_AS) at this many GiB")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one spec, in this process
    args = parser.parse_args()
    overrides = (QUICK if args.quick else []) + list(args.set)
    if args.random_kg:
        args.dataset = f"random-{args.random_kg}"
    dataset = "nations" if args.quick else args.dataset
    suffix = args.suffix + ("-quick" if args.quick else "")
    os.makedirs(RESULTS, exist_ok=True)
    if args.child:
        run_one(args.child, dataset, args.data_dir, args.runs_dir, overrides, suffix, args.random_triples,
                args.memory_limit_gb)
        return
    for spec in args.only or RUNS:
        command = [sys.executable, os.path.abspath(__file__), "--child", spec, "--dataset", args.dataset,
                   "--data-dir", args.data_dir, "--runs-dir", args.runs_dir, f"--suffix={args.suffix}",
                   "--random-triples", str(args.random_triples), "--memory-limit-gb", str(args.memory_limit_gb),
                   *(["--quick"] if args.quick else []), "--set", *args.set]
        subprocess.run(command, check=True)
        write_table()


if __name__ == "__main__":
    main()
