"""The knowledge-graph type every loader returns and every later stage consumes."""
from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Dict, List, Optional

import torch

SPLITS = ("train", "valid", "test")


class KGFormatError(ValueError):
    """Bad input data; the message names the file, the line and what was expected."""


@dataclass
class KG:
    """A knowledge graph split into train/valid/test.

    Triples are int64 tensors of shape (n, 3) holding (head, relation, tail) ids.
    ``entity_names[i]`` / ``relation_names[j]`` give the string names of ids.
    ``negatives`` optionally holds per-split OGB candidate sets:
    ``{"valid": {"head_neg": (n, K), "tail_neg": (n, K)}, ...}`` (global entity ids).
    ``entity_type`` (num_entities,) and ``type_names`` describe typed KGs such as ogbl-biokg.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    num_entities: int
    num_relations: int
    entity_names: List[str]
    relation_names: List[str]
    negatives: Dict[str, Dict[str, torch.Tensor]] = field(default_factory=dict)
    entity_type: Optional[torch.Tensor] = None
    type_names: Optional[List[str]] = None
    relation_info: Dict[str, str] = field(default_factory=dict)  # relation name -> pattern (generator)
    # The filter index caches train + valid + test. It is an init-only argument, not a field, so that
    # dataclasses.replace(kg, test=...) does not carry the old index over (a stale filter would
    # silently hide the new triples' true answers); passing _filter=... explicitly still works, e.g. to
    # keep the full KG's index for a subsample of its train split.
    _filter: InitVar[Optional["FilterIndex"]] = None
    _filter_index: Optional["FilterIndex"] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, _filter: Optional["FilterIndex"]) -> None:
        for split in SPLITS:
            triples = getattr(self, split)
            source = f"{self.name}/{split}"
            if triples.dtype != torch.int64 or triples.dim() != 2 or triples.shape[1] != 3:
                raise KGFormatError(f"{source}: expected an int64 tensor of shape (n, 3), "
                                    f"got {tuple(triples.shape)} {triples.dtype}")
            if triples.shape[0] == 0:
                raise KGFormatError(f"{source}: the split is empty; expected at least one triple")
            for column, bound, what in ((0, self.num_entities, "head"), (1, self.num_relations, "relation"),
                                        (2, self.num_entities, "tail")):
                values = triples[:, column]
                bad = (values < 0) | (values >= bound)
                if bool(bad.any()):
                    row = int(bad.nonzero()[0, 0])
                    raise KGFormatError(f"{source}: triple {row} has {what} id {int(values[row])}, "
                                        f"expected 0 <= id < {bound}")
        if len(self.entity_names) != self.num_entities:
            raise KGFormatError(f"{self.name}: {len(self.entity_names)} entity names for "
                                f"{self.num_entities} entities")
        if len(self.relation_names) != self.num_relations:
            raise KGFormatError(f"{self.name}: {len(self.relation_names)} relation names for "
                                f"{self.num_relations} relations")
        self._filter_index = _filter

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @property
    def filter_index(self) -> "FilterIndex":
        """All known true triples (train + valid + test), for filtered ranking."""
        if self._filter_index is None:
            self._filter_index = FilterIndex(torch.cat([self.train, self.valid, self.test]),
                                             self.num_entities, self.num_relations)
        return self._filter_index

    def unseen_entity_mask(self, split: str) -> torch.Tensor:
        """(n,) bool: triples of ``split`` with a head or tail that never occurs in train."""
        seen = torch.zeros(self.num_entities, dtype=torch.bool)
        seen[self.train[:, 0]] = True
        seen[self.train[:, 2]] = True
        triples = self.split(split)
        return ~(seen[triples[:, 0]] & seen[triples[:, 2]])

    def entity_id(self, name: str) -> int:
        return _lookup(self.entity_names, name, "entity", self.name)

    def relation_id(self, name: str) -> int:
        return _lookup(self.relation_names, name, "relation", self.name)

    def summary(self) -> Dict[str, int]:
        return {"entities": self.num_entities, "relations": self.num_relations,
                "train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


def _lookup(names: List[str], name: str, what: str, kg_name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        if name.isdigit() and int(name) < len(names):
            return int(name)
        raise KeyError(f"{kg_name}: no {what} named {name!r}") from None


class FilterIndex:
    """Known true triples, indexed for vectorised filtering.

    For tail prediction the key is (head, relation); for head prediction (relation, tail).
    ``known(anchor, relation, direction)`` returns (query_row, entity) pairs of every known true
    answer for a batch of queries, without a Python loop per query.
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int):
        triples = torch.unique(triples, dim=0)
        self.num_entities = num_entities
        self.num_relations = num_relations
        self._index = {}
        for direction, anchor_col, answer_col in (("tail", 0, 2), ("head", 2, 0)):
            keys = triples[:, anchor_col] * num_relations + triples[:, 1]
            order = torch.argsort(keys, stable=True)
            self._index[direction] = (keys[order].contiguous(), triples[order, answer_col].contiguous())

    def known(self, anchor: torch.Tensor, relation: torch.Tensor, direction: str):
        """Return (rows, entities): every known answer ``entities[k]`` of query ``rows[k]``.

        ``direction="tail"`` answers (anchor, relation, ?); ``"head"`` answers (?, relation, anchor).
        """
        sorted_keys, answers = self._index[direction]
        keys = anchor.cpu() * self.num_relations + relation.cpu()
        start = torch.searchsorted(sorted_keys, keys, side="left")
        end = torch.searchsorted(sorted_keys, keys, side="right")
        counts = end - start
        rows = torch.repeat_interleave(torch.arange(len(keys)), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts,
                                                                              counts)
        return rows, answers[start[rows] + offsets]
