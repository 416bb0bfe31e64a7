"""Scaling laws of KGE quality against model size, data and compute: the sweep that measures them.

Three axes per dataset x model, each point ranked on test (filtered, all entities):

* **dim** (model size): the fp32 runs of the k-bit sweep (:mod:`.kbit_sweep`; same folders,
  reused when finished, trained otherwise), one per dim x seed;
* **data**: a fraction of the training triples (:func:`.runs.subsample_train`) at ``data_dim``,
  with early stopping as usual; fraction 1 is the dim axis's run;
* **steps** (compute): one run per seed at ``steps_dim`` without early stopping, trained in
  stages up to each of ``steps_epochs`` by resuming its checkpoint (:func:`.runs.staged_run`),
  and the model *at* each stage end evaluated (not the best so far).

Quality: test MRR and the mean log filtered rank (:mod:`.metrics`). :func:`run_scaling` measures,
fits (:func:`.law_report.fit_all`) and writes the outputs (:func:`.law_report.write_outputs`);
``pipelines/scaling.py`` is the command line.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from ..data import load_dataset
from ..data.kg import KG
from ..io import atomic_write_json
from ..provenance import project_root, provenance
from .law_report import AXES, fit_all, write_outputs
from .metrics import rank_metrics
from .runs import SUBSAMPLE_FILE, ensure_run, fraction_label, run_name, staged_run, subsample_train, sweep_config


@dataclass
class ScalingSettings:
    """What to measure and where to write; the defaults are the full sweep of issue 5 on codex-s."""

    datasets: List[str] = field(default_factory=lambda: ["codex-s"])
    models: List[str] = field(default_factory=lambda: ["transe", "rotate"])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    axes: List[str] = field(default_factory=lambda: list(AXES))
    dims: List[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    fractions: List[float] = field(default_factory=lambda: [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
    data_dim: int = 128
    steps_dim: int = 128
    steps_seeds: List[int] = field(default_factory=lambda: [0])
    steps_epochs: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 256])
    max_epochs: Optional[int] = None   # override for the dim / data runs (run folders get -e<N>)
    threads: int = 0
    overrides: List[str] = field(default_factory=list)
    eval_batch_size: int = 256
    # the dim axis's runs are the k-bit sweep's fp32 runs (its runs_dir)
    dim_runs_dir: str = field(default_factory=lambda: os.path.join(project_root(), "runs", "kbit"))
    runs_dir: str = field(default_factory=lambda: os.path.join(project_root(), "runs", "scaling"))
    out_dir: str = field(default_factory=lambda: os.path.join(project_root(), "results", "scaling"))
    data_dir: Optional[str] = None
    progress: bool = False


def _say(message: str) -> None:
    print(message, flush=True)


def run_scaling(settings: ScalingSettings, load_kg: Optional[Callable[[str], KG]] = None,
                root: Optional[str] = None) -> Dict[str, object]:
    """Measure every axis, fit, plot and write the outputs; returns points.json's content.

    ``load_kg(name)`` loads a dataset (default: :func:`kbit_dgl.data.load_dataset` from
    ``settings.data_dir``); each point's ``run`` is its run folder relative to ``root`` (default:
    :func:`kbit_dgl.provenance.project_root`).
    """
    started = time.time()
    root = root or project_root()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    load_kg = load_kg or (lambda name: load_dataset(name, settings.data_dir))
    suffix = "" if settings.max_epochs is None else f"-e{settings.max_epochs}"
    points: List[Dict] = []
    for dataset in settings.datasets:
        kg = load_kg(dataset)
        for model_name in settings.models:
            def base_config(dim, seed, overrides=()):
                return sweep_config(dataset, model_name, dim, seed, settings.max_epochs, settings.threads,
                                    list(settings.overrides) + list(overrides))

            def point(axis, x, dim, seed, metrics, run_dir, **extra):
                return {"dataset": dataset, "model": model_name, "axis": axis, "x": x, "dim": dim, "seed": seed,
                        **extra, **{k: metrics[k] for k in ("mrr", "hits@1", "hits@3", "hits@10", "mr",
                                                            "mean_log_rank", "num_queries")},
                        "run": os.path.relpath(run_dir, root)}

            if "dim" in settings.axes:
                for dim in settings.dims:
                    for seed in settings.seeds:
                        run_dir = os.path.join(settings.dim_runs_dir, run_name(dataset, model_name, dim, seed, suffix))
                        model, metrics, status = ensure_run(base_config(dim, seed), kg, run_dir, settings.progress)
                        measured = rank_metrics(model, kg, "test", settings.eval_batch_size)
                        points.append(point("dim", dim, dim, seed, measured, run_dir, fraction=1.0,
                                            epochs=metrics["epochs"], steps=metrics["steps"], num_train=len(kg.train)))
                        _say(f"dim {dim} seed {seed}: {status}, test MRR {measured['mrr']:.4f}")
            if "data" in settings.axes:
                for fraction in settings.fractions:
                    for seed in settings.seeds:
                        subset = subsample_train(kg, fraction, seed)
                        name = run_name(dataset, model_name, settings.data_dim, seed, suffix)
                        if fraction == 1:
                            run_dir = os.path.join(settings.dim_runs_dir, name)
                        else:
                            run_dir = os.path.join(settings.runs_dir, f"{name}-f{fraction_label(fraction)}")
                        model, metrics, status = ensure_run(base_config(settings.data_dim, seed), subset, run_dir,
                                                            settings.progress)
                        if fraction != 1:  # after training: a new run folder starts empty
                            atomic_write_json(os.path.join(run_dir, SUBSAMPLE_FILE),
                                              {"fraction": fraction, "seed": seed, "num_train": len(subset.train),
                                               "num_train_full": len(kg.train)})
                        measured = rank_metrics(model, subset, "test", settings.eval_batch_size)
                        points.append(point("data", fraction, settings.data_dim, seed, measured, run_dir,
                                            fraction=fraction, epochs=metrics["epochs"], steps=metrics["steps"],
                                            num_train=len(subset.train)))
                        _say(f"data {fraction:g} seed {seed}: {status}, test MRR {measured['mrr']:.4f}")
            if "steps" in settings.axes:
                for seed in settings.steps_seeds:
                    config = base_config(settings.steps_dim, seed)
                    name = run_name(dataset, model_name, settings.steps_dim, seed, "-steps")
                    run_dir = os.path.join(settings.runs_dir, name)
                    for stage in staged_run(config, kg, run_dir, settings.steps_epochs, settings.eval_batch_size,
                                            settings.progress):
                        points.append(point("steps", stage["steps"], settings.steps_dim, seed, stage, run_dir,
                                            fraction=1.0, epochs=stage["epochs"], steps=stage["steps"],
                                            num_train=len(kg.train)))
                    _say(f"steps seed {seed}: {len(settings.steps_epochs)} stages, last test MRR "
                         f"{points[-1]['mrr']:.4f}")
    fits = fit_all(points)
    record = {"settings": asdict(settings), "points": points, "provenance": provenance(started)}
    write_outputs(record, fits, settings.out_dir)
    _say(f"{len(points)} points, {len(fits)} fits -> {settings.out_dir} ({record['provenance']['wall_seconds']} s)")
    return record


