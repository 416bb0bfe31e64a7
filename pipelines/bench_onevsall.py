"""The 1vsAll step against the matmul rate, and against PyKEEN's LCWA training of the same model and batch.

    python pipelines/bench_onevsall.py --data-dir ../shared/data --models distmult complex cp --dim 1000 \\
        --batch-size 500 --steps 8 --warmup 2 --repeats 2 --pykeen-steps 3

For each model (FB15k-237, `model.dim` real numbers per row: ComplEx 500 complex numbers), kbit-dgl's
`Trainer.step` under `train.objective=1vsall` (reciprocal relations, N3, Adagrad: `kbit_dgl/bench/onevsall.py`)
is timed interleaved with the step's own (Q, w) x (w, N) product in the same process: the step's rate
counts 6 Q N w operations (one product forward, two backward). Then PyKEEN 1.11's `LCWATrainingLoop`
(the same model class and width, inverse triples, cross-entropy loss, N3 as `LpRegularizer(p=3)`,
`torch.optim.Adagrad`) over batches of the same Q queries, timed per batch by a callback (its DistMult in
sub-batches: it broadcasts a (Q, N, d) tensor); kbit-dgl and
PyKEEN alternate `--repeats` times in one process at the same thread count. Writes
results/bench/onevsall-speed.json (command, commit, machine, load, wall time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Dict, List

from kbit_dgl.bench.onevsall import time_onevsall
from kbit_dgl.bench.timing import LoadWatch
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import project_root, provenance

PYKEEN_MODELS = {"distmult": "DistMult", "complex": "ComplEx"}


class _Enough(Exception):
    pass


def time_pykeen_lcwa(kg, model_name: str, dim: int, queries: int, steps: int, warmup: int) -> Dict[str, object]:
    """Median seconds per LCWA batch of ``queries`` (h, r) queries scored against every entity."""
    import pykeen.models
    import torch
    from pykeen.training import LCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import CoreTriplesFactory

    needed = warmup + steps + 1
    order = torch.randperm(len(kg.train), generator=torch.Generator().manual_seed(0))
    subset = kg.train[order[:min(len(kg.train), needed * queries)]]  # >= needed batches of distinct (h, r)
    factory = CoreTriplesFactory.create(subset, kg.num_entities, kg.num_relations, create_inverse_triples=True)
    width = dim // 2 if model_name == "complex" else dim  # PyKEEN's ComplEx counts complex numbers
    torch.manual_seed(0)
    model = getattr(pykeen.models, PYKEEN_MODELS[model_name])(
        triples_factory=factory, embedding_dim=width, loss="crossentropy", regularizer="lp",
        regularizer_kwargs={"p": 3.0, "weight": 0.05, "normalize": False}, random_seed=0)
    stamps: List[float] = []

    class Stamps(TrainingCallback):
        def post_batch(self, epoch, batch, **kwargs):  # after the optimizer step
            stamps.append(time.perf_counter())
            if len(stamps) >= needed:
                raise _Enough

    loop = LCWATrainingLoop(model=model, triples_factory=factory, automatic_memory_optimization=False,
                            optimizer=torch.optim.Adagrad(model.parameters(), lr=0.1))  # its search: CUDA only
    # PyKEEN 1.11's DistMult scores all tails by broadcasting h * r * t ((Q, N, d) floats: 58 GB at Q = 1000,
    # d = 1000): it needs sub-batches, at most 2 GB of that tensor each; its ComplEx takes the whole batch
    sub_batch = None if model_name == "complex" else max(1, int(2e9 // (kg.num_entities * width * 4)))
    try:
        loop.train(triples_factory=factory, num_epochs=1, batch_size=queries, sub_batch_size=sub_batch,
                   use_tqdm=False, use_tqdm_batch=False, callbacks=[Stamps()])
    except _Enough:
        pass
    seconds = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    if len(seconds) < steps:
        raise RuntimeError(f"PyKEEN ran {len(stamps)} batches, {needed} wanted")
    median = statistics.median(seconds)
    return {"batch_seconds_median": round(median, 5), "sub_batch_size": sub_batch,
            "queries_per_second": round(queries / median, 1),
            "batches_timed": len(seconds), "batch_seconds_all": [round(s, 5) for s in seconds]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(project_root(), "..", "shared", "data"))
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--models", nargs="+", default=["distmult", "complex", "cp"])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500, help="triples per kbit-dgl step (2x as many queries)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="kbit-dgl / PyKEEN alternations")
    parser.add_argument("--pykeen-steps", type=int, default=3, help="timed PyKEEN batches (after one warm-up)")
    parser.add_argument("--no-pykeen", action="store_true")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench", "onevsall-speed.json"))
    args = parser.parse_args()
    import torch

    from kbit_dgl.data import load_dataset

    started, load = time.time(), LoadWatch()
    kg = load_dataset(args.dataset, args.data_dir)
    rows = []
    for model in args.models:
        for repeat in range(args.repeats):
            ours = time_onevsall(kg, model, args.dim, args.batch_size, args.steps, args.warmup)
            row = {"model": model, "repeat": repeat, "kbit_dgl": ours}
            if model in PYKEEN_MODELS and not args.no_pykeen:
                row["pykeen_lcwa"] = time_pykeen_lcwa(kg, model, args.dim, ours["queries"], args.pykeen_steps, 1)
                row["ratio_queries_per_second"] = round(ours["queries_per_second"]
                                                        / row["pykeen_lcwa"]["queries_per_second"], 2)
            rows.append(row)
            print(model, repeat, ours["fraction_of_product_rate"], ours["queries_per_second"],
                  row.get("ratio_queries_per_second"), flush=True)
    summary = {}
    for model in args.models:
        mine = [r for r in rows if r["model"] == model]
        summary[model] = {
            "fraction_of_product_rate_median": statistics.median(r["kbit_dgl"]["fraction_of_product_rate"]
                                                                 for r in mine),
            "kbit_queries_per_second_median": statistics.median(r["kbit_dgl"]["queries_per_second"] for r in mine)}
        if all("pykeen_lcwa" in r for r in mine):
            summary[model]["pykeen_queries_per_second_median"] = statistics.median(
                r["pykeen_lcwa"]["queries_per_second"] for r in mine)
            summary[model]["ratio_median"] = statistics.median(r["ratio_queries_per_second"] for r in mine)
    atomic_write_json(args.out, {**provenance(started), "threads": torch.get_num_threads(), "load": load.record(2),
                                 "dataset": args.dataset, "dim": args.dim, "batch_size": args.batch_size,
                                 "summary": summary, "rows": rows})
    print(summary)


if __name__ == "__main__":
    main()
