"""Scaling laws of KGE quality against model size, data and compute, with validated fits (issue 5).

    python pipelines/scaling.py --quick                                # tiny check, about 2 minutes
    python pipelines/scaling.py --data-dir ../shared/data --threads 2  # codex-s, TransE + RotatE

Three axes per dataset x model, each point ranked on test (filtered, all entities):

* **dim** (model size): the fp32 runs of ``pipelines/kbit_sweep.py`` (same folders, reused when
  finished, trained otherwise), one per dim x seed;
* **data**: a fraction of the training triples (a random subset drawn with the run's seed; valid
  and test unchanged, filtering still against every known triple of the full KG), at
  ``--data-dim``, with early stopping as usual; fraction 1 is the dim axis's run;
* **steps** (compute): one run per seed at ``--steps-dim`` without early stopping, trained in
  stages up to each of ``--steps-epochs`` by resuming its checkpoint (identical to one
  uninterrupted run), and the model *at* each stage end evaluated (not the best so far).

Quality: test MRR and a loss, the **mean log filtered rank** (mean of ln(rank) over test queries,
tail and head pooled; defined for every decoder, independent of the score scale; exp of it is the
geometric mean rank, see kbit_dgl/scaling/metrics.py). Each (axis, metric) gets a saturating
power law y = a x^-b + c and a plain power law y = a x^-b, fitted with scipy on every seed's
point, with standard errors from the covariance; each law is validated by refitting without the
largest x and predicting it. Writes ``<out>/points.csv``, ``points.json`` (with provenance),
``fits.json``, ``<axis>-<dataset>-<model>-<metric>.png`` and ``README.md`` (tables and
sentences generated from the fits).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from kbit_dgl.config import Config  # noqa: E402
from kbit_dgl.data import load_dataset  # noqa: E402
from kbit_dgl.data.kg import KG  # noqa: E402
from kbit_dgl.io import atomic_write_json, atomic_write_text  # noqa: E402
from kbit_dgl.provenance import provenance  # noqa: E402
from kbit_dgl.runs import CHECKPOINT as LAST_CHECKPOINT  # noqa: E402
from kbit_dgl.runs import model_from_config  # noqa: E402
from kbit_dgl.scaling.fit import FitResult, fit_power_law, holdout_error  # noqa: E402
from kbit_dgl.scaling.metrics import rank_metrics  # noqa: E402
from kbit_dgl.scaling.plots import scaling_plot  # noqa: E402
from kbit_dgl.scaling.runs import config_differences, ensure_run, run_name, sweep_config  # noqa: E402
from kbit_dgl.train.trainer import train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AXES = {"dim": "embedding dim (real numbers per entity)", "data": "fraction of training triples",
        "steps": "training steps (batches of positives)"}
METRICS = {"mrr": "test MRR (filtered)", "mean_log_rank": "test mean ln(filtered rank)"}
LAWS = ("saturating", "power_law")
STAGES_FILE = "stages.json"
SUBSAMPLE_FILE = "subsample.json"
NO_EARLY_STOP = 10 ** 9  # train.patience for the steps runs
CSV_COLUMNS = ("dataset", "model", "axis", "x", "dim", "fraction", "seed", "epochs", "steps", "num_train", "mrr",
               "hits@1", "hits@3", "hits@10", "mr", "mean_log_rank", "num_queries", "run")
QUICK = {"datasets": ["nations"], "dims": [8, 16, 32, 64], "seeds": [0], "max_epochs": 5, "data_dim": 16,
         "steps_dim": 16, "steps_epochs": [1, 2, 3, 4, 5]}


@dataclass
class ScalingSettings:
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
    dim_runs_dir: str = os.path.join(ROOT, "runs", "kbit")   # shared with pipelines/kbit_sweep.py
    runs_dir: str = os.path.join(ROOT, "runs", "scaling")
    out_dir: str = os.path.join(ROOT, "results", "scaling")
    data_dir: Optional[str] = None
    progress: bool = False


def _say(message: str) -> None:
    print(message, flush=True)


# ---- data subsets and staged runs --------------------------------------------------------------
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


def _fraction_label(fraction: float) -> str:
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
            reached = torch.load(checkpoint_path, map_location="cpu")["state"]["epoch"]
            if reached > target:
                raise ValueError(f"{run_dir}: the checkpoint is at epoch {reached}, past the stage {target} that "
                                 f"was never evaluated; remove the folder to rerun the steps axis")
        config.train.max_epochs = target
        train(config, kg, run_dir, resume=resume, overwrite=not resume, progress=progress)
        checkpoint = torch.load(checkpoint_path, map_location="cpu")
        model = model_from_config(config, kg)
        model.load_state_dict(checkpoint["model"])
        model.eval()
        metrics = rank_metrics(model, kg, "test", batch_size)
        stages[str(target)] = {"epochs": checkpoint["state"]["epoch"], "steps": checkpoint["state"]["step"],
                               **metrics}
        atomic_write_json(stages_path, stages)
    return [stages[str(target)] for target in sorted(epochs)]


# ---- the sweep ---------------------------------------------------------------------------------
def run_scaling(settings: ScalingSettings, load_kg: Optional[Callable[[str], KG]] = None) -> Dict[str, object]:
    """Measure every axis, fit, plot and write the outputs; returns points.json's content."""
    started = time.time()
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
                        "run": os.path.relpath(run_dir, ROOT)}

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
                            run_dir = os.path.join(settings.runs_dir, f"{name}-f{_fraction_label(fraction)}")
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


