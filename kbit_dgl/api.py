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

__all__ = ["Run", "make_config", "resume_config", "train", "train_folder", "load_run", "evaluate", "evaluate_folder",
           "predict", "predict_many", "read_queries", "check_output_file", "quantize", "quantize_folder", "export",
           "migrate", "partition", "serve_distdgl", "launched_by_distdgl", "train_distdgl", "read_space", "tune",
           "load_dataset"]


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


def _apply(result: Config, dataset: Optional[str], model: Optional[str], sets: Sequence[str],
           overrides: Dict[str, Any]) -> Config:
    """``dataset``, ``model``, keyword ``overrides``, then ``section.key=value`` strings ``sets``, onto ``result``."""
    if dataset is not None:
        result.data.dataset = dataset
    if model is not None:
        result.model.name = model
    for name, value in overrides.items():
        result.set(_override_key(name, result), value, "keyword")
    result.apply_overrides(list(sets))
    return result


def _build_config(dataset: Optional[str], model: Optional[str], config: Union[None, str, Dict[str, Any], Config],
                  sets: Sequence[str], overrides: Dict[str, Any]) -> Config:
    """:func:`make_config` before it is checked (``kbit-dgl partition`` reads only the data section)."""
    if isinstance(config, Config):
        result = Config.from_dict(config.to_dict())  # a copy: the caller's config stays as it is
    elif isinstance(config, str):
        result = Config.from_yaml(config)
    else:
        result = Config.from_dict(config or {}, "config")
    named = result.model.encoder if isinstance(config, str) else None
    result = _apply(result, dataset, model, sets, overrides)
    if named and result.model.encoder == named:
        from .config import check_encoder_import
        from .runs import is_run_folder

        if is_run_folder(os.path.dirname(os.path.abspath(config))):  # a run folder's config.yaml, even as
            check_encoder_import(result, config)  # --config: its encoder is imported only with --allow-import
    return result


def make_config(dataset: Optional[str] = None, model: Optional[str] = None,
                config: Union[None, str, Dict[str, Any], Config] = None, sets: Sequence[str] = (),
                **overrides: Any) -> Config:
    """A validated :class:`Config`: the defaults, then ``config`` (a YAML path, a dict of sections or
    a Config), then ``dataset``, ``model``, keyword ``overrides`` and last ``sets``, strings
    ``section.key=value`` with YAML values (``kbit-dgl``'s ``--set``). This is the one config builder:
    ``kbit-dgl train --config F --dataset D --model M --data-dir R --encoder E --set K=V`` is
    ``make_config(D, M, F, sets=[K=V], data__data_dir=R, model__encoder=E)``."""
    from .runs import check_config

    return check_config(_build_config(dataset, model, config, sets, overrides))


def resume_config(out: str, sets: Sequence[str] = (), **overrides: Any) -> Config:
    """The config that continues the run in the folder ``out``: its config.yaml, then keyword
    ``overrides`` and ``sets`` (as :func:`make_config`'s), validated. The one resume path (the
    API's ``train(resume=True)`` and ``kbit-dgl train --resume``); the trainer then refuses a change
    the checkpoint cannot honour (:func:`kbit_dgl.train.trainer.resume_changes`)."""
    from .runs import check_config, run_config

    if out is None:
        raise ConfigError("resume needs out, the run folder to continue")
    return check_config(_apply(run_config(out), None, None, sets, overrides))


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
    allow_encoder_import(allow_import)
    if resume:
        cfg = resume_config(out, **overrides)
    else:
        cfg = make_config(dataset if dataset is not None else (kg.name if kg is not None else None), model,
                          config, **overrides)
    if kg is None:
        kg = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.seed)
    if out is None:
        name = os.path.basename(os.path.normpath(cfg.data.dataset))
        out = os.path.join("runs", f"{name}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    metrics = train_folder(cfg, kg, out, resume=resume, overwrite=overwrite, progress=progress)
    opened = load_run(out, kg)
    opened.metrics = metrics
    return opened


def train_folder(config: Config, kg: KG, out: str, resume: bool = False, overwrite: bool = False,
                 progress: bool = True) -> Optional[Dict[str, Any]]:
    """Train ``config`` on ``kg`` into the run folder ``out`` and return its metrics, without opening
    the run afterwards (:func:`train` does); None in a process other than rank 0 of a torchrun or
    DistDGL launch. ``resume``: continue ``out`` with ``config`` (from :func:`resume_config`)."""
    from .train.trainer import train as train_run

    return train_run(config, kg, out, resume=resume, overwrite=overwrite, progress=progress)


def serve_distdgl() -> bool:
    """In a process that DGL's launcher started as a server (``DGL_ROLE=server``), serve the trainers
    until they are done and return True; elsewhere return False at once."""
    from .train import distdgl

    if distdgl.launched_by_dgl() and os.environ["DGL_ROLE"] == "server":
        distdgl.serve()
        return True
    return False


def launched_by_distdgl() -> bool:
    """Whether DGL's launcher (or ``kbit-dgl train --partitions``) started this process."""
    from .train import distdgl

    return distdgl.launched_by_dgl()


def train_distdgl(config: Config, partitions: str, out: str, argv: Sequence[str]) -> Dict[str, Any]:
    """Train ``config`` with DistDGL on this host, one machine (a server and a trainer) per partition of
    the folder ``partitions`` (written by :func:`partition`), into the run folder ``out``; every process
    runs ``kbit-dgl <argv>``. Refuses what DistDGL does not train and a partition folder of another
    dataset before any process starts. Returns the run's metrics."""
    from .runs import METRICS
    from .train import distdgl

    distdgl.check_config(config, distdgl.num_parts(partitions))
    distdgl.load_maps(os.path.join(partitions, distdgl.GRAPH_NAME + ".json"),  # the right folder?
                      load_dataset(config.data.dataset, config.data.data_dir, config.data.seed))
    distdgl.launch_local(partitions, argv, out)
    with open(os.path.join(out, METRICS), encoding="utf-8") as handle:
        return json.load(handle)


def partition(out: str, parts: int, method: str = "random", dataset: Optional[str] = None,
              config: Union[None, str, Dict[str, Any], Config] = None, sets: Sequence[str] = (),
              overwrite: bool = False, seed: int = 0, **overrides: Any) -> Dict[str, Any]:
    """Partition the training triples of the dataset of ``config`` / ``dataset`` (only its data section is
    read, unchecked otherwise) into ``parts`` DistDGL partitions in ``out`` (as ``kbit-dgl partition``);
    returns the summary. See :func:`kbit_dgl.train.distdgl.partition`."""
    from .train import distdgl

    cfg = _build_config(dataset, None, config, sets, overrides)
    kg = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.seed)
    return distdgl.partition(kg, out, parts, method, overwrite=overwrite, seed=seed)


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


