"""The k-bit sweep's outputs: points.csv / points.json, the frontier per dataset / model, figures and README.md.

Everything here is computed from the sweep's points (see :mod:`.kbit_sweep` for how they are
measured), so a finished sweep can be re-rendered from its ``points.json`` alone
(:func:`rerender`). Per dataset / model, :func:`frontiers` holds the bit-optimal table over all
data types at the main block (:func:`.frontier.bit_optimal_table`) and its summary, over every
budget and over the interior budgets where the 4-bit question is a real trade-off;
:func:`answer_text` and :func:`frontier_verdict` put that summary in words.
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections import defaultdict
from typing import Callable, Dict, List, Sequence

from ..io import atomic_write_json, atomic_write_text
from .frontier import bit_optimal_table, format_bits, frontier_summary
from .plots import frontier_plot, series_plot

CSV_COLUMNS = ("dataset", "model", "method", "sweep", "dim", "seed", "bits", "dtype", "block", "block_width",
               "scale_dtype", "total_bits", "total_bytes", "codes_bytes", "scales_bytes", "metadata_bytes",
               "fp32_bytes", "bits_per_number", "entity_bytes", "entity_fp32_bytes", "relation_bytes", "relation_bits",
               "mrr", "hits@1", "hits@3", "hits@10", "mr", "mean_log_rank", "fp32_mrr", "mrr_ratio_to_fp32",
               "num_queries", "eval_seconds", "train_epochs", "best_epoch", "train_seconds", "run")
BUDGETS_PER_OCTAVE = 2  # memory budgets of the bit-optimal table: 2^(i/2) bits


def _groups(points: Sequence[Dict]) -> Dict[tuple, List[Dict]]:
    """The points per (dataset, model), in the order they were measured."""
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in points:
        groups[(point["dataset"], point["model"])].append(point)
    return groups


def _main_points(points: Sequence[Dict]) -> List[Dict]:
    """Post-training quantisation points of the main sweep (the main block, every dim and k)."""
    return [p for p in points if p["method"] == "ptq" and p["sweep"] == "main"]


def frontiers(points: Sequence[Dict]) -> Dict[str, Dict]:
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
    """README.md of a sweep from its record (points.json's content) and its figures per (dataset, model)."""
    points, settings, prov = record["points"], record["settings"], record["provenance"]
    out = ["# k-bit frontier of KGE tables", "",
           f"Produced by `{prov['command']}` (commit `{prov['commit']}`, {prov['machine']['cpu_cores']} cores, "
           f"torch {prov['machine']['torch']}, {prov['wall_seconds']} s wall, finished {prov['finished']}). "
           "Every number below is computed from `points.json` / `points.csv` beside this file.", "",
           f"Runs: default config except `model.dim` in {settings['dims']} and `train.seed` in {settings['seeds']}"
           + "".join(f" (at dim {dim}: {seeds})" for dim, seeds in sorted(settings.get("dim_seeds", {}).items(),
                                                                     key=lambda item: int(item[0])))
           + ("" if settings["max_epochs"] is None else f", `train.max_epochs={settings['max_epochs']}`")
           + "".join(f", `{o}`" for o in settings.get("overrides", []) if not o.startswith("train.num_threads"))
           + (f"; post-training quantisation of both tables at k in {settings['bits']}"
              if not settings.get("relation_min_bits") else
              f"; post-training quantisation of the entity table at k in {settings['bits']} and of the relation "
              f"table at max(k, {settings['relation_min_bits']})")
           + " with data types "
           f"{settings['dtypes']}, block {settings['block']} numbers per fp16 scale; 16 / 32 = fp16 / fp32 tables. "
           "RotatE's relation phases use a k-bit uniform grid on the circle. Test MRR: "
           + ("OGB's protocol (each query against its own given negatives)"
              if all(str(p["dataset"]).startswith("ogbl-") for p in points) else "filtered, all entities")
           + ", head and tail pooled. Total bits: entity + relation tables as stored (codes + scales + header + "
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




def rerender(out_dir: str) -> None:
    """Re-write README.md and the figures of a finished sweep from its points.json (no training)."""
    with open(os.path.join(out_dir, "points.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    write_outputs(record, out_dir)
    print(f"re-rendered {out_dir} ({len(record['points'])} points)", flush=True)
