"""A trained ``KGEModel`` with both tables quantised, usable by the same evaluate / predict code.

How each decoder's tables are quantised (:func:`table_specs`):

* TransE, DistMult, ComplEx, PairRE: entity and relation tables alike, blockwise along the row
  with the requested spec. ComplEx rows are (real | imaginary) and PairRE relation rows
  (r_head | r_tail); a block size that divides the half width keeps the halves in separate
  blocks. PairRE's L2 normalisation of entities runs after dequantisation, as before scoring.
* RotatE: entity rows (real | imaginary) as above; relation rows are phases in radians, rounded
  to 2**k points evenly spaced on the circle (``phase``: no scale, error <= pi / 2**k), since a
  rotation only sees the angle modulo 2*pi and its modulus is 1 by construction.
* ``pq`` (product quantisation) codes the entity table only; the relation table gets ``int`` codes
  at ``relation_bits`` (default 8), RotatE's phases as above.
* 16 / 32 bits store both tables as fp16 / fp32.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from ..models.decoders import Decoder, RotatE
from ..models.model import KGEModel
from .embedding import PackedRows, QuantizedEmbedding
from .quantizers import QuantSpec


def table_specs(decoder: Decoder, spec: QuantSpec, relation_bits: Optional[int] = None) -> Tuple[QuantSpec, QuantSpec]:
    """(entity spec, relation spec) for ``decoder`` given the requested ``spec``: the one rule for
    the relation table.

    ``relation_bits`` stores the (small) relation table at that many bits instead (16 / 32: fp16 /
    fp32); None keeps it at ``spec.bits``. RotatE's relation rows are phases on a uniform 2**k grid
    below 16 bits. See :func:`default_relation_bits` for the CLI's default.
    """
    relation = spec
    if spec.is_pq:  # product quantisation is for the large entity table; relation rows get scalar codes
        relation = QuantSpec(relation_bits or max(spec.bits, 8), "int", 64, spec.scale_dtype)
    elif relation_bits and relation_bits != spec.bits:
        relation = spec.replace(bits=relation_bits, dtype="int" if relation_bits in (16, 32) else spec.dtype)
    if isinstance(decoder, RotatE) and not relation.is_float:
        relation = relation.replace(dtype="phase")
    return spec, relation


def default_relation_bits(bits: int, qat: bool = False) -> Optional[int]:
    """The relation table's bits when none are asked for: max(bits, 8), or ``bits`` for a run trained
    with QAT (which trained the relation table at ``bits``).

    The relation table is tiny next to the entity table, so keeping it more precise costs almost
    no bytes and keeps more of the fp32 model's test MRR than 4-bit relations do (the measured
    bytes and MRR: results/kbit-relation-bits/).
    """
    return None if qat or bits >= 8 else 8


def float_weight(embedding: nn.Module) -> torch.Tensor:
    """The float table of an ``nn.Embedding``: its latent weight when fake quantisation is attached."""
    parametrizations = getattr(embedding, "parametrizations", None)
    if parametrizations is not None and "weight" in parametrizations:
        return parametrizations.weight.original
    return embedding.weight


# A k-bit entity table whose fp32 decoding takes at most this many bytes is decoded whole for scoring
# (a bounded workspace: a 15k x 500 table is 29 MB); larger ones are scored from their packed codes.
DECODE_BELOW_BYTES = 256 << 20


class QuantizedKGEModel(KGEModel):
    """``KGEModel`` whose ``entity`` and ``relation`` are :class:`QuantizedEmbedding` tables.

    ``entities(ids)`` / ``relations(ids)`` decode the rows asked for; ``all_entities()`` decodes
    the whole entity table (float32, transient) for ranking against all entities. Scores are
    exactly those of a float model holding the dequantised tables.
    """

    def __init__(self, decoder: Decoder, entity: QuantizedEmbedding, relation: QuantizedEmbedding,
                 reciprocal: bool = False):
        relation_rows = relation.num_embeddings
        if reciprocal and relation_rows % 2:
            raise ValueError(f"a reciprocal relation table has an even number of rows, got {relation_rows}")
        super().__init__(entity.num_embeddings, relation_rows // (2 if reciprocal else 1), decoder,
                         reciprocal=reciprocal, tables=(entity, relation))

    def all_entities(self) -> torch.Tensor:
        """(num_entities, entity_dim) float32: every entity decoded, ready for scoring (the reference;
        evaluation and prediction score from the packed codes, :meth:`candidate_rows`)."""
        return self.decoder.prepare_entities(self.entity.dequantize_all())

    def candidate_rows(self):
        """The rows evaluation and prediction score against. A table whose fp32 decoding fits
        :data:`DECODE_BELOW_BYTES` is decoded whole (the float kernels are faster than decoding each
        candidate, and the workspace stays bounded); a larger one is a :class:`PackedRows` source,
        rows decoded by id inside the scoring kernels or a block at a time, so its fp32 table is
        never built. Either way the scores are those of the dequantized model."""
        if 4 * self.num_entities * self.decoder.entity_dim <= DECODE_BELOW_BYTES:
            return self.all_entities()
        if getattr(self, "_packed_rows", None) is None:
            self._packed_rows = PackedRows(self.entity, self.decoder.prepare_entities, type(self.decoder).__name__)
        return self._packed_rows

    @property
    def nbytes(self) -> int:
        """Bytes of both quantised tables (codes, scales, metadata)."""
        return self.entity.nbytes + self.relation.nbytes

    def byte_report(self) -> Dict[str, object]:
        """Per-table and total bytes (codes / scales / metadata / total) next to fp32 bytes."""
        report: Dict[str, object] = {}
        totals = {"codes": 0, "scales": 0, "metadata": 0, "total": 0, "fp32": 0}
        for name, table in (("entity", self.entity), ("relation", self.relation)):
            part: Dict[str, object] = dict(table.nbytes_breakdown())
            part["fp32"] = 4 * table.num_embeddings * table.embedding_dim
            part.update(rows=table.num_embeddings, cols=table.embedding_dim, spec=table.spec.to_dict())
            report[name] = part
            for key in totals:
                totals[key] += int(part[key])
        totals["ratio_to_fp32"] = totals["total"] / totals["fp32"]
        totals["bits_per_number"] = 8 * totals["total"] / (totals["fp32"] / 4)
        report["all"] = totals
        return report

    def dequantized(self) -> KGEModel:
        """A float ``KGEModel`` holding the decoded tables (the reference the tests score against)."""
        model = KGEModel(self.num_entities, self.num_relations, copy.deepcopy(self.decoder),
                         reciprocal=self.reciprocal)
        with torch.no_grad():
            model.entity.weight.copy_(self.entity.dequantize_all())
            model.relation.weight.copy_(self.relation.dequantize_all())
        return model.eval()


def quantize_model(model: KGEModel, spec: QuantSpec, relation_spec: Optional[QuantSpec] = None) -> "QuantizedKGEModel":
    """Quantise a trained shallow ``KGEModel``'s tables (see :func:`table_specs`).

    ``relation_spec`` overrides the relation table's spec (e.g. keep relations at 32 bits).
    """
    if model.encoder is not None:
        raise ConfigError("quantizing models with a GNN encoder is not supported")
    entity_spec, default_relation_spec = table_specs(model.decoder, spec)
    entity = QuantizedEmbedding.from_float(float_weight(model.entity), entity_spec)
    relation = QuantizedEmbedding.from_float(float_weight(model.relation), relation_spec or default_relation_spec)
    device = float_weight(model.entity).device
    return QuantizedKGEModel(copy.deepcopy(model.decoder), entity, relation,
                             model.reciprocal).to(device).eval()