def evaluate_folder(run_dir: str, split: str = "test", device: str = "auto", bits: Optional[int] = None,
                    dtype: str = "int", block: Optional[int] = None, scale_dtype: str = "fp16",
                    relation_bits: Optional[int] = None) -> Dict[str, Any]:
    """:func:`evaluate` of the run folder ``run_dir`` as ``kbit-dgl evaluate`` does it: the model on
    ``device``, a trained run quantized in memory at ``bits`` when given (options as :func:`quantize`'s),
    and on a CPU the thread count refitted to the machine's load while ranking (:mod:`kbit_dgl.threads`)."""
    from . import threads
    from .config import resolve_device
    from .runs import load_any_run

    spec, relation_spec = (None, None) if bits is None else _quant_specs(run_dir, bits, dtype, block, scale_dtype,
                                                                         relation_bits)
    config, kg, model = load_any_run(run_dir, spec=spec, relation_spec=relation_spec, device=device)
    threads.adapt(resolve_device(device, config.model.encoder).type == "cpu")
    try:
        return evaluate(Run(run_dir, config, kg, model), split)
    finally:
        threads.stop()


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
    allow_encoder_import(allow_import)
    run_dir = run.path if isinstance(run, Run) else run
    kg = run.kg if isinstance(run, Run) else None
    quantize_folder(run_dir, out, bits, dtype, block, scale_dtype, relation_bits, overwrite)
    return load_run(out, kg)


def _quant_specs(run_dir: str, bits: int, dtype: str, block: Optional[int], scale_dtype: str,
                 relation_bits: Optional[int]):
    """The entity and relation tables' QuantSpecs of a trained run quantized at ``bits`` (see :func:`quantize`)."""
    from .quant import QuantSpec
    from .quant.quantizers import default_block
    from .runs import relation_spec_for_run

    spec = QuantSpec(bits, dtype, default_block(dtype, bits) if block is None else block, scale_dtype)
    return spec, relation_spec_for_run(run_dir, spec, relation_bits)


def quantize_folder(run_dir: str, out: str, bits: int = 4, dtype: str = "int", block: Optional[int] = None,
                    scale_dtype: str = "fp16", relation_bits: Optional[int] = None,
                    overwrite: bool = False) -> Dict[str, Any]:
    """:func:`quantize` without opening the result: writes the run folder ``out`` and returns its
    quant.json (the spec, the bytes of codes, scales and metadata, ``file``: the model file's bytes)."""
    from .runs import quantize_run

    spec, relation_spec = _quant_specs(run_dir, bits, dtype, block, scale_dtype, relation_bits)
    return quantize_run(run_dir, out, spec, overwrite=overwrite, relation_spec=relation_spec)


def read_queries(path: str) -> Tuple[List[Tuple[Optional[str], str, Optional[str]]], List[str]]:
    """The queries of a file for :func:`predict_many` and where each came from; see
    :func:`kbit_dgl.predict.read_queries`."""
    from .predict import read_queries as read

    return read(path)


def check_output_file(path: str, overwrite: bool) -> None:
    """Refuse an output file that would replace a run's own file, a folder, or (without ``overwrite``) an
    existing file; see :func:`kbit_dgl.runs.check_output_file`."""
    from .runs import check_output_file as check

    check(path, overwrite)


def read_space(path: Optional[str]) -> Dict[str, Dict[str, Any]]:
    """The hyperparameter search space of the YAML file ``path`` (None: the default space), checked."""
    from .tune import read_space as read

    return read(path)


def tune(config: Config, kg: KG, out: str, space: Dict[str, Dict[str, Any]], trials: int, seed: int = 0,
         baseline: bool = False, timeout: Optional[float] = None, progress: bool = False) -> Dict[str, Any]:
    """Search ``space`` (from :func:`read_space`) around ``config`` with Optuna (as ``kbit-dgl tune``);
    returns the report. See :func:`kbit_dgl.tune.tune`."""
    from .tune import tune as search

    return search(config, kg, out, space, trials, seed=seed, baseline=baseline, timeout=timeout, progress=progress)


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
