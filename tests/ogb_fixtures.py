"""Writers of tiny OGB datasets in the exact on-disk layout (raw/*.csv.gz, split/<type>/*.pt, RELEASE_v1.txt)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from kbit_dgl.data.ogb import ogb_dataset_dir

# ------------------------------------------------------------------------------------ fixture writers


def _write_csv_gz(path: str, rows, header: Optional[Sequence[str]] = None) -> None:
    """Write rows as OGB does: gzip-compressed CSV, no index, header only where given."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, compression="gzip", header=header is not None, index=False)


def _write_release(base: str) -> None:
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "RELEASE_v1.txt"), "w") as handle:
        handle.write("test fixture in the layout of OGB release v1\n")


def _save_split(base: str, split_type: str, splits: Dict[str, dict]) -> None:
    folder = os.path.join(base, "split", split_type)
    os.makedirs(folder, exist_ok=True)
    for split, data in splits.items():
        torch.save(data, os.path.join(folder, f"{split}.pt"))


def write_ogb_wikikg2_fixture(root, num_entities: int = 30, num_relations: int = 4, num_train: int = 40,
                              num_eval: int = 6, num_neg: int = 5, seed: int = 0, as_tensors: bool = False,
                              with_mapping: bool = False) -> dict:
    """Write a tiny ``ogbl-wikikg2`` under ``root/ogbl_wikikg2`` in OGB's release layout.

    Files: ``RELEASE_v1.txt``; ``raw/edge.csv.gz`` (head,tail per line, no header),
    ``raw/edge_reltype.csv.gz`` (relation per line), ``raw/num-node-list.csv.gz`` ([num_entities]),
    ``raw/num-edge-list.csv.gz`` ([num_train]); the graph is the train triples, like OGB's;
    ``split/time/{train,valid,test}.pt`` = torch.save'd dicts of int64 numpy arrays (torch tensors when
    ``as_tensors``): train ``head, relation, tail``; valid/test also ``head_neg, tail_neg`` (n, num_neg).
    With ``with_mapping`` also ``mapping/nodeidx2entityid.csv.gz`` / ``reltype2relid.csv.gz``
    (header + ``idx,Q<idx>`` / ``idx,P<idx>`` rows).

    Returns the expected content: ``train/valid/test`` (n, 3) int64 tensors, ``negatives``
    ({split: {"head_neg", "tail_neg"}} tensors), ``num_entities``, ``num_relations``, ``dir``.
    """
    rng = np.random.default_rng(seed)
    base = ogb_dataset_dir("ogbl-wikikg2", str(root))
    _write_release(base)

    def triples(n: int) -> np.ndarray:
        rel = np.arange(n) % num_relations  # every relation occurs
        return np.stack([rng.integers(0, num_entities, n), rel, rng.integers(0, num_entities, n)], 1)

    train, valid, test = triples(num_train), triples(num_eval), triples(num_eval)
    raw = os.path.join(base, "raw")
    _write_csv_gz(os.path.join(raw, "edge.csv.gz"), train[:, [0, 2]])
    _write_csv_gz(os.path.join(raw, "edge_reltype.csv.gz"), train[:, [1]])
    _write_csv_gz(os.path.join(raw, "num-node-list.csv.gz"), [[num_entities]])
    _write_csv_gz(os.path.join(raw, "num-edge-list.csv.gz"), [[num_train]])

    convert = torch.from_numpy if as_tensors else (lambda a: a)
    def columns(data: np.ndarray) -> dict:
        return {key: convert(data[:, i].copy()) for i, key in enumerate(("head", "relation", "tail"))}

    splits, negatives = {"train": columns(train)}, {}
    for split, data in (("valid", valid), ("test", test)):
        head_neg = rng.integers(0, num_entities, (len(data), num_neg))
        tail_neg = rng.integers(0, num_entities, (len(data), num_neg))
        splits[split] = {**columns(data), "head_neg": convert(head_neg), "tail_neg": convert(tail_neg)}
        negatives[split] = {"head_neg": torch.from_numpy(head_neg), "tail_neg": torch.from_numpy(tail_neg)}
    _save_split(base, "time", splits)

    if with_mapping:
        mapping = os.path.join(base, "mapping")
        # Rows deliberately not in index order: the loader must place names by index.
        order = np.arange(num_entities)[::-1]
        _write_csv_gz(os.path.join(mapping, "nodeidx2entityid.csv.gz"),
                      [[i, f"Q{100 + i}"] for i in order], header=["node idx", "entity id"])
        _write_csv_gz(os.path.join(mapping, "reltype2relid.csv.gz"),
                      [[i, f"P{10 + i}"] for i in range(num_relations)], header=["reltype", "rel id"])

    return {"dir": base, "train": torch.from_numpy(train), "valid": torch.from_numpy(valid),
            "test": torch.from_numpy(test), "negatives": negatives, "num_entities": num_entities,
            "num_relations": num_relations}


