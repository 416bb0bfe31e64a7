"""Hyperparameter search with Optuna: every trial a normal run folder, unpromising trials pruned early.

A search space is a YAML mapping of config keys to distributions::

    model.dim: {choices: [100, 200, 400]}
    model.gamma: {low: 3, high: 24, log: true}        # floats (or ints, if both bounds are ints)
    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
    train.adversarial_temperature: {choices: [0.5, 1.0, 2.0]}

Each trial trains ``<out>/trial-NNN`` with the base config plus the sampled values; the trial's
valid MRR at each validation is reported to Optuna's pruner (median of the trials before, at
the same epoch), which stops trials that fall behind. Trials are ranked by the best valid MRR:
test metrics are recorded for the report only. The study lives in ``<out>/study.db`` (SQLite),
so an interrupted search continues where it stopped. At the end ``<out>/best.yaml`` holds the
best trial's resolved config (``kbit-dgl train --config best.yaml`` re-runs it) and
``trials.csv`` / ``README.md`` a table of every trial; with ``baseline`` the base config itself
is trained in ``<out>/defaults`` and the report states the gain over it.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional

from .config import Config, read_yaml
from .data.kg import KG
from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text
from .runs import METRICS, check_config

log = logging.getLogger("kbit_dgl")

#: a general space for distance- and product-based decoders alike (used when no space is given)
DEFAULT_SPACE: Dict[str, Dict[str, Any]] = {
    "model.dim": {"choices": [64, 128, 256, 512]},
    "model.gamma": {"choices": [3.0, 6.0, 9.0, 12.0, 24.0]},
    "train.lr": {"low": 1e-4, "high": 3e-2, "log": True},
    "train.num_negatives": {"choices": [64, 256, 1024]},
    "train.adversarial_temperature": {"choices": [0.5, 1.0, 2.0]},
    "train.regularization": {"choices": [0.0, 1e-5, 1e-4]},
}


def read_space(path: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """The search space in the YAML file ``path`` (None: :data:`DEFAULT_SPACE`), checked."""
    if path is None:
        return check_space(DEFAULT_SPACE, "the default space")
    space = read_yaml(path)
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: expected a mapping of config keys (section.key) to distributions")
    return check_space(space, path)


def check_space(space: Dict[str, Any], source: str) -> Dict[str, Dict[str, Any]]:
    """Refuse unknown keys and malformed distributions before any trial runs."""
    probe = Config()
    for key, spec in space.items():
        probe.set(key, probe.flat().get(key), source)  # unknown keys raise here
        if not isinstance(spec, dict) or not (("choices" in spec and isinstance(spec["choices"], list)
                                               and spec["choices"]) or {"low", "high"} <= set(spec)):
            raise ConfigError(f"{source}: {key} needs {{choices: [...]}} or {{low: L, high: H[, log: true]}}, "
                              f"got {spec!r}")
        if "low" in spec:
            try:
                low, high = (float(spec[bound]) for bound in ("low", "high"))
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: {key} needs numbers for low and high, got {spec!r:.200}") from None
            if not (math.isfinite(low) and math.isfinite(high) and low < high) or (spec.get("log") and low <= 0):
                raise ConfigError(f"{source}: {key} needs finite low < high (and low > 0 with log), got {spec!r}")
    return space


def _suggest(trial, key: str, spec: Dict[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    low, high, use_log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
        return trial.suggest_int(key, low, high, log=use_log)
    return trial.suggest_float(key, float(low), float(high), log=use_log)


def _trial_config(base: Config, values: Dict[str, Any]) -> Config:
    config = Config.from_dict(base.to_dict())
    for key, value in values.items():
        config.set(key, value, "search space")
    return check_config(config)


def tune(base: Config, kg: KG, out: str, space: Dict[str, Dict[str, Any]], trials: int, seed: int = 0,
         baseline: bool = False, timeout: Optional[float] = None, progress: bool = False) -> Dict[str, Any]:
    """Search ``space`` around ``base`` for ``trials`` trials (in total, counting earlier ones in
    ``out``); returns the report (also written to ``out``: best.yaml, trials.csv, README.md, tune.json)."""
    import optuna

    from .train.trainer import train

    check_config(base)
    space = check_space(space, "search space")
    if base.train.num_procs > 1 or "train.num_procs" in space:  # before the folder: nothing is written
        raise ConfigError("tune prunes a trial from its validations, which train.num_procs > 1 cannot report "
                          "(its training processes are forked and cannot call back into the tuner); "
                          "tune with train.num_procs=1, and train the best config with more processes")
    os.makedirs(out, exist_ok=True)
    started = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="kbit-dgl", direction="maximize", storage=f"sqlite:///{os.path.abspath(out)}/study.db",
        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))

    def objective(trial) -> float:
        values = {key: _suggest(trial, key, spec) for key, spec in space.items()}
        config = _trial_config(base, values)
        run_dir = os.path.join(out, f"trial-{trial.number:03d}")
        trial.set_user_attr("run_dir", run_dir)

        def report(epoch: int, valid_mrr: float) -> None:
            trial.report(valid_mrr, epoch)
            if trial.should_prune():
                log.info("trial %d pruned at epoch %d (valid MRR %.4f)", trial.number, epoch, valid_mrr)
                raise optuna.TrialPruned()

        metrics = train(config, kg, run_dir, overwrite=True, progress=progress, on_validation=report)
        trial.set_user_attr("test_mrr", metrics["test"]["mrr"])
        trial.set_user_attr("epochs", metrics["epochs"])
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        return metrics["valid"]["mrr"]

    remaining = trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=())
    defaults = None
    if baseline:
        defaults_dir = os.path.join(out, "defaults")
        if os.path.exists(os.path.join(defaults_dir, METRICS)):
            with open(os.path.join(defaults_dir, METRICS), encoding="utf-8") as handle:
                defaults = json.load(handle)
        else:
            defaults = train(base, kg, defaults_dir, overwrite=True, progress=progress)
    return write_report(study, base, space, out, defaults, time.time() - started)


def trial_rows(study) -> List[Dict[str, Any]]:
    """One row per trial: number, state, sampled values, valid / test MRR, epochs, seconds."""
    rows = []
    for trial in study.trials:
        rows.append({"trial": trial.number, "state": trial.state.name.lower(),
                     "valid_mrr": trial.value if trial.value is not None else
                     (max(trial.intermediate_values.values()) if trial.intermediate_values else None),
                     "test_mrr": trial.user_attrs.get("test_mrr"), "epochs": trial.user_attrs.get("epochs",
                     max(trial.intermediate_values) if trial.intermediate_values else None),
                     "train_seconds": trial.user_attrs.get("train_seconds"), **trial.params})
    return rows


def _study_seconds(study) -> float:
    """Wall seconds from the first trial's start to the last trial's end (over every call that ran trials)."""
    starts = [t.datetime_start for t in study.trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete is not None]
    return round((max(ends) - min(starts)).total_seconds(), 1) if starts and ends else 0.0


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def write_report(study, base: Config, space: Dict[str, Any], out: str, defaults: Optional[Dict[str, Any]],
                 seconds: float) -> Dict[str, Any]:
    """best.yaml, trials.csv, tune.json and README.md in ``out``; returns tune.json's content."""
    rows = trial_rows(study)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ConfigError(f"{out}: no trial finished; nothing to report")
    best = study.best_trial
    best_config = _trial_config(base, best.params)
    atomic_write_text(os.path.join(out, "best.yaml"), best_config.to_yaml())
    columns = ["trial", "state", "valid_mrr", "test_mrr", "epochs", "train_seconds"] + list(space)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(out, "trials.csv"), buffer.getvalue())
    report = {"dataset": base.data.dataset, "model": base.model.name, "trials": len(rows),
              "complete": len(complete), "pruned": sum(row["state"] == "pruned" for row in rows),
              "best_trial": best.number, "best_params": best.params, "best_valid_mrr": best.value,
              "best_test_mrr": best.user_attrs.get("test_mrr"), "space": space, "seconds": round(seconds, 1),
              "study_wall_seconds": _study_seconds(study)}
    if defaults is not None:
        report["defaults"] = {"valid_mrr": defaults["valid"]["mrr"], "test_mrr": defaults["test"]["mrr"],
                              "epochs": defaults["epochs"], "train_seconds": defaults["train_seconds"]}
        report["test_mrr_gain"] = report["best_test_mrr"] - defaults["test"]["mrr"]
    atomic_write_json(os.path.join(out, "tune.json"), report)
    lines = [f"# Tuning {base.model.name} on {base.data.dataset}", "",
             f"{len(rows)} trials ({report['pruned']} pruned by the median rule) in "
             f"{report['study_wall_seconds'] / 60:.0f} minutes, ranked by valid MRR; best trial "
             f"{best.number}: valid MRR {best.value:.4f}, test MRR {_fmt(report['best_test_mrr'])}.", ""]
    if defaults is not None:
        lines += [f"The base config (the defaults plus the fixed settings) gets valid MRR "
                  f"{defaults['valid']['mrr']:.4f}, test MRR {defaults['test']['mrr']:.4f}: the tuned config gains "
                  f"**{report['test_mrr_gain']:+.4f} test MRR**.", ""]
    lines += ["Best values: " + ", ".join(f"`{key}={_fmt(value)}`" for key, value in best.params.items()), "",
              "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in sorted(rows, key=lambda r: -(r["valid_mrr"] or -1)):
        lines.append("| " + " | ".join(_fmt(row.get(column)) for column in columns) + " |")
    atomic_write_text(os.path.join(out, "README.md"), "\n".join(lines) + "\n")
    return report
