"""Export a run's embeddings with their names: DGL-KE's ``.npy`` layout, TSV for embedding projectors, or one ``.pt``.

``npy`` (DGL-KE's layout, loadable anywhere with numpy)::

    <out>/<dataset>_<model>_entity.npy     (num_entities, entity_dim) float32
    <out>/<dataset>_<model>_relation.npy   (relation rows, relation_dim) float32
    <out>/entities.tsv, relations.tsv      <id> TAB <name>, the row of each name
    <out>/config.json                      decoder, dim, gamma, reciprocal, shapes, file names

``tsv`` (the TensorFlow embedding projector's input): ``entity_embeddings.tsv`` /
``relation_embeddings.tsv`` (one row of tab-separated numbers per line) with
``entity_metadata.tsv`` / ``relation_metadata.tsv`` (the name of each row), plus ``config.json``.
``pt``: ``embeddings.pt``, a dict of both tables, both name lists and the config, as a safetensors file
(:func:`kbit_dgl.io.load_saved` reads it; reading it cannot run code).

The rows are what the decoder scores: a packed (k-bit) run is dequantized, a run trained with
QAT gives its fake-quantized tables, a run with a GNN encoder gives the encoder's output for every
entity. With reciprocal relations the relation table has twice the rows: row ``r + R`` is the
inverse of relation ``r``, named ``<name>_inverse``. :func:`load_exported` rebuilds a model
that scores exactly as the run did.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np
import torch

from .config import Config
from .data.kg import KG
from .errors import ConfigError, KbitError, RunFileError
from .io import atomic_save, atomic_write_json, atomic_write_npy, atomic_write_text, load_saved
from .models.decoders import make_decoder
from .models.model import KGEModel

FORMATS = ("npy", "tsv", "pt")
INVERSE_SUFFIX = "_inverse"


@torch.no_grad()
def embedding_tables(model, kg: KG) -> Tuple[torch.Tensor, torch.Tensor, List[str], List[str]]:
    """(entity rows, relation rows, entity names, relation row names) that ``model``'s decoder scores."""
    from .quant import QuantizedKGEModel

    was_training = model.training
    model.eval()
    if isinstance(model, QuantizedKGEModel):
        entity, relation = model.entity.dequantize_all(), model.relation.dequantize_all()
    else:
        entity, relation = model.entity.weight, model.relation.weight  # fake-quantized under QAT
        if model.encoder is not None:  # the encoder's output, before the decoder's own prepare_entities
            encode = getattr(model.encoder, "inference", model.encoder)
            entity = encode(model.entity.weight, model.relation.weight)
    model.train(was_training)
    relation_names = list(kg.relation_names)
    if model.reciprocal:
        relation_names += [name + INVERSE_SUFFIX for name in kg.relation_names]
    if relation.shape[0] != len(relation_names) or entity.shape[0] != len(kg.entity_names):
        raise RunFileError(f"the model's tables ({tuple(entity.shape)}, {tuple(relation.shape)}) do not match the "
                           f"KG's {len(kg.entity_names)} entities and {len(relation_names)} relation rows")
    return (entity.detach().float().cpu().contiguous(), relation.detach().float().cpu().contiguous(),
            list(kg.entity_names), relation_names)


def _names_tsv(names: List[str]) -> str:
    return "".join(f"{i}\t{name}\n" for i, name in enumerate(names))


def _vectors_tsv(table: torch.Tensor) -> str:
    return "".join("\t".join(repr(float(x)) for x in row) + "\n" for row in table.tolist())


