"""Packed model files and quantized run folders.

A quantized run folder (``kbit-dgl quantize RUN_DIR --out QRUN_DIR``) holds ``config.yaml``
(copied from the source run: it names the dataset and the decoder), ``model.kbit.pt`` (the
packed tables, written atomically) and ``quant.json`` (spec, bytes per table and in total, fp32
bytes, file size). :func:`load_any_run` opens either kind of folder, so ``evaluate`` and
``predict`` work on both.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch

from ..config import Config, reciprocal_relations
from ..io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..models.decoders import make_decoder
from .embedding import QuantizedEmbedding
from .model import QuantizedKGEModel, table_specs
from .quantizers import QuantSpec

QUANT_MODEL = "model.kbit.pt"
QUANT_INFO = "quant.json"
FILE_FORMAT = "kbit-dgl-quantized-model/1"
FLOAT_MODEL = "model.pt"  # the trainer's best model (kbit_dgl.train.trainer.BEST_MODEL)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor on CPU in a storage of its own size: torch.save writes whole storages, so a view
    into a larger one would inflate the file beyond the byte accounting."""
    tensor = tensor.detach().cpu()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def save_quantized_model(path: str, model: QuantizedKGEModel, model_name: str, dim: int, gamma: float) -> int:
    """Write the packed tables and what rebuilds the decoder to ``path`` atomically; returns file bytes."""
    payload = {"format": FILE_FORMAT, "model": {"name": model_name, "dim": dim, "gamma": gamma,
                                                "reciprocal": model.reciprocal},
               "entity": {k: _compact(v) for k, v in model.entity.quantized_state().items()},
               "relation": {k: _compact(v) for k, v in model.relation.quantized_state().items()}}
    atomic_torch_save(path, payload)
    return os.path.getsize(path)


def load_quantized_model(path: str, map_location: str = "cpu") -> QuantizedKGEModel:
    """The :class:`QuantizedKGEModel` stored in a packed model file."""
    payload = torch.load(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{path}: not a kbit-dgl quantized model file (expected format {FILE_FORMAT})")
    spec = payload["model"]
    decoder = make_decoder(spec["name"], spec["dim"], spec["gamma"])
    return QuantizedKGEModel(decoder, QuantizedEmbedding(payload["entity"]), QuantizedEmbedding(payload["relation"]),
                             spec.get("reciprocal", False)).eval()


def saved_tensor_bytes(path: str) -> int:
    """Bytes of the tensor storages inside a saved file (the file minus torch.save's container)."""
    payload = torch.load(path, map_location="cpu")
    return sum(tensor.untyped_storage().nbytes() for part in ("entity", "relation")
               for tensor in payload[part].values())


def quantize_tables(decoder, entity: torch.Tensor, relation: torch.Tensor, spec: QuantSpec,
                    relation_spec: Optional[QuantSpec] = None, reciprocal: bool = False) -> QuantizedKGEModel:
    """Quantise float tables (num_entities, entity_dim), (num_relations, relation_dim) for ``decoder``.

    ``relation_spec`` overrides the relation table's spec (the small table, kept more precise);
    ``reciprocal``: the relation table holds the inverse relations too (``model.reciprocal``).
    """
    entity_spec, default_relation_spec = table_specs(decoder, spec)
    relation_spec = relation_spec or default_relation_spec
    return QuantizedKGEModel(decoder, QuantizedEmbedding.from_float(entity, entity_spec),
                             QuantizedEmbedding.from_float(relation, relation_spec), reciprocal).eval()


def is_quantized_run(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, QUANT_MODEL))


