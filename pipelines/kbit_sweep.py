"""k-bit sweep: test MRR against total model bits for dims x k x data types x block sizes (issue 5).

    python pipelines/kbit_sweep.py --quick                                # tiny check, < 2 minutes
    python pipelines/kbit_sweep.py --data-dir ../shared/data --threads 2  # codex-s, TransE + RotatE
    python pipelines/kbit_sweep.py --datasets codex-s fb15k-237 wn18rr --qat
    python pipelines/kbit_sweep.py --render results/kbit   # re-write README.md + figures from points.json

For each dataset x model x dim x seed a run is trained with the project's default config except
``model.dim`` and ``train.seed`` into ``runs/kbit/<dataset>-<model>-d<dim>-s<seed>`` (a finished
run there is reused, an interrupted one resumed: the sweep is resumable). Each trained model is
then quantised in memory for every k x data type at the main block size (16 / 32 bits once, as
plain fp16 / fp32), plus a block-size sweep at ``--block-bits`` for one dim, and ranked on test
(filtered, all entities). Total model bits = entity + relation tables as stored: packed codes,
block scales and metadata (header, codebook). ``--qat`` adds quantisation-aware training at low
k (``train.qat_bits``) for one dim, compared with post-training quantisation of the fp32 runs.
The test-ranking time of a 4-bit model is measured against its fp32 model side by side.

Writes ``<out>/points.csv`` and ``points.json`` (every point, the timings and the provenance:
command, commit, machine, wall time), ``frontier-<dataset>-<model>-<dtype>.png`` (MRR against
total bits, one curve per k through the dims, error bars = std over seeds),
``blocks-<dataset>-<model>.png`` and ``README.md`` (tables and the answer to "which (dim, k) is
best at a fixed memory budget", written from the numbers).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
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

from kbit_dgl.data import load_dataset  # noqa: E402
from kbit_dgl.io import atomic_write_json, atomic_write_text  # noqa: E402
from kbit_dgl.provenance import provenance  # noqa: E402
from kbit_dgl.quant import QuantSpec  # noqa: E402
from kbit_dgl.scaling.frontier import bit_optimal_table, format_bits, frontier_summary  # noqa: E402
from kbit_dgl.scaling.kbit import block_sweep_specs, eval_timing, evaluate_specs, spec_key, sweep_specs  # noqa: E402
from kbit_dgl.scaling.plots import frontier_plot, series_plot  # noqa: E402
from kbit_dgl.scaling.runs import ensure_run, run_name, sweep_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV_COLUMNS = ("dataset", "model", "method", "sweep", "dim", "seed", "bits", "dtype", "block", "block_width",
               "scale_dtype", "total_bits", "total_bytes", "codes_bytes", "scales_bytes", "metadata_bytes",
               "fp32_bytes", "bits_per_number", "entity_bytes", "entity_fp32_bytes", "relation_bytes", "relation_bits",
               "mrr", "hits@1", "hits@3", "hits@10", "mr", "mean_log_rank", "fp32_mrr", "mrr_ratio_to_fp32",
               "num_queries", "eval_seconds", "train_epochs", "best_epoch", "train_seconds", "run")
BUDGETS_PER_OCTAVE = 2  # memory budgets of the bit-optimal table: 2^(i/2) bits
QUICK = {"datasets": ["nations"], "dims": [8, 16], "seeds": [0], "max_epochs": 5}


@dataclass
class SweepSettings:
    """What to sweep and where to write; the defaults are the full sweep of issue 5 on codex-s."""

    datasets: List[str] = field(default_factory=lambda: ["codex-s"])
    models: List[str] = field(default_factory=lambda: ["transe", "rotate"])
    dims: List[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
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
    runs_dir: str = os.path.join(ROOT, "runs", "kbit")
    out_dir: str = os.path.join(ROOT, "results", "kbit")
    data_dir: Optional[str] = None
    progress: bool = False

    def resolved(self) -> "SweepSettings":
        dims = sorted(self.dims)
        if self.block_dim is None:
            self.block_dim = dims[-1]
        if self.qat_dim is None:
            self.qat_dim = dims[len(dims) // 2]
        if self.qat and self.relation_min_bits:
            raise ValueError(f"--qat with --relation-bits {self.relation_min_bits}: QAT runs train and keep the "
                             f"relation table at k, so their post-training baselines must too; use --relation-bits 0")
        if self.qat and self.qat_dim not in dims:
            raise ValueError(f"--qat-dim {self.qat_dim} must be one of --dims {dims} (QAT is compared with "
                             f"post-training quantisation of that dim's fp32 runs)")
        return self


def _say(message: str) -> None:
    print(message, flush=True)


# ---- the sweep ---------------------------------------------------------------------------------
def run_sweep(settings: SweepSettings, load_kg: Optional[Callable[[str], object]] = None) -> Dict[str, object]:
    """Train / reuse every run, quantise and rank, then write the outputs; returns points.json's content."""
    started = time.time()
    settings.resolved()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    load_kg = load_kg or (lambda name: load_dataset(name, settings.data_dir))
    suffix = "" if settings.max_epochs is None else f"-e{settings.max_epochs}"
    main_specs = sweep_specs(settings.bits, settings.dtypes, settings.block)
    points: List[Dict] = []
    timings: List[Dict] = []
    for dataset in settings.datasets:
        kg = load_kg(dataset)
        for model_name in settings.models:
            for dim in settings.dims:
                for seed in settings.seeds:
                    points += _sweep_run(settings, kg, dataset, model_name, dim, seed, suffix, main_specs, timings)
            if settings.qat:
                points += _qat_runs(settings, kg, dataset, model_name, suffix, main_specs)
    _attach_fp32_ratios(points)
    record = {"settings": asdict(settings), "points": points, "eval_timing": timings,
              "frontier": _frontiers(points), "provenance": provenance(started)}
    write_outputs(record, settings.out_dir)
    _say(f"{len(points)} points -> {settings.out_dir} ({record['provenance']['wall_seconds']} s)")
    return record


