"""The knowledge-graph type every loader returns and every later stage consumes."""
from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import InitVar, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import KGFormatError, UnknownNameError  # noqa: F401  (KGFormatError: importable from here)

SPLITS = ("train", "valid", "test")
PREVIEW_CHARS = 200  # how much of a line or name an error message quotes
LOGGER = logging.getLogger("kbit_dgl")


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """``repr(text)`` for a message, cut to its first ``limit`` characters plus the full length.

    A corrupt file can hold a 100 MB line (no newlines at all, or one giant field); quoting it whole
    would make the exception, and every log that repeats it, just as large.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def add_warning(warnings: Optional[List[str]], message: str) -> None:
    """Append ``message`` to ``warnings`` (when given) and log it on the ``kbit_dgl`` logger."""
    if warnings is not None:
        warnings.append(message)
    LOGGER.warning(message)


@dataclass
class KG:
    """A knowledge graph split into train/valid/test.

    Triples are int64 tensors of shape (n, 3) holding (head, relation, tail) ids.
    ``entity_names[i]`` / ``relation_names[j]`` give the string names of ids.
    ``negatives`` optionally holds per-split OGB candidate sets:
    ``{"valid": {"head_neg": (n, K), "tail_neg": (n, K)}, ...}`` (global entity ids).
    ``entity_type`` (num_entities,) and ``type_names`` describe typed KGs such as ogbl-biokg.
    ``warnings`` lists what the loader accepted but a user should know (a skipped header line,
    duplicate triples, leakage, relations only in test, ...), one human-readable line each with its
    count; :meth:`check_splits` adds the split-level ones.
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
    warnings: List[str] = field(default_factory=list)
    # The filter index caches train + valid + test. It is an init-only argument, not a field, so that
    # dataclasses.replace(kg, test=...) does not carry the old index over (a stale filter would
    # silently hide the new triples' true answers); passing _filter=... explicitly still works, e.g. to
    # keep the full KG's index for a subsample of its train split.
    _filter: InitVar[Optional["FilterIndex"]] = None
    _filter_index: Optional["FilterIndex"] = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, _filter: Optional["FilterIndex"]) -> None:
        if self.num_entities < 2:
            raise KGFormatError(f"{self.name}: {self.num_entities} entit{'y' if self.num_entities == 1 else 'ies'}; "
                                f"expected at least 2, since ranking a true entity against all entities "
                                f"needs some other candidate")
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
        self.warnings = list(self.warnings)  # replace() passes the same list; appends must not reach the original
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

    def check_splits(self) -> List[str]:
        """Add the split-level warnings (see :func:`split_warnings`) to ``warnings`` and log them.

        Returns the messages that were new: calling it twice adds nothing the second time. Every
        loader (TSV, OGB, the generator through ``load_dataset``) calls it once.
        """
        new = [message for message in split_warnings(self) if message not in self.warnings]
        for message in new:
            add_warning(self.warnings, message)
        return new

    def reindexed(self, entity_names: Sequence[str], relation_names: Sequence[str]) -> "KG":
        """The same KG with ids renumbered so that ``entity_names[i]`` gets entity id i and
        ``relation_names[j]`` relation id j.

        Every split's triples, the OGB ``negatives`` (global entity ids) and ``entity_type`` are
        permuted accordingly; ``type_names``, ``relation_info`` and ``warnings`` are kept; the filter
        index is rebuilt on first use. Returns ``self`` when the names are already in this order.
        Raises :class:`KGFormatError` when the name sets differ (counts and up to 5 examples).

        Otherwise every tensor is copied renumbered: one dict lookup per name, then gathers, so at
        wikikg2's size it costs seconds and a copy of every split (OGB's negatives included).
        """
        entity_names, relation_names = list(entity_names), list(relation_names)
        if entity_names == self.entity_names and relation_names == self.relation_names:
            return self
        entity_old = _old_ids(self.entity_names, entity_names, "entity", self.name)
        relation_old = _old_ids(self.relation_names, relation_names, "relation", self.name)
        entity_new, relation_new = torch.empty_like(entity_old), torch.empty_like(relation_old)
        entity_new[entity_old] = torch.arange(len(entity_old))
        relation_new[relation_old] = torch.arange(len(relation_old))

        # np.take, not torch indexing: faster for wikikg2's 16M triples on CPU (measured side by side).
        def renumber(triples: torch.Tensor) -> torch.Tensor:
            old = triples.numpy()
            new = np.empty_like(old)
            new[:, 0::2] = np.take(entity_new.numpy(), old[:, 0::2])
            new[:, 1] = np.take(relation_new.numpy(), old[:, 1])
            return torch.from_numpy(new)

        negatives = {split: {key: torch.from_numpy(np.take(entity_new.numpy(), candidates.numpy()))
                             for key, candidates in sides.items()}
                     for split, sides in self.negatives.items()}
        entity_type = None if self.entity_type is None else self.entity_type[entity_old]
        return dataclasses.replace(self, train=renumber(self.train), valid=renumber(self.valid),
                                   test=renumber(self.test), entity_names=entity_names,
                                   relation_names=relation_names, negatives=negatives, entity_type=entity_type)


