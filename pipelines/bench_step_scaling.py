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
import gc
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kbit_dgl.config import Config  # noqa: E402
from kbit_dgl.data import KG  # noqa: E402
from kbit_dgl.io import atomic_write_json  # noqa: E402
from kbit_dgl.provenance import provenance  # noqa: E402
from kbit_dgl.runs import model_from_config  # noqa: E402
from kbit_dgl.train.optim import OPTIMIZERS, make_optimizer  # noqa: E402
from kbit_dgl.train.steps import train_step  # noqa: E402

MODELS = ("transe", "rotate")


def random_kg(num_entities: int, num_relations: int, num_triples: int, seed: int = 0) -> KG:
    """A KG of uniformly random int64 triples (only the entity count matters for a step's cost)."""
    generator = torch.Generator().manual_seed(seed)

    def triples(count: int) -> torch.Tensor:
        return torch.stack([torch.randint(num_entities, (count,), generator=generator),
                            torch.randint(num_relations, (count,), generator=generator),
                            torch.randint(num_entities, (count,), generator=generator)], dim=1)

    return KG(name=f"random-{num_entities}", train=triples(num_triples), valid=triples(100), test=triples(100),
              num_entities=num_entities, num_relations=num_relations,
              entity_names=[str(i) for i in range(num_entities)],
              relation_names=[str(i) for i in range(num_relations)])


def bench_config(model: str, optimizer: str) -> Config:
    config = Config()
    config.model.name, config.model.dim = model, 200
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = 1024, 256, 128
    config.train.optimizer = optimizer
    return config


class StepTimer:
    """One model + optimizer on one KG, built as the trainer builds them; ``step()`` times one step."""

    def __init__(self, kg: KG, model_name: str, optimizer_name: str):
        self.kg, self.config = kg, bench_config(model_name, optimizer_name)
        torch.manual_seed(0)
        self.model = model_from_config(self.config, kg)
        self.optimizer = make_optimizer(self.model, optimizer_name, self.config.train.lr)
        self.generator = torch.Generator().manual_seed(0)
        self.count = 0
        self.step_seconds: List[float] = []
        self.update_seconds: List[float] = []

    def step(self, record: bool) -> None:
        train = self.config.train
        batch = self.kg.train[torch.randint(len(self.kg.train), (train.batch_size,), generator=self.generator)]
        start = time.perf_counter()
        loss = train_step(self.model, batch, self.config, self.generator, "tail" if self.count % 2 == 0 else "head")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        before_update = time.perf_counter()
        self.optimizer.step()
        end = time.perf_counter()
        self.count += 1
        if record:
            self.step_seconds.append(end - start)
            self.update_seconds.append(end - before_update)

    def summary(self) -> Dict[str, object]:
        return {"step_seconds_median": round(statistics.median(self.step_seconds), 5),
                "optimizer_step_seconds_median": round(statistics.median(self.update_seconds), 5),
                "step_seconds_all": [round(s, 5) for s in self.step_seconds]}


def time_case(kgs: Dict[int, KG], model_name: str, optimizer_name: str, steps: int,
              warmup: int) -> Dict[str, Dict[str, object]]:
    """Median step times of one model/optimizer on every KG, steps interleaved across the KGs so that
    load from other jobs falls on all sizes alike."""
    timers = {size: StepTimer(kg, model_name, optimizer_name) for size, kg in kgs.items()}
    for index in range(warmup + steps):
        for timer in timers.values():
            timer.step(record=index >= warmup)
    summaries = {str(size): timer.summary() for size, timer in timers.items()}
    del timers
    gc.collect()
    return summaries


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
    load_before = os.getloadavg()
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
    load_after = os.getloadavg()
    results["load_average_1_5_15min"] = {"before": [round(x, 2) for x in load_before],
                                         "after": [round(x, 2) for x in load_after]}
    # this run keeps up to torch_threads cores busy itself; more than one core's worth of load
    # before it started means other jobs were running
    results["under_load"] = load_before[0] >= 1.0
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
