"""The Python API: the code the ``kbit-dgl`` command runs, callable from a script or a notebook.

    from kbit_dgl import api

    run = api.train(dataset="nations", model="rotate", out="runs/nations", dim=64, max_epochs=50)
    print(run.metrics["test"]["mrr"])
    run.predict("brazil", "embassy", top=5)          # tails of (brazil, embassy, ?) by name
    packed = run.quantize("runs/nations-nf4", bits=4, dtype="quantile")
    packed.evaluate("test")["mrr"]
    run.export("exported/", format="npy")             # DGL-KE's .npy layout with the id maps

A run folder's config.yaml naming its encoder by module path (``model.encoder: pkg.mod:Class``)
is opened only when asked: ``allow_import=["pkg.mod:Class"]`` (or ``register_encoder``), since
importing it runs that module's code; the config given to :func:`train` or :func:`make_config` is
the caller's own and needs no permission.

Overrides are keyword arguments: ``section__key=value`` (``train__batch_size=512``) or a key name
that only one section has (``dim``, ``lr``, ``max_epochs``, ``encoder``, ...). Every function
returns plain data (dicts, lists) or a :class:`Run`, which holds the config, the KG and the model
of a run folder, trained or quantized. (The functions live in ``kbit_dgl.api`` rather than at the
top level because ``kbit_dgl.train``, ``kbit_dgl.predict`` and ``kbit_dgl.export`` name modules;
``kbit_dgl.load_dataset`` and ``kbit_dgl.load_run`` are re-exported there.)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .config import Config, allow_encoder_import
from .data import load_dataset  # noqa: F401  (part of the API)
from .data.kg import KG
from .errors import ConfigError

__all__ = ["Run", "make_config", "train", "load_run", "evaluate", "predict", "predict_many", "quantize", "export",
           "migrate", "load_dataset"]


@dataclass
class Run:
    """A run folder opened: its ``config``, its ``kg`` (with the run's ids), its ``model`` (the best
    model of a trained run, or the packed tables of a quantized one) and ``metrics`` (metrics.json,
    when the run finished)."""

    path: str
    config: Config
    kg: KG
    model: torch.nn.Module
    metrics: Optional[Dict[str, Any]] = None

    @property
    def quantized(self) -> bool:
        from .quant import QuantizedKGEModel

        return isinstance(self.model, QuantizedKGEModel)

    def evaluate(self, split: str = "test", per_relation: bool = False) -> Dict[str, Any]:
        return evaluate(self, split, per_relation)

    def predict(self, relation: str, head: Optional[str] = None, tail: Optional[str] = None,
                top: int = 10, exclude_known: bool = False) -> List[Dict[str, Any]]:
        return predict(self, relation, head=head, tail=tail, top=top, exclude_known=exclude_known)

    def predict_many(self, queries, top: int = 10, **options) -> List[List[Dict[str, Any]]]:
        return predict_many(self, queries, top=top, **options)

    def quantize(self, out: str, bits: int = 4, **options) -> "Run":
        return quantize(self, out, bits, **options)

    def export(self, out: str, format: str = "npy", overwrite: bool = False) -> Dict[str, str]:
        return export(self, out, format, overwrite=overwrite)

    def __repr__(self) -> str:
        kind = "quantized" if self.quantized else "trained"
        mrr = (self.metrics or {}).get("test", {}).get("mrr")
        return (f"Run({self.path!r}, {kind} {self.config.model.name} on {self.kg.name}"
                + (f", test MRR {mrr:.4f}" if mrr is not None else "") + ")")


def _override_key(name: str, config: Config) -> str:
    """``section.key`` for a keyword: ``section__key`` or a key name that exactly one section has."""
    if "__" in name:
        return name.replace("__", ".", 1)
    sections = [section for section, values in config.to_dict().items() if name in values]
    if len(sections) == 1:
        return f"{sections[0]}.{name}"
    if not sections:
        raise ConfigError(f"unknown setting {name!r}; use section__key (e.g. train__lr) with a key of "
                          f"{', '.join(config.to_dict())}")
    raise ConfigError(f"{name!r} is a key of {', '.join(sections)}; say which: "
                      + " or ".join(f"{section}__{name}" for section in sections))


def make_config(dataset: Optional[str] = None, model: Optional[str] = None,
                config: Union[None, str, Dict[str, Any], Config] = None, **overrides: Any) -> Config:
    """A validated :class:`Config`: the defaults, then ``config`` (a YAML path, a dict of sections or
    a Config), then ``dataset``, ``model`` and keyword ``overrides``."""
    from .runs import check_config

    if isinstance(config, Config):
        result = Config.from_dict(config.to_dict())  # a copy: the caller's config stays as it is
    elif isinstance(config, str):
        result = Config.from_yaml(config)
    else:
        result = Config.from_dict(config or {}, "config")
    if dataset is not None:
        result.data.dataset = dataset
    if model is not None:
        result.model.name = model
    for name, value in overrides.items():
        result.set(_override_key(name, result), value, "keyword")
    return check_config(result)


def train(dataset: Optional[str] = None, model: Optional[str] = None, out: Optional[str] = None,
          config: Union[None, str, Dict[str, Any], Config] = None, kg: Optional[KG] = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True, allow_import: Sequence[str] = (),
          **overrides: Any) -> Run:
    """Train a model into the run folder ``out`` (as ``kbit-dgl train``) and return the :class:`Run`.

    ``kg`` reuses a loaded dataset (``dataset`` then only names it in the config); ``resume``
    continues the run in ``out`` (its saved config, with ``overrides`` where a resume may change
    them; ``allow_import``: the ``package.module:Class`` encoder its config.yaml may name). ``out``
    defaults to ``runs/<dataset>-<model>-<time>``.
    """
    from .runs import run_config
    from .train.trainer import train as train_run

    allow_encoder_import(allow_import)
    if resume:
        if out is None:
            raise ConfigError("resume needs out, the run folder to continue")
        cfg = run_config(out)
        for name, value in overrides.items():
            cfg.set(_override_key(name, cfg), value, "keyword")
    else:
        cfg = make_config(dataset if dataset is not None else (kg.name if kg is not None else None), model,
                          config, **overrides)
    if kg is None:
        kg = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.seed)
    if out is None:
        name = os.path.basename(os.path.normpath(cfg.data.dataset))
        out = os.path.join("runs", f"{name}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    metrics = train_run(cfg, kg, out, resume=resume, overwrite=overwrite, progress=progress)
    opened = load_run(out, kg)
    opened.metrics = metrics
    return opened


def load_run(path: str, kg: Optional[KG] = None, device: str = "cpu", allow_import: Sequence[str] = ()) -> Run:
    """Open a run folder, trained or quantized (``kg``: the dataset already loaded, else it is read),
    with the model on ``device`` (``auto``, ``cpu``, ``cuda[:N]``). ``allow_import``: the
    ``package.module:Class`` encoders its config.yaml may name (refused otherwise, before any import)."""
    from .runs import METRICS, load_any_run

    allow_encoder_import(allow_import)
    config, kg, model = load_any_run(path, kg, device=device)
    metrics_path = os.path.join(path, METRICS)
    metrics = None
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as handle:
            metrics = json.load(handle)
    return Run(path, config, kg, model, metrics)


def _open(run: Union[Run, str], allow_import: Sequence[str] = ()) -> Run:
    return run if isinstance(run, Run) else load_run(run, allow_import=allow_import)


def evaluate(run: Union[Run, str], split: str = "test", per_relation: bool = False,
             allow_import: Sequence[str] = ()) -> Dict[str, Any]:
    """Metrics of ``split`` under the run's protocol (filtered or OGB), with ``eval_seconds`` and,
    for a quantized run, its bytes (``quant``)."""
    from .eval import evaluate as evaluate_model

    run = _open(run, allow_import)
    started = time.perf_counter()
    metrics = evaluate_model(run.model, run.kg, split, run.config.eval.protocol, run.config.eval.batch_size,
                             per_relation)
    metrics["eval_seconds"] = round(time.perf_counter() - started, 3)
    if run.quantized:
        metrics["quant"] = {"entity": run.model.entity.spec.to_dict(), "relation": run.model.relation.spec.to_dict(),
                            **run.model.byte_report()["all"]}
    return metrics


def predict(run: Union[Run, str], relation: str, head: Optional[str] = None, tail: Optional[str] = None,
            top: int = 10, exclude_known: bool = False, allow_import: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Top ``top`` answers to (head, relation, ?) or (?, relation, tail) by name; each row has
    ``entity``, ``id``, ``score`` and ``known`` (the splits that hold the triple).
    ``exclude_known=True`` leaves the triples already in the KG out."""
    if (head is None) == (tail is None):
        raise ConfigError("give exactly one of head (predict tails) or tail (predict heads)")
    return predict_many(run, [(head, relation, tail)], top=top, exclude_known=exclude_known,
                        allow_import=allow_import)[0]


