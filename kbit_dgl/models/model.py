"""The KGE model: entity/relation tables -> [optional encoder] -> decoder."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .. import compat
from ..errors import ConfigError
from .decoders import Decoder, make_decoder


class KGEModel(nn.Module):
    """Entity and relation tables feeding a decoder, with a slot for a GNN encoder.

    An encoder, when given, is a module called as ``encoder(entity_table, relation_table)`` that
    returns the representation of every entity, (num_entities, decoder.entity_dim); without one
    the table rows are the representations (a shallow model). See kbit_dgl/models/encoders.py for
    the interface. In eval mode the encoder's representations are computed once without gradients
    (layer-wise, in node chunks, when the encoder has ``inference``) and reused until a parameter
    changes, so evaluation and prediction run the encoder once.

    ``reciprocal=True`` gives the relation table ``2 * num_relations`` rows: row ``r + num_relations``
    is the inverse of ``r``, and a head query (?, r, t) is scored as the tail query (t, r^-1, ?)
    (:meth:`query`), in training and evaluation alike; an aligned triple keeps its forward score.

    ``sparse=True`` makes both tables ``nn.Embedding(sparse=True)``: a lookup's gradient is a sparse
    tensor holding only the rows looked up, so a sparse optimizer (``train.optimizer`` sparse_adam or
    sparse_adagrad, see kbit_dgl/train/optim.py) updates those rows and their state alone, and a
    step's cost does not grow with the number of entities. Scores are the same either way.

    ``tables=(entity, relation)`` injects the tables instead of new ``nn.Embedding`` ones: any
    modules mapping ids to rows with ``num_embeddings`` / ``embedding_dim`` (the k-bit
    ``QuantizedEmbedding``), used as they are.
    """

    def __init__(self, num_entities: int, num_relations: int, decoder: Decoder,
                 encoder: Optional[nn.Module] = None, sparse: bool = False, reciprocal: bool = False,
                 tables: Optional[Tuple[nn.Module, nn.Module]] = None):
        super().__init__()
        if reciprocal and encoder is not None:
            raise ConfigError("model.reciprocal is for shallow models: an encoder already passes messages over "
                             "inverse edges; set model.reciprocal=false with model.encoder")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.decoder = decoder
        self.encoder = encoder
        self.sparse = sparse
        self.reciprocal = reciprocal
        relation_rows = num_relations * (2 if reciprocal else 1)
        if tables is not None:
            self.entity, self.relation = tables
            shapes = [(t.num_embeddings, t.embedding_dim) for t in tables]
            if shapes != [(num_entities, decoder.entity_dim), (relation_rows, decoder.relation_dim)]:
                raise ValueError(f"tables of shapes {shapes} do not fit {num_entities} entities, {relation_rows} "
                                 f"relation rows and the decoder's widths ({decoder.entity_dim}, "
                                 f"{decoder.relation_dim})")
        else:
            self.entity = nn.Embedding(num_entities, decoder.entity_dim, sparse=sparse)
            self.relation = nn.Embedding(relation_rows, decoder.relation_dim, sparse=sparse)
            decoder.init_entities(self.entity.weight.data)
            decoder.init_relations(self.relation.weight.data)
        self._inference_cache = None  # (parameter versions, rows) of the last eval-mode encoding

    def all_entities(self) -> torch.Tensor:
        """(num_entities, entity_dim): every entity's representation, ready for scoring."""
        rows = self.entity.weight
        if self.encoder is not None:
            if not self.training:
                return self._encoded_for_inference()
            rows = self.encoder(rows, self.relation.weight)
        return self.decoder.prepare_entities(rows)

    def candidate_rows(self):
        """The rows evaluation and prediction score against: :meth:`all_entities` here; a k-bit model
        returns a :class:`~kbit_dgl.models.kernels.RowSource` that decodes rows on demand instead."""
        return self.all_entities()

    def _encoded_for_inference(self) -> torch.Tensor:
        # In-place updates (optimizer steps, load_state_dict) bump a tensor's version counter.
        key = tuple((id(p), compat.tensor_version(p)) for p in self.parameters())
        if self._inference_cache is None or self._inference_cache[0] != key:
            with torch.no_grad():
                encode = getattr(self.encoder, "inference", self.encoder)
                rows = self.decoder.prepare_entities(encode(self.entity.weight, self.relation.weight))
            self._inference_cache = (key, rows)
        return self._inference_cache[1]

    def entities(self, ids: torch.Tensor, all_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Representations of ``ids`` (any shape) -> (*ids.shape, entity_dim)."""
        if all_rows is not None:
            return all_rows[ids]
        if self.encoder is not None:
            return self.all_entities()[ids]
        return self.decoder.prepare_entities(self.entity(ids))

    def relations(self, ids: torch.Tensor) -> torch.Tensor:
        return self.relation(ids)

    def query(self, relation_ids: torch.Tensor, direction: str):
        """(relation rows, scoring direction) for queries (anchor, relation, ?) predicting ``direction``.

        With reciprocal relations a head query (?, r, t) becomes the tail query (t, r^-1, ?).
        """
        if self.reciprocal and direction == "head":
            return self.relations(relation_ids + self.num_relations), "tail"
        return self.relations(relation_ids), direction

    def score_candidates(self, anchor_rows: torch.Tensor, relation_ids: torch.Tensor, candidates: torch.Tensor,
                         direction: str = "tail") -> torch.Tensor:
        """Scores of queries (anchor rows, relation ids) against candidate rows, as the decoder's
        ``score_candidates`` (reciprocal relations applied)."""
        relation_rows, direction = self.query(relation_ids, direction)
        return self.decoder.score_candidates(anchor_rows, relation_rows, candidates, direction)

    def score_candidate_ids(self, anchor_rows: torch.Tensor, relation_ids: torch.Tensor, table: torch.Tensor,
                            ids: torch.Tensor, direction: str = "tail") -> torch.Tensor:
        """(b, k) scores of queries (anchor rows (b, d), relation ids (b,)) against ``table[ids]``
        (ids (b, k)), as the decoder's ``score_candidate_ids`` (reciprocal relations applied)."""
        relation_rows, direction = self.query(relation_ids, direction)
        return self.decoder.score_candidate_ids(anchor_rows, relation_rows, table, ids, direction)

    def search_query(self, anchor_rows: torch.Tensor, relation_ids: torch.Tensor, direction: str = "tail"):
        """The decoder's vector-search form of queries (see ``Decoder.search_query``), reciprocal
        relations applied: (query vectors, "l2" | "ip"), or None."""
        relation_rows, direction = self.query(relation_ids, direction)
        return self.decoder.search_query(anchor_rows, relation_rows, direction)

    def score_triples(self, triples: torch.Tensor) -> torch.Tensor:
        """(B, 3) id triples -> (B,) scores."""
        all_rows = self.all_entities() if self.encoder is not None else None
        return self.decoder.score(self.entities(triples[:, 0], all_rows), self.relations(triples[:, 1]),
                                  self.entities(triples[:, 2], all_rows))


def build_model(name: str, num_entities: int, num_relations: int, dim: int, gamma: float,
                encoder: Optional[nn.Module] = None, sparse: bool = False, reciprocal: bool = False) -> KGEModel:
    """A :class:`KGEModel` with the decoder ``name``; ``sparse`` gives the tables sparse gradients."""
    return KGEModel(num_entities, num_relations, make_decoder(name, dim, gamma), encoder, sparse, reciprocal)