def export_embeddings(model, kg: KG, config: Config, out: str, format: str = "npy",
                      overwrite: bool = False) -> Dict[str, str]:
    """Write ``model``'s tables with ``kg``'s names to the folder ``out`` in ``format`` (npy | tsv | pt);
    returns ``{what: path}`` of the files written (each atomically). ``out`` must not be a run folder,
    and a folder already holding files needs ``overwrite`` (:func:`kbit_dgl.runs.check_output_folder`)."""
    from .runs import check_output_folder

    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    check_output_folder(out, overwrite)
    entity, relation, entity_names, relation_names = embedding_tables(model, kg)
    os.makedirs(out, exist_ok=True)
    meta = {"format": f"kbit-dgl-embeddings/{format}", "dataset": kg.name, "model": config.model.name,
            "dim": config.model.dim, "gamma": config.model.gamma, "reciprocal": bool(model.reciprocal),
            "encoder": config.model.encoder, "num_entities": entity.shape[0], "num_relations": kg.num_relations,
            "entity_shape": list(entity.shape), "relation_shape": list(relation.shape),
            "inverse_relations": (f"row r + {kg.num_relations} is the inverse of relation r, named "
                                  f"<name>{INVERSE_SUFFIX}") if model.reciprocal else None}
    paths: Dict[str, str] = {}
    stem = f"{os.path.basename(os.path.normpath(kg.name))}_{config.model.name}"
    if format == "npy":
        for what, table in (("entity", entity), ("relation", relation)):
            path = os.path.join(out, f"{stem}_{what}.npy")
            atomic_write_npy(path, table.numpy())
            paths[what] = path
        for what, names in (("entities", entity_names), ("relations", relation_names)):
            paths[what] = os.path.join(out, f"{what}.tsv")
            atomic_write_text(paths[what], _names_tsv(names))
        meta["files"] = {"entity": os.path.basename(paths["entity"]), "relation": os.path.basename(paths["relation"]),
                         "entity_names": "entities.tsv", "relation_names": "relations.tsv"}
    elif format == "tsv":
        for what, table, names in (("entity", entity, entity_names), ("relation", relation, relation_names)):
            paths[what] = os.path.join(out, f"{what}_embeddings.tsv")
            atomic_write_text(paths[what], _vectors_tsv(table))
            paths[f"{what}_metadata"] = os.path.join(out, f"{what}_metadata.tsv")
            atomic_write_text(paths[f"{what}_metadata"], "".join(f"{name}\n" for name in names))
        meta["files"] = {"entity": "entity_embeddings.tsv", "relation": "relation_embeddings.tsv",
                         "entity_names": "entity_metadata.tsv", "relation_names": "relation_metadata.tsv"}
    else:
        paths["embeddings"] = os.path.join(out, "embeddings.pt")
        atomic_save(paths["embeddings"], {"entity": entity, "relation": relation, "entity_names": entity_names,
                                                "relation_names": relation_names, "meta": meta})
        meta["files"] = {"embeddings": "embeddings.pt"}
    paths["config"] = os.path.join(out, "config.json")
    atomic_write_json(paths["config"], meta)
    return paths


def _read_names(path: str, numbered: bool) -> List[str]:
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return [line.split("\t", 1)[1] for line in lines] if numbered else lines


def load_exported(folder: str) -> Tuple[KGEModel, List[str], List[str]]:
    """(model, entity names, relation names) from an exported folder: a shallow :class:`KGEModel`
    whose tables are the exported rows, scoring exactly as the run did (relation names include the
    ``_inverse`` rows when the run used reciprocal relations)."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise RunFileError(f"{folder}: no config.json; expected a folder written by kbit-dgl export")
    try:
        return _load_exported(folder, path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as error:
        if isinstance(error, KbitError):
            raise
        raise RunFileError(f"{folder}: not a folder written by kbit-dgl export, or a damaged one "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


def _load_exported(folder: str, path: str) -> Tuple[KGEModel, List[str], List[str]]:
    with open(path, encoding="utf-8") as handle:
        meta = json.load(handle)
    files = meta["files"]
    kind = meta["format"].rsplit("/", 1)[-1]
    if kind == "pt":
        payload = load_saved(os.path.join(folder, files["embeddings"]), ("entity", "relation"),
                             "exported embeddings file")
        entity, relation = payload["entity"], payload["relation"]
        entity_names, relation_names = payload["entity_names"], payload["relation_names"]
    elif kind == "npy":
        entity = torch.from_numpy(np.load(os.path.join(folder, files["entity"])))
        relation = torch.from_numpy(np.load(os.path.join(folder, files["relation"])))
        entity_names = _read_names(os.path.join(folder, files["entity_names"]), numbered=True)
        relation_names = _read_names(os.path.join(folder, files["relation_names"]), numbered=True)
    else:
        entity, relation = (torch.tensor(np.loadtxt(os.path.join(folder, files[what]), delimiter="\t",
                                                    dtype=np.float64, ndmin=2), dtype=torch.float32)
                            for what in ("entity", "relation"))
        entity_names = _read_names(os.path.join(folder, files["entity_names"]), numbered=False)
        relation_names = _read_names(os.path.join(folder, files["relation_names"]), numbered=False)
    decoder = make_decoder(meta["model"], meta["dim"], meta["gamma"])
    # the tables' shapes decide the model's: the numbers in config.json only have to agree with them
    # (a config.json naming a huge dim or relation count would otherwise allocate that table first)
    relation_rows = meta["num_relations"] * (2 if meta["reciprocal"] else 1)
    wanted = {"entity": (entity, (len(entity_names), decoder.entity_dim)),
              "relation": (relation, (relation_rows, decoder.relation_dim))}
    for what, (table, shape) in wanted.items():
        if not isinstance(table, torch.Tensor) or tuple(table.shape) != shape or not table.is_floating_point():
            found = f"{table.dtype} {tuple(table.shape)}" if isinstance(table, torch.Tensor) else type(table).__name__
            raise RunFileError(f"{folder}: the {what} table is {found}; config.json and the names describe "
                               f"{shape} floats (a damaged or foreign export)")
    if len(relation_names) != relation_rows:
        raise RunFileError(f"{folder}: {len(relation_names)} relation names for {relation_rows} relation rows")
    model = KGEModel(entity.shape[0], meta["num_relations"], decoder, reciprocal=meta["reciprocal"])
    with torch.no_grad():
        model.entity.weight.copy_(entity)
        model.relation.weight.copy_(relation)
    return model.eval(), entity_names, relation_names
