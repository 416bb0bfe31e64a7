"""Rank candidate entities for queries by name, marking answers already known true.

:func:`predict` answers one query, :func:`predict_many` a batch (the serving path: queries scored
together, names looked up through one index, known answers found in one pass over the splits);
:func:`read_queries` reads a queries file (``head<TAB>relation<TAB>?`` or ``?<TAB>relation<TAB>tail``
per line). A k-bit model scores from its packed codes, a block of entities at a time.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .data.kg import preview
from .data.tsv import _locate_decode_error
from .errors import ConfigError, KGFormatError, UnknownNameError
from .eval.ranking import top_k

# (head name or None, relation name, tail name or None): exactly one of head / tail is None
Query = Tuple[Optional[str], str, Optional[str]]


@torch.no_grad()
def predict(model, kg, relation: str, head: Optional[str] = None, tail: Optional[str] = None,
            top: int = 10) -> List[Dict]:
    """Top ``top`` answers to (head, relation, ?) or (?, relation, tail).

    Each row: ``{"entity", "id", "score", "known"}`` where ``known`` names the split(s) holding
    that triple (empty when the triple is not in the KG).
    """
    return predict_many(model, kg, [(head, relation, tail)], top)[0]


@torch.no_grad()
def predict_many(model, kg, queries: Sequence[Query], top: int = 10, batch_size: int = 256,
                 exclude_known: bool = False, sources: Optional[Sequence[str]] = None) -> List[List[Dict]]:
    """Top ``top`` answers to every query (rows as :func:`predict`'s), scored ``batch_size`` at a time.

    ``exclude_known=True`` leaves triples already in the KG out of the answers (filtered top-k).
    ``sources`` names each query's origin in errors (e.g. ``queries.tsv line 7``).
    """
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    if top > kg.num_entities:
        raise ConfigError(f"top {top} is more than the {kg.num_entities} entities of {kg.name}")
    ids = query_ids(kg, queries, sources)
    known = known_answers(kg, ids)
    rows = model.candidate_rows()
    device = rows.device
    answers: List[List[Dict]] = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        for direction in ("tail", "head"):
            chosen = [i for i, (_, _, d) in enumerate(batch) if d == direction]
            if not chosen:
                continue
            anchors = torch.tensor([batch[i][0] for i in chosen], device=device)
            relations = torch.tensor([batch[i][1] for i in chosen], device=device)
            exclude = (None, None)
            if exclude_known:
                pairs = [(row, entity) for row, i in enumerate(chosen)
                         for entity in known.get(batch[i], {})]
                if pairs:
                    exclude = tuple(torch.tensor(column, device=device) for column in zip(*pairs))
            scores, entities = top_k(model, rows[anchors], relations, rows, direction, top, *exclude,
                                     what=f"{len(chosen)} {direction} queries")
            for row, i in enumerate(chosen):
                marks = known.get(batch[i], {})
                answers.append((start + i, [{"entity": kg.entity_names[e], "id": e, "score": float(v),
                                             "known": ",".join(marks.get(e, []))}
                                            for v, e in zip(scores[row].tolist(), entities[row].tolist())
                                            if v != float("-inf")]))
    return [rows for _, rows in sorted(answers, key=lambda pair: pair[0])]


def query_ids(kg, queries: Sequence[Query], sources: Optional[Sequence[str]] = None) -> List[Tuple[int, int, str]]:
    """(anchor id, relation id, direction) per query; names are looked up through one dict each."""
    entity_index = {name: i for i, name in enumerate(kg.entity_names)} if len(queries) > 1 else None
    relation_index = {name: i for i, name in enumerate(kg.relation_names)}
    result = []
    for number, (head, relation, tail) in enumerate(queries):
        where = sources[number] if sources else f"query {number + 1}"
        if (head is None) == (tail is None):
            raise ConfigError(f"{where}: give exactly one of head (predict tails) or tail (predict heads)")
        anchor = head if head is not None else tail
        try:
            anchor_id = entity_index[anchor] if entity_index is not None and anchor in entity_index \
                else kg.entity_id(anchor)
            relation_id = relation_index[relation] if relation in relation_index else kg.relation_id(relation)
        except UnknownNameError as error:
            raise UnknownNameError(f"{where}: {error.args[0]}") from None
        result.append((anchor_id, relation_id, "tail" if head is not None else "head"))
    return result


def known_answers(kg, ids: Sequence[Tuple[int, int, str]]) -> Dict[Tuple[int, int, str], Dict[int, List[str]]]:
    """{query: {answer id: [splits holding the triple]}} for the queries' (anchor, relation) pairs,
    found with one vectorised pass over each split."""
    known: Dict[Tuple[int, int, str], Dict[int, List[str]]] = {}
    for direction, anchor_column, answer_column in (("tail", 0, 2), ("head", 2, 0)):
        wanted = sorted({(a, r) for a, r, d in ids if d == direction})
        if not wanted:
            continue
        keys = torch.tensor([a * kg.num_relations + r for a, r in wanted])
        for split in ("train", "valid", "test"):
            triples = kg.split(split)
            if not len(triples):
                continue
            mask = torch.isin(triples[:, anchor_column].long() * kg.num_relations + triples[:, 1].long(), keys)
            for anchor, relation, answer in triples[mask][:, [anchor_column, 1, answer_column]].tolist():
                known.setdefault((anchor, relation, direction), {}).setdefault(answer, []).append(split)
    return known


def read_queries(path: str) -> Tuple[List[Query], List[str]]:
    """Queries from a file, one per line: ``head<TAB>relation<TAB>?`` (predict tails) or
    ``?<TAB>relation<TAB>tail`` (predict heads); blank lines and lines starting with ``#`` are skipped.
    Returns the queries and where each came from (``path line N``), for errors and output.

    The file must be UTF-8 (a leading byte-order mark is dropped). It is read as bytes and decoded
    line by line, so a binary or mis-encoded file is a :class:`KGFormatError` naming the line and the
    byte offset of the first bad byte; lines and names in errors are cut by :func:`preview`.
    """
    queries: List[Query] = []
    sources: List[str] = []
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise KGFormatError(f"{path}: cannot read the queries file ({error.strerror})") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:  # names the line, the byte offset and the bytes around it
                raise _locate_decode_error(path, error) from None
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            text = line.rstrip("\n").rstrip("\r")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) != 3 or [field == "?" for field in (fields[0], fields[2])].count(True) != 1 \
                    or not all(field.strip() for field in fields):
                raise KGFormatError(f"{path} line {number}: expected head<TAB>relation<TAB>? or "
                                    f"?<TAB>relation<TAB>tail (exactly one '?'), got {preview(text)}")
            head, relation, tail = fields
            queries.append((None if head == "?" else head, relation, None if tail == "?" else tail))
            sources.append(f"{path} line {number}")
    if not queries:
        raise KGFormatError(f"{path}: no queries (expected head<TAB>relation<TAB>? or ?<TAB>relation<TAB>tail lines)")
    return queries, sources

