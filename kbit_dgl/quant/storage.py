"""The packed model file: k-bit tables plus what rebuilds the decoder, written atomically.

Quantized run folders (``kbit-dgl quantize``) are :mod:`kbit_dgl.runs`'s business; this module
only reads and writes the file.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch

from ..errors import RunFileError
from ..io import atomic_save, load_saved
from ..models.decoders import make_decoder
from .embedding import QuantizedEmbedding
from .model import QuantizedKGEModel, table_specs
from .quantizers import QuantSpec, table_nbytes

FILE_FORMAT = "kbit-dgl-quantized-model/1"


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor on CPU in a storage of its own size: torch.save writes whole storages, so a view
    into a larger one would inflate the file beyond the byte accounting."""
    tensor = tensor.detach().cpu()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def save_quantized_model(path: str, model: QuantizedKGEModel, model_name: str, dim: int, gamma: float,
                         id_maps: Optional[str] = None) -> int:
    """Write the packed tables and what rebuilds the decoder to ``path`` atomically; returns file bytes.

    ``id_maps``: the fingerprint of the id maps the tables are indexed by (see kbit_dgl.runs).
    """
    payload = {"format": FILE_FORMAT, "id_maps": id_maps,
               "model": {"name": model_name, "dim": dim, "gamma": gamma, "reciprocal": model.reciprocal},
               "entity": {k: _compact(v) for k, v in model.entity.quantized_state().items()},
               "relation": {k: _compact(v) for k, v in model.relation.quantized_state().items()}}
    atomic_save(path, payload)
    return os.path.getsize(path)


def load_quantized_model(path: str, payload: Optional[Dict] = None) -> QuantizedKGEModel:
    """The :class:`QuantizedKGEModel` stored in a packed model file (``payload``: the file already read)."""
    if payload is None:
        payload = load_saved(path, ("format", "model", "entity", "relation"), "quantized model file")
    if payload.get("format") != FILE_FORMAT:
        raise RunFileError(f"{path}: not a kbit-dgl quantized model file (expected format {FILE_FORMAT})")
    spec = payload["model"]
    try:
        decoder = make_decoder(spec["name"], spec["dim"], spec["gamma"])
        model = QuantizedKGEModel(decoder, QuantizedEmbedding(payload["entity"]),
                                  QuantizedEmbedding(payload["relation"]), spec.get("reciprocal", False)).eval()
        _check_table(model.entity, "entity")
        _check_table(model.relation, "relation")
        return model
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
        raise RunFileError(f"{path}: a damaged quantized model file ({type(error).__name__}: {error})") from None


def _check_table(table: QuantizedEmbedding, what: str) -> None:
    """Refuse a table whose tensors are not what its header describes (rows, bytes, dtypes): a crafted
    or damaged file would otherwise fail later, mid-evaluation, or index past a tensor."""
    rows, cols, spec = table.num_embeddings, table.embedding_dim, table.spec
    state = table.quantized_state()
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise TypeError(f"the {what} table holds a value that is not a tensor")
    expected = table_nbytes(rows, cols, spec)
    codes = state["codes"]
    if codes.dim() != 2 or codes.shape[0] != rows or (not spec.is_float and codes.dtype != torch.uint8) \
            or codes.numel() * codes.element_size() != expected["codes"]:
        raise ValueError(f"the {what} table's codes are {codes.dtype} {tuple(codes.shape)}; its header describes "
                         f"{rows} rows of {cols} numbers at {spec.bits} bits ({expected['codes']} bytes)")
    stored = sum(value.numel() * value.element_size() for value in state.values())
    if stored != expected["total"]:
        raise ValueError(f"the {what} table holds {stored} bytes, its header describes {expected['total']}")
    if rows:
        table(torch.tensor([0, rows - 1]))  # the first and the last row decode (scales and codebook reach them)


def saved_tensor_bytes(path: str) -> int:
    """Bytes of the tensor storages inside a saved file (the file minus torch.save's container)."""
    payload = load_saved(path, ("entity", "relation"), "quantized model file")
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