def _sweep_run(settings: SweepSettings, kg, dataset: str, model_name: str, dim: int, seed: int, suffix: str,
               main_specs, timings: List[Dict]) -> List[Dict]:
    config = sweep_config(dataset, model_name, dim, seed, settings.max_epochs, settings.threads, settings.overrides)
    run_dir = os.path.join(settings.runs_dir, run_name(dataset, model_name, dim, seed, suffix))
    clock = time.time()
    model, metrics, status = ensure_run(config, kg, run_dir, settings.progress)
    trained = time.time() - clock
    base = {"dataset": dataset, "model": model_name, "method": "ptq", "sweep": "main", "dim": dim, "seed": seed,
            "train_epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "train_seconds": metrics["train_seconds"], "run": os.path.relpath(run_dir, ROOT)}
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
    if settings.timing and dim == max(settings.dims) and seed == settings.seeds[0]:
        timing = eval_timing(model, kg, QuantSpec(4, "quantile", settings.block), settings.timing_repeats,
                             settings.eval_batch_size)
        timings.append({"dataset": dataset, "model": model_name, "dim": dim, "seed": seed, **timing})
        _say(f"  test ranking time, NF4 / fp32: {timing['ratio_quantized_to_fp32']:.2f} "
             f"({timing['quantized_seconds']:.3f} s / {timing['fp32_seconds']:.3f} s)")
    return points


def _qat_runs(settings: SweepSettings, kg, dataset: str, model_name: str, suffix: str, main_specs) -> List[Dict]:
    """QAT runs at ``qat_dim`` for each k x data type x seed, and PTQ points of the same specs on the
    fp32 runs where the main sweep lacks them."""
    points = []
    measured = {spec_key(spec) for _, spec in main_specs}
    for seed in settings.seeds:
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
                    "run": os.path.relpath(run_dir, ROOT)}
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
                        "run": os.path.relpath(run_dir, ROOT)}
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


def _groups(points: Sequence[Dict]) -> Dict[tuple, List[Dict]]:
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in points:
        groups[(point["dataset"], point["model"])].append(point)
    return groups