def fit_all(points: Sequence[Dict]) -> List[Dict]:
    """Every (dataset, model, axis, metric, law): the fit on all points and its held-out validation
    (or the reason it could not be made)."""
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in points:
        groups[(point["dataset"], point["model"], point["axis"])].append(point)
    fits = []
    for (dataset, model, axis), members in groups.items():
        x = [p["x"] for p in members]
        for metric in METRICS:
            y = [p[metric] for p in members]
            for law in LAWS:
                entry: Dict[str, object] = {"dataset": dataset, "model": model, "axis": axis, "metric": metric,
                                            "law": law, "num_points": len(x), "num_x": len(set(x))}
                try:
                    entry["fit"] = fit_power_law(x, y, law).to_dict()
                except (ValueError, RuntimeError) as error:
                    entry["fit_error"] = str(error)
                try:
                    entry["holdout"] = holdout_error(x, y, law)
                except (ValueError, RuntimeError) as error:
                    entry["holdout_error"] = str(error)
                fits.append(entry)
    return fits


# ---- outputs -----------------------------------------------------------------------------------
def _fit_from_dict(data: Dict) -> FitResult:
    stderr = {k: (math.inf if v is None else v) for k, v in data["stderr"].items()}
    return FitResult(kind=data["kind"], params=data["params"], stderr=stderr, covariance=data["covariance"],
                     num_points=data["num_points"], rmse=data["rmse"])