# Node types written in a deliberately unsorted order; the loader orders them by name.
BIOKG_NODE_COUNTS = {"protein": 13, "drug": 10, "disease": 7}
BIOKG_OFFSETS = {"disease": 0, "drug": 7, "protein": 17}  # sorted names: disease, drug, protein
BIOKG_TRIPLETS = (  # (head type, relation name, tail type, relation id)
    ("drug", "drug-drug_interaction", "drug", 0),
    ("drug", "drug-protein", "protein", 1),
    ("protein", "protein-protein_binding", "protein", 2),
    ("disease", "disease-protein", "protein", 3),
)


def write_ogb_biokg_fixture(root, num_train_per_relation: int = 8, num_eval: int = 6, num_neg: int = 5,
                            seed: int = 0) -> dict:
    """Write a tiny ``ogbl-biokg`` (30 entities of 3 types, 4 relations) under ``root/ogbl_biokg``.

    Files: ``RELEASE_v1.txt``; ``raw/num-node-dict.csv.gz`` (header of type names, one row of counts);
    ``raw/triplet-type-list.csv.gz`` (head type, relation, tail type per line, no header);
    ``raw/relations/<head>___<relation>___<tail>/edge.csv.gz`` (LOCAL head,tail ids),
    ``edge_reltype.csv.gz`` (the relation id per edge) and ``num-edge-list.csv.gz``;
    ``split/random/{train,valid,test}.pt`` = torch.save'd dicts: ``head, relation, tail`` int64 numpy
    arrays of LOCAL ids, ``head_type, tail_type`` lists of type names, valid/test also ``head_neg,
    tail_neg`` (n, num_neg) int64 numpy arrays of LOCAL ids in the head's/tail's type.

    Returns the raw local content: for each split ``head, relation, tail, head_type, tail_type``
    (numpy / lists) and, for valid/test, ``head_neg, tail_neg``; plus ``dir``.
    """
    rng = np.random.default_rng(seed)
    base = ogb_dataset_dir("ogbl-biokg", str(root))
    _write_release(base)
    raw = os.path.join(base, "raw")
    types = list(BIOKG_NODE_COUNTS)
    _write_csv_gz(os.path.join(raw, "num-node-dict.csv.gz"), [[BIOKG_NODE_COUNTS[t] for t in types]],
                  header=types)
    _write_csv_gz(os.path.join(raw, "triplet-type-list.csv.gz"), [list(t[:3]) for t in BIOKG_TRIPLETS])

    def sample(n: int) -> dict:
        kinds = np.arange(n) % len(BIOKG_TRIPLETS)
        rows = [BIOKG_TRIPLETS[k] for k in kinds]
        return {"head": np.array([rng.integers(0, BIOKG_NODE_COUNTS[r[0]]) for r in rows], dtype=np.int64),
                "relation": np.array([r[3] for r in rows], dtype=np.int64),
                "tail": np.array([rng.integers(0, BIOKG_NODE_COUNTS[r[2]]) for r in rows], dtype=np.int64),
                "head_type": [r[0] for r in rows], "tail_type": [r[2] for r in rows]}

    splits = {"train": sample(num_train_per_relation * len(BIOKG_TRIPLETS))}
    for split in ("valid", "test"):
        data = sample(num_eval)
        for key in ("head", "tail"):
            data[f"{key}_neg"] = np.stack([rng.integers(0, BIOKG_NODE_COUNTS[t], num_neg)
                                           for t in data[f"{key}_type"]])
        splits[split] = data

    train = splits["train"]
    for head_type, relation, tail_type, rel_id in BIOKG_TRIPLETS:
        folder = os.path.join(raw, "relations", "___".join((head_type, relation, tail_type)))
        rows = train["relation"] == rel_id
        _write_csv_gz(os.path.join(folder, "edge.csv.gz"),
                      np.stack([train["head"][rows], train["tail"][rows]], 1))
        _write_csv_gz(os.path.join(folder, "edge_reltype.csv.gz"), train["relation"][rows][:, None])
        _write_csv_gz(os.path.join(folder, "num-edge-list.csv.gz"), [[int(rows.sum())]])
    _save_split(base, "random", splits)
    return {"dir": base, **splits}


#: the on-disk formats torch.save writes (zip or legacy, pickle protocol 2 or 5), as torch.save keywords
SAVES = {
    "zip-protocol2": dict(),
    "zip-protocol5": dict(pickle_protocol=5),
    "legacy-protocol2": dict(_use_new_zipfile_serialization=False),
    "legacy-protocol5": dict(_use_new_zipfile_serialization=False, pickle_protocol=5),
}
