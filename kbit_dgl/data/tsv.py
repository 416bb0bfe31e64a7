"""Load a KG from a folder of ``train.txt``/``valid.txt``/``test.txt`` (head TAB relation TAB tail).

Optional ``entities.dict`` / ``relations.dict`` (``<id> TAB <name>``) fix the id of every name;
without them ids are assigned in order of first appearance (train, then valid, then test).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import torch

from .kg import KG, SPLITS, KGFormatError

SPLIT_FILES = {split: f"{split}.txt" for split in SPLITS}


def read_dict(path: str) -> Tuple[Dict[str, int], List[str]]:
    """Read ``<id> TAB <name>`` lines; ids must be exactly 0..n-1."""
    name_to_id: Dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip().isdigit():
                raise KGFormatError(f"{path}, line {line_number}: expected '<integer id>\\t<name>', "
                                    f"got {line!r}")
            identifier, name = int(fields[0]), fields[1]
            if name in name_to_id:
                raise KGFormatError(f"{path}, line {line_number}: name {name!r} appears twice")
            name_to_id[name] = identifier
    ids = sorted(name_to_id.values())
    if ids != list(range(len(ids))):
        raise KGFormatError(f"{path}: expected ids 0..{len(ids) - 1} each exactly once")
    names = [""] * len(ids)
    for name, identifier in name_to_id.items():
        names[identifier] = name
    return name_to_id, names


def read_triples(path: str) -> List[Tuple[str, str, str, int]]:
    """Read ``head TAB relation TAB tail`` lines as strings, keeping each line number."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; expected one 'head<TAB>relation<TAB>tail' triple per line")
    triples = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3 or not all(fields):
                raise KGFormatError(f"{path}, line {line_number}: expected 3 tab-separated fields "
                                    f"(head, relation, tail), got {len(fields)}: {line!r}")
            triples.append((fields[0], fields[1], fields[2], line_number))
    if not triples:
        raise KGFormatError(f"{path}: the split is empty; expected at least one triple")
    return triples


def load_tsv_folder(folder: str, name: Optional[str] = None) -> KG:
    """Load ``folder/{train,valid,test}.txt`` (+ optional ``entities.dict``/``relations.dict``)."""
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder; expected train.txt, valid.txt, test.txt inside")
    raw = {split: read_triples(os.path.join(folder, file)) for split, file in SPLIT_FILES.items()}
    entity_dict = os.path.join(folder, "entities.dict")
    relation_dict = os.path.join(folder, "relations.dict")
    fixed = {}
    for what, path in (("entity", entity_dict), ("relation", relation_dict)):
        fixed[what] = read_dict(path) if os.path.exists(path) else None

    tables = {}
    for what in ("entity", "relation"):
        if fixed[what] is not None:
            tables[what] = fixed[what]
        else:
            tables[what] = ({}, [])

    def lookup(what: str, value: str, path: str, line_number: int) -> int:
        name_to_id, names = tables[what]
        identifier = name_to_id.get(value)
        if identifier is None:
            if fixed[what] is not None:
                dict_path = entity_dict if what == "entity" else relation_dict
                raise KGFormatError(f"{path}, line {line_number}: {what} {value!r} is not in {dict_path}; "
                                    f"expected every name in the splits to be covered by the dict")
            identifier = len(names)
            name_to_id[value] = identifier
            names.append(value)
        return identifier

    splits = {}
    for split, rows in raw.items():
        path = os.path.join(folder, SPLIT_FILES[split])
        ids = [(lookup("entity", h, path, n), lookup("relation", r, path, n), lookup("entity", t, path, n))
               for h, r, t, n in rows]
        splits[split] = torch.tensor(ids, dtype=torch.int64)
    return KG(name=name or os.path.basename(folder), num_entities=len(tables["entity"][1]),
              num_relations=len(tables["relation"][1]), entity_names=tables["entity"][1],
              relation_names=tables["relation"][1], **splits)
