"""The k-bit sweep: test MRR against total model bits for dims x k x data types x block sizes.

For each dataset x model x dim x seed a run is trained with the project's default config except
``model.dim`` and ``train.seed`` into ``<runs_dir>/<dataset>-<model>-d<dim>-s<seed>`` (a finished
run there is reused, an interrupted one resumed: the sweep is resumable, :func:`.runs.ensure_run`).
Each trained model is then quantised in memory for every k x data type at the main block size
(16 / 32 bits once, as plain fp16 / fp32), plus a block-size sweep at ``block_bits`` for one dim,
and ranked on test (filtered, all entities; :func:`.kbit.evaluate_specs`). Total model bits =
entity + relation tables as stored: packed codes, block scales and metadata (header, codebook).
``qat`` adds quantisation-aware training at low k (``train.qat_bits``) for one dim, compared with
post-training quantisation of the fp32 runs. The test-ranking time of a 4-bit model is measured
against its fp32 model side by side (:func:`.kbit.eval_timing`).

:func:`run_sweep` returns the record written to ``points.json``; :mod:`.kbit_report` writes it
with the figures and README.md. ``pipelines/kbit_sweep.py`` is the command line.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..data import load_dataset
from ..provenance import project_root, provenance
from ..quant import QuantSpec
from ..runs import kg_fingerprint
from .kbit import block_sweep_specs, eval_timing, evaluate_specs, spec_key, sweep_specs
from .kbit_report import frontiers, write_outputs
from .runs import ensure_run, run_name, sweep_config


@dataclass
class SweepSettings:
    """What to sweep and where to write; the defaults are the full sweep of issue 5 on codex-s."""

    datasets: List[str] = field(default_factory=lambda: ["codex-s"])
    models: List[str] = field(default_factory=lambda: ["transe", "rotate"])
    dims: List[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    # per-dim seeds where they differ from ``seeds`` (e.g. 3 seeds of the cheap dim, 1 of the costly ones)
    dim_seeds: Dict[int, List[int]] = field(default_factory=dict)
    bits: List[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 8, 16, 32])
    dtypes: List[str] = field(default_factory=lambda: ["int", "float", "quantile"])
    block: int = 64
    blocks: List[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024])
    block_bits: int = 4
    relation_min_bits: int = 0         # 0: relation table at k like the entities; N: at max(k, N)
    block_dim: Optional[int] = None    # default: the largest dim
    qat: bool = False
    qat_bits: List[int] = field(default_factory=lambda: [2, 3])
    qat_dtypes: List[str] = field(default_factory=lambda: ["int"])
    qat_dim: Optional[int] = None      # default: the middle dim
    timing: bool = True
    timing_repeats: int = 3
    max_epochs: Optional[int] = None   # None: the default config's (early stopping on valid MRR)
    threads: int = 0
    overrides: List[str] = field(default_factory=list)
    eval_batch_size: int = 256
    runs_dir: str = field(default_factory=lambda: os.path.join(project_root(), "runs", "kbit"))
    out_dir: str = field(default_factory=lambda: os.path.join(project_root(), "results", "kbit"))
    data_dir: Optional[str] = None
    progress: bool = False
    # points.json files of earlier sweeps: a (dataset, model, dim, seed) found there is taken as it is
    # (no run folder needed), once its settings and data fingerprint match this sweep's
    reuse_points: List[str] = field(default_factory=list)

    def seeds_of(self, dim: int) -> List[int]:
        """The seeds trained at ``dim``: ``dim_seeds[dim]`` where given, else ``seeds``."""
        return list(self.dim_seeds.get(dim, self.seeds))

    def resolved(self) -> "SweepSettings":
        """Fill in ``block_dim`` / ``qat_dim`` and refuse settings the QAT comparison cannot honour."""
        dims = sorted(self.dims)
        if self.block_dim is None:
            self.block_dim = dims[-1]
        if self.qat_dim is None:
            self.qat_dim = dims[len(dims) // 2]
        self.dim_seeds = {int(dim): list(seeds) for dim, seeds in self.dim_seeds.items()}
        unknown = sorted(set(self.dim_seeds) - set(dims))
        if unknown:
            raise ValueError(f"dim_seeds names dims {unknown} that are not swept (dims {dims})")
        if any(not seeds for seeds in self.dim_seeds.values()):
            raise ValueError(f"dim_seeds gives a dim no seed: {self.dim_seeds}")
        if self.qat and self.relation_min_bits:
            raise ValueError(f"--qat with --relation-bits {self.relation_min_bits}: QAT runs train and keep the "
                             f"relation table at k, so their post-training baselines must too; use --relation-bits 0")
        if self.qat and self.qat_dim not in dims:
            raise ValueError(f"--qat-dim {self.qat_dim} must be one of --dims {dims} (QAT is compared with "
                             f"post-training quantisation of that dim's fp32 runs)")
        return self


def parse_dim_seeds(items: Sequence[str]) -> Dict[int, List[int]]:
    """``["125=0,1,2", "500=0"]`` (the command line's ``--dim-seeds``) -> ``{125: [0, 1, 2], 500: [0]}``."""
    parsed: Dict[int, List[int]] = {}
    for item in items:
        dim, sep, seeds = item.partition("=")
        try:
            if not sep:
                raise ValueError
            parsed[int(dim)] = [int(seed) for seed in seeds.split(",")]
        except ValueError:
            raise ValueError(f"--dim-seeds {item!r}: expected DIM=SEED[,SEED...], e.g. 125=0,1,2") from None
    return parsed


def _say(message: str) -> None:
    print(message, flush=True)


def run_sweep(settings: SweepSettings, load_kg: Optional[Callable[[str], object]] = None,
              root: Optional[str] = None) -> Dict[str, object]:
    """Train / reuse every run, quantise and rank, then write the outputs; returns points.json's content.

    ``load_kg(name)`` loads a dataset (default: :func:`kbit_dgl.data.load_dataset` from
    ``settings.data_dir``); each point's ``run`` is its run folder relative to ``root`` (default:
    :func:`kbit_dgl.provenance.project_root`).
    """
    started = time.time()
    root = root or project_root()
    settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    load_kg = load_kg or (lambda name: load_dataset(name, settings.data_dir))
    suffix = "" if settings.max_epochs is None else f"-e{settings.max_epochs}"
    main_specs = sweep_specs(settings.bits, settings.dtypes, settings.block)
    points: List[Dict] = []
    timings: List[Dict] = []
    reused = load_reused_points(settings)
    for dataset in settings.datasets:
        kg = load_kg(dataset)
        fingerprint = data_fingerprint(kg)
        for model_name in settings.models:
            for dim in settings.dims:
                for seed in settings.seeds_of(dim):
                    key = (dataset, model_name, dim, seed)
                    if key in reused:
                        points += _reused_run(settings, key, reused[key], main_specs, fingerprint)
                        continue
                    new = _sweep_run(settings, kg, dataset, model_name, dim, seed, suffix, main_specs, timings, root)
                    points += [{**point, "data_fingerprint": fingerprint} for point in new]
            if settings.qat:
                points += [{**point, "data_fingerprint": fingerprint}
                           for point in _qat_runs(settings, kg, dataset, model_name, suffix, main_specs, root)]
    _attach_fp32_ratios(points)
    record = {"settings": asdict(settings), "points": points, "eval_timing": timings,
              "frontier": frontiers(points), "provenance": provenance(started)}
    write_outputs(record, settings.out_dir)
    _say(f"{len(points)} points -> {settings.out_dir} ({record['provenance']['wall_seconds']} s)")
    return record


def data_fingerprint(kg) -> str:
    """What a point was measured on: the id maps, every split's triples (the filter reads them all) and
    the test split's OGB candidates; 16 hex digits of their SHA-256."""
    digest = hashlib.sha256(kg_fingerprint(kg).encode())
    tensors = [kg.train, kg.valid, kg.test]
    tensors += [kg.negatives.get("test", {})[side] for side in sorted(kg.negatives.get("test", {}))]
    for tensor in tensors:
        array = tensor.contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


# what a point depends on besides its (dataset, model, dim, seed) and data: a reused file must agree
_POINT_SETTINGS = ("overrides", "max_epochs", "block", "relation_min_bits")


def load_reused_points(settings: SweepSettings) -> Dict[Tuple, List[Dict]]:
    """The points of ``settings.reuse_points`` by (dataset, model, dim, seed), after checking that each
    file was swept with the settings that shape a point (``_POINT_SETTINGS``) as this sweep is."""
    reused: Dict[Tuple, List[Dict]] = {}
    for path in settings.reuse_points:
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            theirs, points = record["settings"], record["points"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"--reuse-points {path}: not a k-bit sweep's points.json ({error})") from None
        for name in _POINT_SETTINGS:
            mine = getattr(settings, name)
            if theirs.get(name) != mine:
                raise ValueError(f"--reuse-points {path}: swept with {name}={theirs.get(name)!r}, this sweep has "
                                 f"{mine!r}; its points would not be comparable")
        for point in points:
            if point.get("method") == "ptq":
                key = (point["dataset"], point["model"], point["dim"], point["seed"])
                reused.setdefault(key, []).append({**point, "reused_from": path})
    return reused


def _reused_run(settings: SweepSettings, key: Tuple, points: List[Dict], main_specs, fingerprint: str) -> List[Dict]:
    """The points of one run taken from an earlier sweep: every main spec must be there, measured on
    data with this sweep's fingerprint."""
    dataset, model_name, dim, seed = key
    source = points[0]["reused_from"]
    wrong = {point.get("data_fingerprint") for point in points} - {fingerprint}
    if None in wrong:
        raise ValueError(f"--reuse-points {source}: the points of {dataset} {model_name} d{dim} s{seed} carry no "
                         f"data fingerprint (a sweep from before fingerprints), so other data cannot be ruled out; "
                         f"this sweep's data: {fingerprint}")
    if wrong:
        raise ValueError(f"--reuse-points {source}: the points of {dataset} {model_name} d{dim} s{seed} were measured "
                         f"on other data (fingerprint {', '.join(sorted(map(str, wrong)))}, this sweep's data: "
                         f"{fingerprint})")
    if dim == settings.block_dim and settings.blocks:
        raise ValueError(f"--reuse-points {source}: d{dim} is this sweep's block-size dim; its block sweep "
                         f"needs the run")
    by_spec = {(p["dtype"], p["bits"], p["block"], p["scale_dtype"]): p for p in points if p["sweep"] == "main"}
    wanted = [(label, spec.bits, spec.block, spec.scale_dtype) for label, spec in main_specs]
    missing = [f"{label} k={bits} block {block}" for label, bits, block, _ in wanted
               if (label, bits, block, _) not in by_spec]
    if missing:
        raise ValueError(f"--reuse-points {source}: {dataset} {model_name} d{dim} s{seed} lacks {', '.join(missing)}")
    _say(f"{dataset}-{model_name}-d{dim}-s{seed}: {len(wanted)} points reused from {source}")
    if settings.timing and dim == max(settings.dims) and seed == settings.seeds_of(dim)[0]:
        _say("  test ranking time not measured: it needs the run, and this dim's points were reused")
    return [by_spec[spec] for spec in wanted]


def _sweep_run(settings: SweepSettings, kg, dataset: str, model_name: str, dim: int, seed: int, suffix: str,
               main_specs, timings: List[Dict], root: str) -> List[Dict]:
    """The main and block-size points of one fp32 run (trained or reused), and its timing when due."""
    config = sweep_config(dataset, model_name, dim, seed, settings.max_epochs, settings.threads, settings.overrides)
    run_dir = os.path.join(settings.runs_dir, run_name(dataset, model_name, dim, seed, suffix))
    clock = time.time()
    model, metrics, status = ensure_run(config, kg, run_dir, settings.progress)
    trained = time.time() - clock
    base = {"dataset": dataset, "model": model_name, "method": "ptq", "sweep": "main", "dim": dim, "seed": seed,
            "train_epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "run": os.path.relpath(run_dir, root)}
    clock = time.time()
    points = evaluate_specs(model, kg, main_specs, base, run_dir, settings.eval_batch_size,
                            relation_min_bits=settings.relation_min_bits)
    if dim == settings.block_dim:
        specs = block_sweep_specs(settings.block_bits, settings.dtypes, settings.blocks, model.decoder.entity_dim,
                                  skip_blocks=[settings.block])
        points += evaluate_specs(model, kg, specs, {**base, "sweep": "block"}, run_dir, settings.eval_batch_size,
                                  relation_min_bits=settings.relation_min_bits)
    evaluated = time.time() - clock
    best = {p["bits"]: p["mrr"] for p in points if p["dtype"] in ("fp", "quantile") and p["sweep"] == "main"}
    _say(f"{os.path.basename(run_dir)}: {status} ({trained:.0f} s, {metrics['epochs']} epochs), "
         f"{len(points)} points ({evaluated:.0f} s); test MRR fp32 {best.get(32, float('nan')):.4f}, "
         f"NF4 {best.get(4, float('nan')):.4f}")
    if settings.timing and dim == max(settings.dims) and seed == settings.seeds_of(dim)[0]:
        timing = eval_timing(model, kg, QuantSpec(4, "quantile", settings.block), settings.timing_repeats,
                             settings.eval_batch_size)
        timings.append({"dataset": dataset, "model": model_name, "dim": dim, "seed": seed, **timing})
        _say(f"  test ranking time, NF4 / fp32: {timing['ratio_quantized_to_fp32']:.2f} "
             f"({timing['quantized_seconds']:.3f} s / {timing['fp32_seconds']:.3f} s)")
    return points


def _qat_runs(settings: SweepSettings, kg, dataset: str, model_name: str, suffix: str, main_specs,
              root: str) -> List[Dict]:
    """QAT runs at ``qat_dim`` for each k x data type x seed, and PTQ points of the same specs on the
    fp32 runs where the main sweep lacks them."""
    points = []
    measured = {spec_key(spec) for _, spec in main_specs}
    for seed in settings.seeds_of(settings.qat_dim):
        extra = [(dtype, QuantSpec(bits, dtype, settings.block)) for bits in settings.qat_bits
                 for dtype in settings.qat_dtypes if spec_key(QuantSpec(bits, dtype, settings.block)) not in measured]
        if extra:  # post-training quantisation of the fp32 run with the QAT specs
            config = sweep_config(dataset, model_name, settings.qat_dim, seed, settings.max_epochs, settings.threads,
                                  settings.overrides)
            run_dir = os.path.join(settings.runs_dir, run_name(dataset, model_name, settings.qat_dim, seed, suffix))
            model, metrics, _ = ensure_run(config, kg, run_dir, settings.progress)
            base = {"dataset": dataset, "model": model_name, "method": "ptq", "sweep": "qat-ptq",
                    "dim": settings.qat_dim, "seed": seed, "train_epochs": metrics["epochs"],
                    "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
                    "run": os.path.relpath(run_dir, root)}
            points += evaluate_specs(model, kg, extra, base, run_dir, settings.eval_batch_size)  # no --qat with
            # --relation-bits (refused in resolved()): QAT and its baselines keep the relation table at k
        for bits in settings.qat_bits:
            for dtype in settings.qat_dtypes:
                overrides = list(settings.overrides) + [f"train.qat_bits={bits}", f"train.qat_dtype={dtype}",
                                                        f"train.qat_block={settings.block}"]
                config = sweep_config(dataset, model_name, settings.qat_dim, seed, settings.max_epochs,
                                      settings.threads, overrides)
                name = run_name(dataset, model_name, settings.qat_dim, seed, f"{suffix}-qat{bits}{dtype}")
                run_dir = os.path.join(settings.runs_dir, name)
                clock = time.time()
                model, metrics, status = ensure_run(config, kg, run_dir, settings.progress)
                base = {"dataset": dataset, "model": model_name, "method": "qat", "sweep": "qat",
                        "dim": settings.qat_dim, "seed": seed, "train_epochs": metrics["epochs"],
                        "best_epoch": metrics["best_epoch"], "train_seconds": metrics["train_seconds"],
                        "run": os.path.relpath(run_dir, root)}
                new = evaluate_specs(model, kg, [(dtype, QuantSpec(bits, dtype, settings.block))], base, run_dir,
                                     settings.eval_batch_size)
                points += new
                _say(f"{name}: {status} ({time.time() - clock:.0f} s), QAT test MRR {new[0]['mrr']:.4f}")
    return points


def _attach_fp32_ratios(points: List[Dict]) -> None:
    """``fp32_mrr`` (the same dataset / model / dim / seed at 32 bits, PTQ) and the ratio to it."""
    reference = {(p["dataset"], p["model"], p["dim"], p["seed"]): p["mrr"] for p in points
                 if p["method"] == "ptq" and p["bits"] == 32}
    for point in points:
        fp32 = reference.get((point["dataset"], point["model"], point["dim"], point["seed"]))
        point["fp32_mrr"] = fp32
        point["mrr_ratio_to_fp32"] = None if not fp32 else point["mrr"] / fp32


