"""Training runs for sweeps: one folder per configuration, reused when finished, resumed when not.

A sweep asks for a run by its config; :func:`ensure_run` trains it into its folder, or, when the
folder already holds a finished run (``metrics.json``) with the same config, loads it instead,
so an interrupted sweep restarts where it stopped. A folder holding a different config is an
error, never silently reused or replaced.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..config import Config
from ..data.kg import KG
from ..errors import ConfigError
from ..runs import CHECKPOINT as LAST_CHECKPOINT
from ..runs import load_run
from ..train.trainer import train

# Keys that do not change what a run computes: where the data lives, how many threads ran it.
IGNORED_KEYS = ("data.data_dir", "train.num_threads")


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