def _float_tables(run_dir: str) -> Tuple[Config, torch.Tensor, torch.Tensor]:
    """(config, entity table, relation table) of a trained run, read without loading its dataset.

    A run trained with fake quantisation (QAT) stores its latent float tables under
    ``*.parametrizations.weight.original``; those are what gets quantised.
    """
    config = Config.from_yaml(os.path.join(run_dir, "config.yaml"), run=True)
    if config.model.encoder:
        raise NotImplementedError(f"{run_dir}: quantizing models with a GNN encoder is not supported")
    path = os.path.join(run_dir, FLOAT_MODEL)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no {FLOAT_MODEL}; the run has not validated yet")
    state = torch.load(path, map_location="cpu")["model"]

    def table(name: str) -> torch.Tensor:
        for key in (f"{name}.weight", f"{name}.parametrizations.weight.original"):
            if key in state:
                return state[key]
        raise KeyError(f"{path}: no {name} table among {sorted(state)}")

    return config, table("entity"), table("relation")


def quantize_run(run_dir: str, out_dir: str, spec: QuantSpec, overwrite: bool = False,
                 relation_spec: Optional[QuantSpec] = None) -> Dict[str, object]:
    """Quantise a trained run into ``out_dir`` (config.yaml, model.kbit.pt, quant.json); returns quant.json."""
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir}: the folder already exists and is not empty; pass --overwrite to replace it")
    if os.path.abspath(out_dir) == os.path.abspath(run_dir):
        raise ValueError("quantize: --out must differ from the run folder")
    config, entity, relation = _float_tables(run_dir)
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    model = quantize_tables(decoder, entity, relation, spec, relation_spec, reciprocal_relations(config.model))
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_text(os.path.join(out_dir, "config.yaml"), config.to_yaml())
    file_bytes = save_quantized_model(os.path.join(out_dir, QUANT_MODEL), model, config.model.name,
                                      config.model.dim, config.model.gamma)
    report = model.byte_report()
    totals = report["all"]
    info = {"source_run": os.path.abspath(run_dir), "model": config.model.name, "dataset": config.data.dataset,
            **spec.to_dict(),
            "codes_bytes": totals["codes"], "scales_bytes": totals["scales"], "metadata_bytes": totals["metadata"],
            "total_bytes": totals["total"], "fp32_bytes": totals["fp32"], "ratio_to_fp32": totals["ratio_to_fp32"],
            "bits_per_number": totals["bits_per_number"],
            "file": {"name": QUANT_MODEL, "bytes": file_bytes,
                     "container_overhead_bytes": file_bytes - totals["total"]},
            "tables": {"entity": report["entity"], "relation": report["relation"]}}
    atomic_write_json(os.path.join(out_dir, QUANT_INFO), info)
    return info


def load_quantized_run(run_dir: str, kg=None):
    """(config, kg, quantized model) of a quantized run folder; the dataset is loaded unless given."""
    from ..data import load_dataset

    config = Config.from_yaml(os.path.join(run_dir, "config.yaml"), run=True)
    model = load_quantized_model(os.path.join(run_dir, QUANT_MODEL))
    kg = kg or load_dataset(config.data.dataset, config.data.data_dir, config.data.seed)
    if (kg.num_entities, kg.num_relations) != (model.num_entities, model.num_relations):
        raise ValueError(f"{run_dir}: the model has {model.num_entities} entities and {model.num_relations} "
                         f"relations, the dataset {kg.num_entities} and {kg.num_relations}")
    return config, kg, model


def load_any_run(run_dir: str, kg=None, spec: Optional[QuantSpec] = None,
                 relation_spec: Optional[QuantSpec] = None):
    """(config, kg, model) of a trained or a quantized run folder.

    With ``spec``, a trained run's model is quantised in memory (nothing is written); a quantized
    folder cannot be quantised again.
    """
    if is_quantized_run(run_dir):
        if spec is not None:
            raise ValueError(f"{run_dir} is already quantized; --bits applies to a trained run folder")
        return load_quantized_run(run_dir, kg)
    from ..train.trainer import load_run
    from .model import quantize_model

    config, kg, model = load_run(run_dir, kg)
    if spec is not None:
        model = quantize_model(model, spec, relation_spec)
    return config, kg, model
