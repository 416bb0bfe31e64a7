"""Training runs for sweeps: one folder per configuration, reused when finished, resumed when not.

A sweep asks for a run by its config; :func:`ensure_run` trains it into its folder, or, when the
folder already holds a finished run (``metrics.json``) with the same config, loads it instead,
so an interrupted sweep restarts where it stopped. A folder holding a different config is an
error, never silently reused or replaced. :func:`staged_run` trains one run in stages (resuming
its checkpoint) and ranks the model at each stage end; :func:`subsample_train` gives the runs
of the data axis their subset of the training triples.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..config import Config
from ..data.kg import KG
from ..errors import ConfigError
from ..io import atomic_write_json, load_saved
from ..runs import CHECKPOINT as LAST_CHECKPOINT
from ..runs import load_run, model_from_config
from ..train.trainer import train
from .metrics import rank_metrics

# Keys that do not change what a run computes: where the data lives, how many threads ran it.
IGNORED_KEYS = ("data.data_dir", "train.num_threads")
STAGES_FILE = "stages.json"        # a staged run's results per stage end
SUBSAMPLE_FILE = "subsample.json"  # a data-axis run's subset: fraction, seed, sizes
NO_EARLY_STOP = 10 ** 9            # train.patience of staged runs


def sweep_config(dataset: str, model: str, dim: int, seed: int, max_epochs: Optional[int] = None,
                 threads: int = 0, overrides: Sequence[str] = ()) -> Config:
    """The project's default config with the sweep's dataset, model, ``model.dim`` and ``train.seed``
    (and optionally ``train.max_epochs``, thread count and further ``key=value`` overrides)."""
    config = Config()
    config.data.dataset, config.model.name, config.model.dim, config.train.seed = dataset, model, dim, seed
    if max_epochs is not None:
        config.train.max_epochs = max_epochs
    config.train.num_threads = threads
    config.apply_overrides(list(overrides))
    return config


def run_name(dataset: str, model: str, dim: int, seed: int, suffix: str = "") -> str:
    """``<dataset>-<model>-d<dim>-s<seed><suffix>`` (a dataset path contributes its folder name)."""
    return f"{os.path.basename(os.path.normpath(dataset))}-{model}-d{dim}-s{seed}{suffix}"


def config_differences(wanted: Config, stored: Config, ignore: Sequence[str] = IGNORED_KEYS) -> List[str]:
    """``key: stored -> wanted`` for every key that differs (``ignore`` aside)."""
    left, right = wanted.flat(), stored.flat()
    return [f"{key}: {right.get(key)!r} -> {left.get(key)!r}" for key in sorted(set(left) | set(right))
            if key not in ignore and left.get(key) != right.get(key)]


def ensure_run(config: Config, kg: KG, run_dir: str, progress: bool = False) -> Tuple[object, Dict, str]:
    """(best model, metrics, status) of the run ``config`` in ``run_dir``.

    status ``reused``: the folder held the finished run; ``resumed``: it held an interrupted one
    (``checkpoint.pt``), now finished; ``trained``: trained from scratch. Raises ``ValueError``
    when the folder holds a run of another config.
    """
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path):
        differences = config_differences(config, Config.from_yaml(config_path, run=True))
        if differences:
            raise ConfigError(f"{run_dir} holds a run with another config ({'; '.join(differences)}); "
                             f"remove the folder or choose another runs folder")
    metrics_path = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as handle:
            metrics = json.load(handle)
        status = "reused"
    else:
        resume = os.path.exists(config_path) and os.path.exists(os.path.join(run_dir, LAST_CHECKPOINT))
        metrics = train(config, kg, run_dir, resume=resume, overwrite=not resume, progress=progress)
        status = "resumed" if resume else "trained"
    _, _, model = load_run(run_dir, kg)
    return model, metrics, status


def subsample_train(kg: KG, fraction: float, seed: int) -> KG:
    """``kg`` with a random ``fraction`` of its training triples (drawn with ``seed``); valid, test
    and the filter index (every known triple of the full KG) unchanged."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return kg
    count = max(1, round(fraction * len(kg.train)))
    order = torch.randperm(len(kg.train), generator=torch.Generator().manual_seed(seed))
    subset = kg.train[order[:count].sort().values]
    return dataclasses.replace(kg, name=f"{kg.name}-train{fraction:g}", train=subset, _filter=kg.filter_index)


def fraction_label(fraction: float) -> str:
    """``fraction`` for a folder name: 0.0625 -> ``0p0625``."""
    return f"{fraction:.4g}".replace(".", "p")


def staged_run(config: Config, kg: KG, run_dir: str, epochs: Sequence[int], batch_size: int = 256,
               progress: bool = False) -> List[Dict]:
    """Train ``config`` (early stopping off) up to each of ``epochs`` in turn by resuming, and rank
    the model at each stage end on test; stage results are cached in the folder's stages.json."""
    config.train.patience = NO_EARLY_STOP
    stages_path = os.path.join(run_dir, STAGES_FILE)
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.exists(config_path):
        differences = config_differences(config, Config.from_yaml(config_path, run=True),
                                         ignore=("data.data_dir", "train.num_threads", "train.max_epochs"))
        if differences:
            raise ValueError(f"{run_dir} holds a run with another config ({'; '.join(differences)})")
    stages: Dict[str, Dict] = {}
    if os.path.exists(stages_path):
        with open(stages_path, encoding="utf-8") as handle:
            stages = json.load(handle)
    for target in sorted(epochs):
        if str(target) in stages:
            continue
        checkpoint_path = os.path.join(run_dir, LAST_CHECKPOINT)
        resume = os.path.exists(checkpoint_path)
        if resume:
            reached = load_saved(checkpoint_path, ("state",), "checkpoint", only=("state",))["state"]["epoch"]
            if reached > target:
                raise ValueError(f"{run_dir}: the checkpoint is at epoch {reached}, past the stage {target} that "
                                 f"was never evaluated; remove the folder to rerun the steps axis")
        config.train.max_epochs = target
        train(config, kg, run_dir, resume=resume, overwrite=not resume, progress=progress)
        checkpoint = load_saved(checkpoint_path, ("model", "state"), "checkpoint")
        model = model_from_config(config, kg)
        model.load_state_dict(checkpoint["model"])
        model.eval()
        metrics = rank_metrics(model, kg, "test", batch_size)
        stages[str(target)] = {"epochs": checkpoint["state"]["epoch"], "steps": checkpoint["state"]["step"],
                               **metrics}
        atomic_write_json(stages_path, stages)
    return [stages[str(target)] for target in sorted(epochs)]