def _main_points(points: Sequence[Dict]) -> List[Dict]:
    return [p for p in points if p["method"] == "ptq" and p["sweep"] == "main"]


def _frontiers(points: Sequence[Dict]) -> Dict[str, Dict]:
    """Per dataset / model: the bit-optimal table over all data types at the main block, and its summary."""
    result = {}
    for (dataset, model), members in _groups(_main_points(points)).items():
        table = bit_optimal_table(members, per_octave=BUDGETS_PER_OCTAVE)
        interior = _interior(table, members)
        result[f"{dataset}/{model}"] = {"table": table, "summary": frontier_summary(table),
                                        "interior_budgets": [row["budget_bits"] for row in interior],
                                        "interior_summary": frontier_summary(interior)}
    return result


def _interior(table: Sequence[Dict], points: Sequence[Dict]) -> List[Dict]:
    """Budgets where both choices the LLM question compares exist: at least one 16-bit config fits
    (so the budget could buy a smaller model at high precision) and no 4-bit config is out of reach
    for lack of a larger dim (budget <= the largest 4-bit config's bits), else the budget's winner is
    decided by the edges of the dim grid."""
    sixteen = [p["total_bits"] for p in points if p["bits"] == 16]
    four = [p["total_bits"] for p in points if p["bits"] == 4]
    if not sixteen or not four:
        return list(table)
    low, high = min(sixteen), max(four)
    if low > high:  # the grid of dims has no overlap: every budget is an edge case, judge them all
        return list(table)
    return [row for row in table if low <= row["budget_bits"] <= high]