def predict_many(run: Union[Run, str], queries: Sequence[Tuple[Optional[str], str, Optional[str]]], top: int = 10,
                 exclude_known: bool = False, batch_size: int = 256,
                 sources: Optional[Sequence[str]] = None,
                 allow_import: Sequence[str] = ()) -> List[List[Dict[str, Any]]]:
    """Answers to many (head, relation, None) / (None, relation, tail) queries, scored in batches
    (a k-bit run from its packed codes): one list of rows (as :func:`predict`'s) per query.
    ``sources`` names each query's origin in errors (``kbit-dgl predict --queries`` passes file lines)."""
    from .predict import predict_many as answer

    run = _open(run, allow_import)
    return answer(run.model, run.kg, queries, top, batch_size=batch_size, exclude_known=exclude_known,
                  sources=sources)


def quantize(run: Union[Run, str], out: str, bits: int = 4, dtype: str = "int", block: Optional[int] = None,
             scale_dtype: str = "fp16", relation_bits: Optional[int] = None, overwrite: bool = False,
             allow_import: Sequence[str] = ()) -> Run:
    """Pack a trained run's tables at ``bits`` into the run folder ``out`` (as ``kbit-dgl quantize``)
    and return it opened. ``relation_bits`` defaults to max(bits, 8) (``bits`` for a QAT run); ``block``
    to 64 numbers per scale, or for ``dtype="pq"`` to sub-vectors of 8 // bits numbers."""
    from .quant import QuantSpec
    from .quant.quantizers import default_block
    from .runs import quantize_run, relation_spec_for_run

    allow_encoder_import(allow_import)
    run_dir = run.path if isinstance(run, Run) else run
    kg = run.kg if isinstance(run, Run) else None
    spec = QuantSpec(bits, dtype, default_block(dtype, bits) if block is None else block, scale_dtype)
    quantize_run(run_dir, out, spec, overwrite=overwrite,
                 relation_spec=relation_spec_for_run(run_dir, spec, relation_bits))
    return load_run(out, kg)


def export(run: Union[Run, str], out: str, format: str = "npy", overwrite: bool = False,
           allow_import: Sequence[str] = ()) -> Dict[str, str]:
    """Write the run's entity and relation embeddings with their names to the folder ``out``; see
    :func:`kbit_dgl.export.export_embeddings`. ``out`` may not be a run folder; one that already holds
    files needs ``overwrite``. Returns ``{what: path}``."""
    from .export import export_embeddings
    from .runs import check_output_folder

    check_output_folder(out, overwrite)  # before the run is opened
    run = _open(run, allow_import)
    return export_embeddings(run.model, run.kg, run.config, out, format, overwrite=overwrite)


def migrate(folder: str) -> List[str]:
    """Rewrite the pickled model files of ``folder`` (written by kbit-dgl < 0.2) in the safe format; returns
    the paths converted. It unpickles them, which runs any code they hold: only for folders you trust.
    See :mod:`kbit_dgl.migrate`."""
    from .migrate import migrate_folder

    return migrate_folder(folder)
