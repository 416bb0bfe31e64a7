"""How close does a 1vsAll step come to the machine's matmul rate? The trainer's own step, timed.

A 1vsAll step of a bilinear decoder (DistMult, ComplEx, CP) on a batch of B triples scores Q = 2B
queries against all N entities: one (Q, w) x (w, N) product forward and two of the same size backward
(the gradient of the queries and of the candidate table), 6 Q N w floating-point operations, w the
width the product runs over (DistMult and ComplEx: model.dim; CP: model.dim, one role's half of a
row). :func:`time_onevsall` times :meth:`kbit_dgl.train.trainer.Trainer.step` and, interleaved with
it in the same process, that very (Q, w) x (w, N) product alone, and reports the step's rate in
GFLOP/s as a fraction of the product's.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List

import torch

from ..config import Config
from ..data.kg import KG
from ..train.trainer import Trainer


def onevsall_config(model: str, dim: int, batch_size: int, optimizer: str = "adagrad") -> Config:
    """ComplEx-N3-style 1vsAll: reciprocal relations, N3 at kbc's FB15k-237 weight, Adagrad lr 0.1."""
    config = Config()
    config.model.name, config.model.dim, config.model.reciprocal = model, dim, "true"
    config.train.objective, config.train.optimizer, config.train.lr = "1vsall", optimizer, 0.1
    config.train.regularizer, config.train.regularization = "n3", 0.05
    config.train.batch_size, config.train.seed = batch_size, 0
    return config


def product_width(trainer: Trainer) -> int:
    """w: the width of the query x candidate product of the trainer's decoder (``model.dim``: CP's rows
    are two roles of that width, and a product runs over one)."""
    return trainer.model.decoder.dim


def time_onevsall(kg: KG, model: str, dim: int, batch_size: int, steps: int, warmup: int,
                  optimizer: str = "adagrad") -> Dict[str, object]:
    """Median seconds of the trainer's 1vsAll step and of its product alone, interleaved, and the
    step's GFLOP/s as a fraction of the product's."""
    config = onevsall_config(model, dim, batch_size, optimizer)
    trainer = Trainer(config, kg)
    width, queries = product_width(trainer), 2 * batch_size
    left, right = torch.randn(queries, width), torch.randn(width, kg.num_entities)
    generator = torch.Generator().manual_seed(0)
    step_seconds: List[float] = []
    product_seconds: List[float] = []
    for index in range(warmup + steps):
        batch = kg.train[torch.randint(len(kg.train), (batch_size,), generator=generator)]
        start = time.perf_counter()
        trainer.step(batch)
        middle = time.perf_counter()
        torch.matmul(left, right)
        end = time.perf_counter()
        if index >= warmup:
            step_seconds.append(middle - start)
            product_seconds.append(end - middle)
    flops = 6 * queries * kg.num_entities * width
    step, product = statistics.median(step_seconds), statistics.median(product_seconds)
    step_gflops, product_gflops = flops / step / 1e9, 2 * queries * kg.num_entities * width / product / 1e9
    return {"model": model, "dim": dim, "batch_size": batch_size, "queries": queries, "width": width,
            "num_entities": kg.num_entities, "optimizer": optimizer, "steps": steps, "warmup": warmup,
            "step_seconds_median": round(step, 5), "product_seconds_median": round(product, 5),
            "step_gflops": round(step_gflops, 2), "product_gflops": round(product_gflops, 2),
            "fraction_of_product_rate": round(step_gflops / product_gflops, 4),
            "queries_per_second": round(queries / step, 1),
            "step_seconds_all": [round(s, 5) for s in step_seconds]}