# ---- outputs -----------------------------------------------------------------------------------
def write_outputs(record: Dict, out_dir: str) -> None:
    """points.csv, points.json, the PNGs and README.md under ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    points = record["points"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(points)
    atomic_write_text(os.path.join(out_dir, "points.csv"), buffer.getvalue())
    atomic_write_json(os.path.join(out_dir, "points.json"), record)
    figures = _plots(points, out_dir)
    atomic_write_text(os.path.join(out_dir, "README.md"), render_readme(record, figures))


def _plots(points: Sequence[Dict], out_dir: str) -> Dict[tuple, List[str]]:
    figures: Dict[tuple, List[str]] = defaultdict(list)
    for (dataset, model), members in _groups(points).items():
        main = _main_points(members)
        for dtype in sorted({p["dtype"] for p in main} - {"fp"}):
            name = f"frontier-{dataset}-{model}-{dtype}.png"
            frontier_plot([p for p in main if p["dtype"] in (dtype, "fp")], os.path.join(out_dir, name),
                          title=f"{dataset} {model}: {dtype} codes, block {main[0]['block']} (16/32: fp)")
            figures[(dataset, model)].append(name)
        block_points = [p for p in members if p["method"] == "ptq" and p["sweep"] in ("main", "block")]
        block_dims = {p["dim"] for p in members if p["sweep"] == "block"}
        if block_dims:
            dim = block_dims.pop()
            bits = next(p["bits"] for p in members if p["sweep"] == "block")
            series = {}
            for dtype in sorted({p["dtype"] for p in members if p["sweep"] == "block"}):
                rows = _mean_by(block_points, lambda p, d=dtype: p["dim"] == dim and p["bits"] == bits
                                and p["dtype"] == d, "block_width")
                series[dtype] = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
            name = f"blocks-{dataset}-{model}.png"
            series_plot(series, os.path.join(out_dir, name), "numbers per scale (block width)", "test MRR",
                        f"{dataset} {model}: dim {dim}, {bits} bits")
            figures[(dataset, model)].append(name)
    return figures


def _mean_by(points: Sequence[Dict], keep: Callable[[Dict], bool], key: str, metric: str = "mrr"):
    """[(key value, mean, std, n)] over the points ``keep`` accepts, sorted by key value."""
    values: Dict[object, List[float]] = defaultdict(list)
    for point in points:
        if keep(point) and point.get(metric) is not None:
            values[point[key]].append(float(point[metric]))
    return [(k, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
            for k, v in sorted(values.items())]


def _pm(mean: float, std: float, n: int, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _cell(points: Sequence[Dict], metric: str = "mrr", **match) -> str:
    """Mean ± std of ``metric`` over the points whose fields equal ``match``; "–" when none."""
    values = [float(p[metric]) for p in points if all(p.get(k) == v for k, v in match.items())]
    if not values:
        return "–"
    return _pm(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def _config_text(row: Dict) -> str:
    kind = "fp" if row["dtype"] == "fp" else row["dtype"]
    return f"dim {row['dim']}, {row['bits']}-bit {kind}"


def frontier_verdict(judged: Dict) -> str:
    """Yes / Partly / No to "does 4 bits win like for LLMs?" from a :func:`frontier_summary`."""
    wins, budgets, most = judged["four_bit_wins"], max(judged["budgets"], 1), judged["most_frequent_bits"]
    if wins * 2 > budgets:
        return "Yes: as for LLMs, 4-bit tables with more dimensions are bit-optimal at most budgets."
    if judged["seeded"] and judged["four_bit_tied"] * 2 > budgets:
        return ("Partly: 4 bits is not the strict winner at most budgets but is statistically "
                "indistinguishable from the winner at most of them.")
    if wins * 2 == budgets or most == 4:
        return (f"Partly: 4 bits wins {wins} of {budgets} budgets, as often as any other k"
                + ("" if judged["seeded"] else " (single seed: near-ties cannot be told from noise)")
                + ", but not at most of them.")
    behind = ("falls measurably behind at most budgets" if judged["seeded"] else
              f"wins {wins} of {budgets} (single seed: the margins have no error bars)")
    return f"No: here k = {most} is bit-optimal most often, and 4 bits {behind}."


def answer_text(table: Sequence[Dict], summary: Dict, interior: Sequence[Dict], interior_summary: Dict) -> str:
    """The plain-words answer for one dataset / model, written from the bit-optimal table."""
    if not table:
        return "No points."
    wins = ", ".join(f"k = {bits} at {count}" for bits, count in
                     sorted(summary["wins_by_bits"].items(), key=lambda item: -item[1]))
    lines = [f"Over {summary['budgets']} memory budgets from {format_bits(table[0]['budget_bits'])} to "
             f"{format_bits(table[-1]['budget_bits'])}, the bit-optimal configuration uses {wins} "
             f"budget(s)."]
    if summary["seeded"]:
        sigma = f"{summary['significance_sigmas']:.0f} standard errors"
        lines.append(f"4 bits is the best choice at {summary['four_bit_wins']} of {summary['budgets']} budgets and "
                     f"within {sigma} (over seeds) of the best at {summary['four_bit_tied']}; the winner beats "
                     f"every other k by at least {sigma} at {summary['clear_wins']}.")
    else:
        lines.append(f"4 bits is the best choice at {summary['four_bit_wins']} of {summary['budgets']} budgets "
                     f"(single seed: no error bars, so near-ties cannot be told from noise).")
    if interior and len(interior) < len(table):
        lines.append(f"In the range where the question is a real trade-off ({format_bits(interior[0]['budget_bits'])}"
                     f" to {format_bits(interior[-1]['budget_bits'])}: a 16-bit model fits and no 4-bit model is "
                     f"cut off by the largest dim of the sweep) 4 bits wins {interior_summary['four_bit_wins']} of "
                     f"{interior_summary['budgets']} budgets"
                     + (f" and ties the best at {interior_summary['four_bit_tied']}" if interior_summary["seeded"]
                        else "") + f"; the most frequent winner there is k = {interior_summary['most_frequent_bits']}.")
    top = table[-1]
    lines.append(f"With the largest budget the best is {_config_text(top)} "
                 f"(MRR {_pm(top['mean'], top['std'], top['num_seeds'])}).")
    verdict = frontier_verdict(interior_summary if interior else summary)
    lines.append(f"**Does 4 bits win like for LLMs?** {verdict}")
    return " ".join(lines)


def _budget_table(table: Sequence[Dict]) -> List[str]:
    lines = ["| budget (bits) | best (dim, k, dtype) | test MRR | its bits | best other k | margin (σ) | "
             "best 4-bit (dim, dtype) | gap to 4-bit |", "|---|---|---|---|---|---|---|---|"]
    for row in table:
        other, four = row["other_k"], row["best_4bit"]
        other_text = f"{other['dim']}, {other['bits']}, {other['dtype']}: {other['mean']:.3f}" if other else "–"
        margin = "–" if row["margin"] is None else f"{row['margin']:+.3f}"
        if row["margin_sigmas"] is not None:
            margin += f" ({row['margin_sigmas']:.1f})"
        four_text = f"{four['dim']}, {four['dtype']}: {four['mean']:.3f}" if four else "–"
        gap = "–" if row["gap_4bit"] is None else f"{row['gap_4bit']:+.3f}"
        lines.append(f"| {format_bits(row['budget_bits'])} | {row['dim']}, {row['bits']}, {row['dtype']} | "
                     f"{_pm(row['mean'], row['std'], row['num_seeds'])} | {format_bits(row['total_bits'])} | "
                     f"{other_text} | {margin} | {four_text} | {gap} |")
    return lines


def render_readme(record: Dict, figures: Dict[tuple, List[str]]) -> str:
    points, settings, prov = record["points"], record["settings"], record["provenance"]
    out = ["# k-bit frontier of KGE tables", "",
           f"Produced by `{prov['command']}` (commit `{prov['commit']}`, {prov['machine']['cpu_cores']} cores, "
           f"torch {prov['machine']['torch']}, {prov['wall_seconds']} s wall, finished {prov['finished']}). "
           "Every number below is computed from `points.json` / `points.csv` beside this file.", "",
           f"Runs: default config except `model.dim` in {settings['dims']} and `train.seed` in {settings['seeds']}"
           + ("" if settings["max_epochs"] is None else f", `train.max_epochs={settings['max_epochs']}`")
           + "".join(f", `{o}`" for o in settings.get("overrides", []) if not o.startswith("train.num_threads"))
           + (f"; post-training quantisation of both tables at k in {settings['bits']}"
              if not settings.get("relation_min_bits") else
              f"; post-training quantisation of the entity table at k in {settings['bits']} and of the relation "
              f"table at max(k, {settings['relation_min_bits']})")
           + " with data types "
           f"{settings['dtypes']}, block {settings['block']} numbers per fp16 scale; 16 / 32 = fp16 / fp32 tables. "
           "RotatE's relation phases use a k-bit uniform grid on the circle. Test MRR: filtered, all entities, "
           "head and tail pooled. Total bits: entity + relation tables as stored (codes + scales + header + "
           "codebook). Error bars and ± are standard deviations over seeds; margins in σ are standard errors "
           "of the difference of the means.", ""]
    for (dataset, model), members in _groups(points).items():
        out += [f"## {dataset} / {model}", ""]
        out += [f"![{name}]({name})" for name in figures.get((dataset, model), [])] + [""]
        main = _main_points(members)
        out += ["### Test MRR by dim and k (main block)", ""]
        dims = sorted({p["dim"] for p in main})
        columns = [(p["bits"], p["dtype"]) for p in main]
        columns = sorted(set(columns), key=lambda c: (c[0], c[1]))
        out += ["| k | dtype | " + " | ".join(f"dim {d}" for d in dims) + " |",
                "|---|---|" + "---|" * len(dims)]
        for bits, dtype in columns:
            cells = [_cell(main, bits=bits, dtype=dtype, dim=dim) for dim in dims]
            out.append(f"| {bits} | {dtype} | " + " | ".join(cells) + " |")
        out += ["", "### 4-bit retention and bytes", "",
                "| dim | dtype | MRR / fp32 MRR | entity table bytes / fp32 bytes |", "|---|---|---|---|"]
        for dim in dims:
            for dtype in settings["dtypes"]:
                kept = [p for p in main if p["dim"] == dim and p["bits"] == 4 and p["dtype"] == dtype
                        and p["mrr_ratio_to_fp32"] is not None]
                if kept:
                    ratios = [p["mrr_ratio_to_fp32"] for p in kept]
                    std = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
                    out.append(f"| {dim} | {dtype} | {_pm(100 * statistics.fmean(ratios), 100 * std, len(ratios), 1)}"
                               f" % | 1/{kept[0]['entity_fp32_bytes'] / kept[0]['entity_bytes']:.2f} |")
        frontier = record["frontier"].get(f"{dataset}/{model}")
        if frontier and len(dims) == 1:
            out += ["", "### Bit-optimal configuration per memory budget", "",
                    f"Not answered here: with one dim ({dims[0]}) every budget's best is simply the largest k "
                    "that fits, so this sweep measures what k bits cost at a fixed size (tables above), not "
                    "which (dim, k) is bit-optimal. That needs a sweep over dims."]
        elif frontier:
            interior = [row for row in frontier["table"] if row["budget_bits"] in frontier["interior_budgets"]]
            out += ["", "### Bit-optimal configuration per memory budget (all data types, main block)", ""]
            out += _budget_table(frontier["table"])
            out += ["", answer_text(frontier["table"], frontier["summary"], interior, frontier["interior_summary"])]
        block_points = [p for p in members if p["sweep"] == "block"]
        if block_points:
            dim, bits = block_points[0]["dim"], block_points[0]["bits"]
            candidates = [p for p in members if p["method"] == "ptq" and p["sweep"] in ("main", "block")
                          and p["dim"] == dim and p["bits"] == bits]
            widths = sorted({p["block_width"] for p in candidates})
            dtypes = sorted({p["dtype"] for p in candidates})
            out += ["", f"### Block size at {bits} bits, dim {dim}", "",
                    "| dtype | " + " | ".join(f"{w} ({'row' if w == dim else 'block'})" for w in widths) + " |",
                    "|---|" + "---|" * len(widths)]
            for dtype in dtypes:
                rows = {r[0]: r for r in _mean_by(candidates, lambda p, t=dtype: p["dtype"] == t, "block_width")}
                bits_per = {p["block_width"]: p["bits_per_number"] for p in candidates if p["dtype"] == dtype}
                out.append(f"| {dtype} | " + " | ".join(
                    f"{_pm(rows[w][1], rows[w][2], rows[w][3])} ({bits_per[w]:.2f} b/number)" if w in rows else "–"
                    for w in widths) + " |")
        qat = [p for p in members if p["method"] == "qat"]
        if qat:
            out += ["", "### Quantisation-aware training vs post-training quantisation", "",
                    "| dim | k | dtype | PTQ test MRR | QAT test MRR | fp32 test MRR |", "|---|---|---|---|---|---|"]
            block = qat[0]["block"]
            for bits, dtype, dim in sorted({(p["bits"], p["dtype"], p["dim"]) for p in qat}):
                same = {"bits": bits, "dtype": dtype, "dim": dim, "block": block}
                out.append(f"| {dim} | {bits} | {dtype} | {_cell(members, method='ptq', **same)} | "
                           f"{_cell(members, method='qat', **same)} | {_cell(main, bits=32, dim=dim)} |")
        out.append("")
    if record["eval_timing"]:
        out += ["## Evaluation time, 4-bit vs fp32", "",
                "Test ranking against all entities, both models measured alternately in one process "
                f"(median of {record['eval_timing'][0]['repeats']} after a warm-up).", "",
                "| dataset | model | dim | fp32 s | 4-bit NF4 s | ratio | table bytes fp32 | table bytes 4-bit |",
                "|---|---|---|---|---|---|---|---|"]
        for t in record["eval_timing"]:
            out.append(f"| {t['dataset']} | {t['model']} | {t['dim']} | {t['fp32_seconds']:.3f} | "
                       f"{t['quantized_seconds']:.3f} | {t['ratio_quantized_to_fp32']:.2f} | "
                       f"{t['fp32_table_bytes']:,} | {t['quantized_table_bytes']:,} |")
        out.append("")
    return "\n".join(out)


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> SweepSettings:
    defaults = SweepSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, help=f"default {defaults.datasets}")
    parser.add_argument("--models", nargs="+", default=defaults.models)
    parser.add_argument("--dims", nargs="+", type=int, default=None, help=f"default {defaults.dims}")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help=f"default {defaults.seeds}")
    parser.add_argument("--bits", nargs="+", type=int, default=defaults.bits)
    parser.add_argument("--dtypes", nargs="+", default=defaults.dtypes)
    parser.add_argument("--block", type=int, default=defaults.block, help="numbers per scale of the main sweep")
    parser.add_argument("--blocks", nargs="+", type=int, default=defaults.blocks, help="block-size sweep")
    parser.add_argument("--block-bits", type=int, default=defaults.block_bits)
    parser.add_argument("--relation-bits", type=int, default=defaults.relation_min_bits, dest="relation_min_bits",
                        help="keep the relation table at max(k, N) bits (kbit-dgl quantize's default is 8); "
                             "0: at k like the entity table (QAT runs always keep k)")
    parser.add_argument("--block-dim", type=int, default=None, help="dim of the block-size sweep (default: largest)")
    parser.add_argument("--qat", action="store_true", help="add quantisation-aware training runs at low k")
    parser.add_argument("--qat-bits", nargs="+", type=int, default=defaults.qat_bits)
    parser.add_argument("--qat-dtypes", nargs="+", default=defaults.qat_dtypes)
    parser.add_argument("--qat-dim", type=int, default=None, help="dim of the QAT runs (default: the middle dim)")
    parser.add_argument("--no-timing", action="store_true", help="skip the 4-bit vs fp32 evaluation timing")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override train.max_epochs (run folders get an -e<N> suffix)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides for every run")
    parser.add_argument("--quick", action="store_true",
                        help="tiny check: nations, dims 8 16, 1 seed, 5 epochs, into runs/kbit-quick and "
                             "results/kbit-quick")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", os.path.join(ROOT, "..", "shared",
                                                                                         "data")))
    parser.add_argument("--runs-dir", default=None, help="default runs/kbit (quick: runs/kbit-quick)")
    parser.add_argument("--out", default=None, help="default results/kbit (quick: results/kbit-quick)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    settings = SweepSettings(
        datasets=args.datasets or quick.get("datasets", defaults.datasets), models=args.models,
        dims=args.dims or quick.get("dims", defaults.dims), seeds=args.seeds or quick.get("seeds", defaults.seeds),
        bits=args.bits, dtypes=args.dtypes, block=args.block, blocks=args.blocks, block_bits=args.block_bits,
        block_dim=args.block_dim, relation_min_bits=args.relation_min_bits, qat=args.qat, qat_bits=args.qat_bits,
        qat_dtypes=args.qat_dtypes,
        qat_dim=args.qat_dim, timing=not args.no_timing,
        max_epochs=args.max_epochs if args.max_epochs is not None else quick.get("max_epochs"),
        threads=args.threads, overrides=args.overrides, data_dir=args.data_dir, progress=args.progress,
        runs_dir=args.runs_dir or os.path.join(ROOT, "runs", "kbit-quick" if args.quick else "kbit"),
        out_dir=args.out or os.path.join(ROOT, "results", "kbit-quick" if args.quick else "kbit"))
    return settings


def rerender(out_dir: str) -> None:
    """Re-write README.md and the figures of a finished sweep from its points.json (no training)."""
    with open(os.path.join(out_dir, "points.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    write_outputs(record, out_dir)
    _say(f"re-rendered {out_dir} ({len(record['points'])} points)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--render"]:
        if len(argv) < 2:
            raise SystemExit("usage: kbit_sweep.py --render OUT_DIR [OUT_DIR ...]")
        for out_dir in argv[1:]:
            rerender(out_dir)
        return
    run_sweep(parse_args(argv))


if __name__ == "__main__":
    main()