def _old_ids(current: List[str], wanted: List[str], what: str, kg_name: str) -> torch.Tensor:
    """(len(wanted),) int64: the current id of each wanted name; KGFormatError unless the sets match."""
    index = dict(zip(current, range(len(current))))
    if len(index) != len(current):
        repeated = _repeated(current)
        raise KGFormatError(f"{kg_name}: {len(repeated)} {what} name(s) occur more than once in the KG "
                            f"({_examples(repeated[:5], len(repeated))}), so ids cannot be matched by name")
    old = torch.tensor(list(map(index.get, wanted, itertools.repeat(-1))), dtype=torch.int64)
    known = old[old >= 0]
    covered = torch.zeros(len(current), dtype=torch.bool)
    covered[known] = True
    if len(wanted) == len(current) and len(known) == len(current) and bool(covered.all()):
        return old
    missing = (~covered).nonzero().flatten()
    extra = (old < 0).nonzero().flatten()
    parts = [f"{len(missing)} of the KG's {what} names are not among them"
             + (f" ({_examples([current[i] for i in missing[:5].tolist()], len(missing))})" if len(missing) else ""),
             f"{len(extra)} given names are not in the KG"
             + (f" ({_examples([wanted[i] for i in extra[:5].tolist()], len(extra))})" if len(extra) else "")]
    repeated = _repeated(wanted)
    if repeated:
        parts.append(f"{len(repeated)} given names occur more than once ({_examples(repeated[:5], len(repeated))})")
    raise KGFormatError(f"{kg_name}: the {len(wanted)} given {what} names do not match the KG's {len(current)}: "
                        + "; ".join(parts) + "; expected the same names, each once, in any order")


def _repeated(names: Sequence[str]) -> List[str]:
    """Names that occur more than once, in order of first occurrence (only on error paths)."""
    counts: Dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [name for name, count in counts.items() if count > 1]


def _examples(names: Sequence[str], total: int) -> str:
    """``names`` (at most a few of ``total``), each cut by :func:`preview`, marked as examples if partial."""
    shown = ", ".join(preview(str(name)) for name in names)
    return shown if total <= len(names) else f"e.g. {shown}, ..."


def _triple_keys(kg: KG) -> Dict[str, np.ndarray]:
    """One int64 key per triple, equal exactly for equal triples, per split (fresh arrays, unsorted)."""
    if kg.num_entities * kg.num_relations * kg.num_entities < 2 ** 63:
        keys = {}
        for split in SPLITS:
            triples = kg.split(split).numpy()
            key = triples[:, 0] * kg.num_relations  # in place from here on: one 8-byte array per triple
            key += triples[:, 1]
            key *= kg.num_entities
            key += triples[:, 2]
            keys[split] = key
        return keys
    # (h * R + r) * E + t would overflow int64: number the distinct triples instead (slower, rarely needed).
    lengths = [len(kg.split(split)) for split in SPLITS]
    _, inverse = torch.unique(torch.cat([kg.split(split) for split in SPLITS]), dim=0, return_inverse=True)
    return {split: part.numpy().copy() for split, part in zip(SPLITS, torch.split(inverse, lengths))}