def write_outputs(record: Dict, fits: List[Dict], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(record["points"])
    atomic_write_text(os.path.join(out_dir, "points.csv"), buffer.getvalue())
    atomic_write_json(os.path.join(out_dir, "points.json"), record)
    atomic_write_json(os.path.join(out_dir, "fits.json"), {"fits": fits, "provenance": record["provenance"]})
    figures = {}
    by_key = {(f["dataset"], f["model"], f["axis"], f["metric"], f["law"]): f for f in fits}
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in record["points"]:
        groups[(point["dataset"], point["model"], point["axis"])].append(point)
    for (dataset, model, axis), members in groups.items():
        for metric, label in METRICS.items():
            laws = {law: _fit_from_dict(by_key[(dataset, model, axis, metric, law)]["fit"]) for law in LAWS
                    if "fit" in by_key[(dataset, model, axis, metric, law)]}
            name = f"{axis}-{dataset}-{model}-{metric}.png"
            scaling_plot([p["x"] for p in members], [p[metric] for p in members], os.path.join(out_dir, name),
                         AXES[axis], label, f"{dataset} {model}: {label} against {axis}", laws,
                         heldout_x=max(p["x"] for p in members))
            figures[(dataset, model, axis, metric)] = name
    atomic_write_text(os.path.join(out_dir, "README.md"), render_readme(record, fits, figures))


def _pm(values: Sequence[float], digits: int = 3) -> str:
    if len(values) > 1:
        return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    return f"{values[0]:.{digits}f}"


def _x_text(axis: str, x: float) -> str:
    return {"dim": f"dim {x:g}", "data": f"fraction {x:g} of the training triples", "steps": f"{x:,.0f} steps"}[axis]


def fit_sentence(entry: Dict) -> str:
    """One sentence on a fit and its held-out validation, from the numbers."""
    what = f"{METRICS[entry['metric']]} against {entry['axis']}"
    if "fit" not in entry:
        return f"{what}, {entry['law']}: no fit ({entry['fit_error']})."
    fit = entry["fit"]
    params, errors = fit["params"], fit["stderr"]

    def value(name: str) -> str:
        error = errors[name]
        return f"{params[name]:.3g} ± {error:.2g}" if error is not None else f"{params[name]:.3g} (error undefined)"

    text = f"{what} follows {fit['formula']} (rmse {fit['rmse']:.3g})"
    if entry["law"] == "saturating":
        gap = 1 - 2 ** -params["b"]
        text += (f": exponent b = {value('b')}, limit c = {value('c')}; each doubling of {entry['axis']} closes "
                 f"{100 * gap:.0f}% of the remaining distance to the limit")
    else:
        text += f": exponent b = {value('b')}; each doubling multiplies it by {2 ** -params['b']:.3f}"
    if not fit["exponent_determined"]:
        text += (" — but these points do not determine the exponent (its standard error is not below |b|), "
                 "so read the law as a description of the measured range only")
    holdout = entry.get("holdout")
    if holdout is None:
        return text + f". No held-out check ({entry.get('holdout_error')})."
    relative = "" if holdout["rel_error"] is None else f", {100 * holdout['rel_error']:.1f}%"
    noise = f", seed std {holdout['observed_std']:.3g}" if holdout["observed_std"] else ""
    return (text + f". Fitted without {_x_text(entry['axis'], holdout['heldout_x'])}, it predicts "
            f"{holdout['predicted']:.4g} there against {holdout['observed']:.4g} measured (error "
            f"{holdout['abs_error']:.3g}{relative}{noise}).")


def _axis_sentences(settings: Dict) -> List[str]:
    """One phrase per axis the run asked for (a dim-only run does not describe data or steps runs)."""
    phrases = {
        "dim": f"**dim** {settings['dims']} (default config otherwise, early stopping on valid MRR)",
        "data": f"**data**: fractions {[round(f, 4) for f in settings['fractions']]} of the training triples at dim "
                f"{settings['data_dim']} (subset drawn with the run's seed; valid/test and the filter unchanged)",
        "steps": f"**steps**: one run per seed in {settings['steps_seeds']} at dim {settings['steps_dim']} without "
                 f"early stopping, evaluated at the end of epochs {settings['steps_epochs']}"}
    return [phrases[axis] for axis in AXES if axis in settings.get("axes", AXES)]


def render_readme(record: Dict, fits: List[Dict], figures: Dict[tuple, str]) -> str:
    prov, settings = record["provenance"], record["settings"]
    out = ["# Scaling of KGE quality with model size, data and training steps", "",
           f"Produced by `{prov['command']}` (commit `{prov['commit']}`, {prov['machine']['cpu_cores']} cores, "
           f"torch {prov['machine']['torch']}, {prov['wall_seconds']} s wall, finished {prov['finished']}). "
           "Numbers come from `points.json` and `fits.json` beside this file; the sentences are generated "
           "from them.", "",
           f"Axes: {'; '.join(_axis_sentences(settings))}. Seeds {settings['seeds']}. "
           "Loss = mean ln(filtered rank) on test (tail and head pooled), defined for every model and "
           "independent of the score scale. Laws: saturating y = a·x^-b + c (b ≥ 0) and plain y = a·x^-b, "
           "least squares on every seed's point, ± = standard errors from the covariance; each validated by "
           "refitting without the largest x and predicting it.", ""]
    by_group: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in record["points"]:
        by_group[(point["dataset"], point["model"])].append(point)
    for (dataset, model), members in by_group.items():
        out += [f"## {dataset} / {model}", ""]
        for axis in AXES:
            axis_points = [p for p in members if p["axis"] == axis]
            if not axis_points:
                continue
            out += [f"### {axis}: {AXES[axis]}", ""]
            out += [f"![{figures[(dataset, model, axis, m)]}]({figures[(dataset, model, axis, m)]})"
                    for m in METRICS if (dataset, model, axis, m) in figures]
            out += ["", "| x | test MRR | mean ln rank | Hits@10 | seeds |", "|---|---|---|---|---|"]
            for x in sorted({p["x"] for p in axis_points}):
                at = [p for p in axis_points if p["x"] == x]
                out.append(f"| {x:g} | {_pm([p['mrr'] for p in at])} | {_pm([p['mean_log_rank'] for p in at])} | "
                           f"{_pm([p['hits@10'] for p in at])} | {len(at)} |")
            out += ["", "| metric | law | fit | held-out x | measured | predicted | abs error | rel error |",
                    "|---|---|---|---|---|---|---|---|"]
            entries = [f for f in fits if (f["dataset"], f["model"], f["axis"]) == (dataset, model, axis)]
            for entry in entries:
                formula = entry["fit"]["formula"] if "fit" in entry else f"failed: {entry['fit_error']}"
                holdout = entry.get("holdout")
                if holdout:
                    rel = "–" if holdout["rel_error"] is None else f"{100 * holdout['rel_error']:.1f}%"
                    check = (f"{holdout['heldout_x']:g} | {holdout['observed']:.4g} | {holdout['predicted']:.4g} | "
                             f"{holdout['abs_error']:.3g} | {rel}")
                else:
                    check = f"– | – | – | {entry.get('holdout_error', '–')} | –"
                out.append(f"| {entry['metric']} | {entry['law']} | {formula} | {check} |")
            out += [""] + [f"- {fit_sentence(entry)}" for entry in entries] + [""]
    return "\n".join(out)


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> ScalingSettings:
    defaults = ScalingSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, help=f"default {defaults.datasets}")
    parser.add_argument("--models", nargs="+", default=defaults.models)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help=f"default {defaults.seeds}")
    parser.add_argument("--axes", nargs="+", choices=list(AXES), default=defaults.axes)
    parser.add_argument("--dims", nargs="+", type=int, default=None, help=f"default {defaults.dims}")
    parser.add_argument("--fractions", nargs="+", type=float, default=defaults.fractions)
    parser.add_argument("--data-dim", type=int, default=None, help=f"default {defaults.data_dim}")
    parser.add_argument("--steps-dim", type=int, default=None, help=f"default {defaults.steps_dim}")
    parser.add_argument("--steps-seeds", nargs="+", type=int, default=defaults.steps_seeds)
    parser.add_argument("--steps-epochs", nargs="+", type=int, default=None,
                        help=f"stage ends of the steps axis, default {defaults.steps_epochs}")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override train.max_epochs of the dim / data runs (folders get an -e<N> suffix)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides for every run")
    parser.add_argument("--quick", action="store_true",
                        help="tiny check: nations, dims 8..64, 1 seed, 5 epochs, into runs/*-quick and "
                             "results/scaling-quick")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", os.path.join(ROOT, "..", "shared",
                                                                                         "data")))
    parser.add_argument("--dim-runs-dir", default=None, help="runs of the dim axis, default runs/kbit (shared with "
                                                            "kbit_sweep.py; quick: runs/kbit-quick)")
    parser.add_argument("--runs-dir", default=None, help="default runs/scaling (quick: runs/scaling-quick)")
    parser.add_argument("--out", default=None, help="default results/scaling (quick: results/scaling-quick)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}

    def pick(name):
        value = getattr(args, name)
        return value if value is not None else quick.get(name, getattr(defaults, name))

    tag = "-quick" if args.quick else ""
    return ScalingSettings(
        datasets=pick("datasets"), models=args.models, seeds=pick("seeds"), axes=args.axes, dims=pick("dims"),
        fractions=args.fractions, data_dim=pick("data_dim"), steps_dim=pick("steps_dim"),
        steps_seeds=args.steps_seeds, steps_epochs=pick("steps_epochs"), max_epochs=pick("max_epochs"),
        threads=args.threads, overrides=args.overrides, data_dir=args.data_dir, progress=args.progress,
        dim_runs_dir=args.dim_runs_dir or os.path.join(ROOT, "runs", "kbit" + tag),
        runs_dir=args.runs_dir or os.path.join(ROOT, "runs", "scaling" + tag),
        out_dir=args.out or os.path.join(ROOT, "results", "scaling" + tag))


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_scaling(parse_args(argv))


if __name__ == "__main__":
    main()
