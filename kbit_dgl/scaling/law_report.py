"""The scaling sweep's analysis and outputs: a fit per (axis, metric, law), points.csv / points.json,
fits.json, one figure per (axis, metric) and README.md with sentences generated from the fits.

Each (dataset, model, axis, metric) gets a saturating power law y = a x^-b + c and a plain power
law y = a x^-b (:func:`.fit.fit_power_law`), fitted on every seed's point, with standard errors
from the covariance, and validated by refitting without the largest x and predicting it
(:func:`.fit.holdout_error`). The points come from :mod:`.law_sweep`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections import defaultdict
from typing import Dict, List, Sequence

from ..io import atomic_write_json, atomic_write_text
from .fit import FitResult, fit_power_law, holdout_error
from .plots import scaling_plot

AXES = {"dim": "embedding dim (real numbers per entity)", "data": "fraction of training triples",
        "steps": "training steps (batches of positives)"}
METRICS = {"mrr": "test MRR (filtered)", "mean_log_rank": "test mean ln(filtered rank)"}
LAWS = ("saturating", "power_law")
CSV_COLUMNS = ("dataset", "model", "axis", "x", "dim", "fraction", "seed", "epochs", "steps", "num_train", "mrr",
               "hits@1", "hits@3", "hits@10", "mr", "mean_log_rank", "num_queries", "run")


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


def _fit_from_dict(data: Dict) -> FitResult:
    """A :class:`FitResult` back from its ``to_dict()`` form (None standard errors: infinite)."""
    stderr = {k: (math.inf if v is None else v) for k, v in data["stderr"].items()}
    return FitResult(kind=data["kind"], params=data["params"], stderr=stderr, covariance=data["covariance"],
                     num_points=data["num_points"], rmse=data["rmse"])


def write_outputs(record: Dict, fits: List[Dict], out_dir: str) -> None:
    """points.csv, points.json, fits.json, a figure per (dataset, model, axis, metric) and README.md."""
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
    """README.md of a scaling sweep from its record, its fits and its figure names."""
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