def split_warnings(kg: KG) -> List[str]:
    """Human-readable warnings, each with its count, about what the splits of ``kg`` hold silently.

    - duplicate triples within a split (kept as they are: filtered ranking treats copies as one fact);
    - valid/test triples that also occur in train (leakage);
    - relations that occur in valid/test but never in train (their queries cannot be learned);
    - entities that occur in valid/test but never in train (``unseen_entity_mask`` marks the triples).

    Vectorised: one in-place sort per split of int64 triple keys, the rest is bincount, searchsorted
    and boolean masks. numpy rather than torch: on CPU its int64 sort was the faster of the two,
    measured side by side at wikikg2's size (16M train triples), where the whole check takes a
    second or two.
    """
    messages = []
    keys = _triple_keys(kg)
    for split in SPLITS:
        keys[split].sort()
        duplicates = int(np.count_nonzero(keys[split][1:] == keys[split][:-1]))
        if duplicates:
            messages.append(f"{kg.name}/{split}: {duplicates} duplicate triple(s) (repeating an earlier triple of "
                            f"the same split, {len(keys[split])} triples in all); kept as they are")
    train_keys = keys["train"]
    for split in ("valid", "test"):
        position = np.minimum(np.searchsorted(train_keys, keys[split]), len(train_keys) - 1)
        leaked = int(np.count_nonzero(train_keys[position] == keys[split]))
        if leaked:
            messages.append(f"{kg.name}/{split}: {leaked} of {len(keys[split])} triples also occur in train "
                            f"(leakage: they are evaluated although the model trained on them)")
    del keys, train_keys

    evaluated = ("valid", "test")
    triples = {split: kg.split(split).numpy() for split in SPLITS}
    in_train = np.bincount(triples["train"][:, 1], minlength=kg.num_relations) > 0
    per_split = {split: np.bincount(triples[split][:, 1], minlength=kg.num_relations) for split in evaluated}
    only_evaluated = np.flatnonzero(~in_train & ((per_split["valid"] > 0) | (per_split["test"] > 0)))
    if len(only_evaluated):
        counts = [int(per_split[split][only_evaluated].sum()) for split in evaluated]
        names = [kg.relation_names[i] for i in only_evaluated[:5].tolist()]
        messages.append(f"{kg.name}: {len(only_evaluated)} relation(s) occur in valid/test but never in train, so "
                        f"their queries cannot be learned ({counts[0]} valid and {counts[1]} test triples): "
                        f"{_examples(names, len(only_evaluated))}")

    seen = np.zeros(kg.num_entities, dtype=bool)
    seen[triples["train"][:, 0]] = True
    seen[triples["train"][:, 2]] = True
    in_evaluated = np.zeros(kg.num_entities, dtype=bool)
    for split in evaluated:
        in_evaluated[triples[split][:, 0]] = True
        in_evaluated[triples[split][:, 2]] = True
    unseen = np.flatnonzero(in_evaluated & ~seen)
    if len(unseen):
        counts = [int(np.count_nonzero(~(seen[triples[split][:, 0]] & seen[triples[split][:, 2]])))
                  for split in evaluated]
        names = [kg.entity_names[i] for i in unseen[:5].tolist()]
        messages.append(f"{kg.name}: {len(unseen)} entit{'y occurs' if len(unseen) == 1 else 'ies occur'} in "
                        f"valid/test but never in train ({counts[0]} valid and {counts[1]} test triples involve "
                        f"them; KG.unseen_entity_mask marks them): {_examples(names, len(unseen))}")
    return messages


def _lookup(names: List[str], name: str, what: str, kg_name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        if name.isdigit() and int(name) < len(names):
            return int(name)
        raise UnknownNameError(f"{kg_name}: no {what} named {preview(name)}") from None


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
