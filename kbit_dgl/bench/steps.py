"""Does a training step's cost grow with the number of entities? The trainer's own step, timed.

:class:`StepTimer` builds the trainer itself (:class:`kbit_dgl.train.trainer.Trainer`, without a
run folder) and times its :meth:`~kbit_dgl.train.trainer.Trainer.step` (the loss, backward,
``optimizer.step``), which alternates the corrupted side as the training loop does.
:func:`time_case` interleaves the steps of several KG sizes so that load from other jobs falls on
all sizes alike.
"""
from __future__ import annotations

import copy
import gc
import statistics
import time
from typing import Dict, List, Optional

import torch

from ..config import Config
from ..data.kg import KG
from ..train.trainer import Trainer

MODELS = ("transe", "rotate")


def bench_config(model: str, optimizer: str) -> Config:
    """The speed issue's batch config: 1024 positives, 256 shared negatives per chunk of 128
    queries, dim 200 (RotatE: 100 complex)."""
    config = Config()
    config.model.name, config.model.dim = model, 200
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = 1024, 256, 128
    config.train.optimizer = optimizer
    return config


class StepTimer:
    """The trainer of one model + optimizer on one KG; ``step()`` times one of its steps.

    ``config`` (default :func:`bench_config`) is copied with ``model_name`` and ``optimizer_name`` set.
    """

    def __init__(self, kg: KG, model_name: str, optimizer_name: str, config: Optional[Config] = None):
        if config is None:
            config = bench_config(model_name, optimizer_name)
        else:
            config = copy.deepcopy(config)
            config.model.name, config.train.optimizer = model_name, optimizer_name
        config.train.seed = 0
        self.kg, self.config = kg, config
        self.trainer = Trainer(config, kg)
        self.model, self.optimizer, self.generator = self.trainer.model, self.trainer.optimizer, self.trainer.generator
        self.count = 0
        self.step_seconds: List[float] = []
        self.update_seconds: List[float] = []

    def step(self, record: bool) -> None:
        """One training step on a random batch; with ``record``, its seconds (whole step, and
        ``optimizer.step`` alone) are kept."""
        train = self.config.train
        batch = self.kg.train[torch.randint(len(self.kg.train), (train.batch_size,), generator=self.generator)]
        times: Dict[str, float] = {}
        start = time.perf_counter()
        self.trainer.step(batch, times)
        end = time.perf_counter()
        self.count += 1
        if record:
            self.step_seconds.append(end - start)
            self.update_seconds.append(times["optimizer"])

    def summary(self) -> Dict[str, object]:
        """Median seconds per step and per optimizer step, and every recorded step's seconds."""
        return {"step_seconds_median": round(statistics.median(self.step_seconds), 5),
                "optimizer_step_seconds_median": round(statistics.median(self.update_seconds), 5),
                "step_seconds_all": [round(s, 5) for s in self.step_seconds]}


def time_case(kgs: Dict[int, KG], model_name: str, optimizer_name: str, steps: int,
              warmup: int, config: Optional[Config] = None) -> Dict[str, Dict[str, object]]:
    """Median step times of one model/optimizer on every KG (keyed by ``str(size)``), steps
    interleaved across the KGs so that load from other jobs falls on all sizes alike; ``config``
    as for :class:`StepTimer`."""
    timers = {size: StepTimer(kg, model_name, optimizer_name, config) for size, kg in kgs.items()}
    for index in range(warmup + steps):
        for timer in timers.values():
            timer.step(record=index >= warmup)
    summaries = {str(size): timer.summary() for size, timer in timers.items()}
    del timers
    gc.collect()
    return summaries
