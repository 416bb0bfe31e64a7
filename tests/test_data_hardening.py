"""Issue #12, KG level: split-level warnings, 1-entity KGs, the filter cache of a replaced KG."""
from __future__ import annotations

import dataclasses
import logging
import types

import pytest
import torch
from test_data import write_folder

from kbit_dgl.data import KG, KGFormatError, load_dataset
from kbit_dgl.data import kg as kg_module
from kbit_dgl.data.kg import FilterIndex
from kbit_dgl.data.synthetic import generate_kg
from kbit_dgl.data.tsv import load_tsv_folder

# ------------------------------------------------------------------------------------ split-level warnings

def toy_kg(train, valid, test, num_entities=6, num_relations=3, **kwargs) -> KG:
    return KG("toy", torch.tensor(train), torch.tensor(valid), torch.tensor(test), num_entities, num_relations,
              [f"e{i}" for i in range(num_entities)], [f"r{i}" for i in range(num_relations)], **kwargs)


def test_split_warnings_hand_counted(caplog):
    kg = toy_kg(train=[[0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 0, 2], [2, 1, 3]],  # 2 extra copies of (0, 0, 1)
                valid=[[0, 0, 1], [1, 0, 2], [1, 0, 2], [3, 2, 4]],   # 2 rows leak (+1 duplicate), r2 and e4 unseen
                test=[[2, 1, 3], [5, 2, 0], [4, 0, 1]])               # 1 leaks, r2 and e4, e5 unseen
    assert kg.warnings == []
    with caplog.at_level(logging.WARNING, logger="kbit_dgl"):
        new = kg.check_splits()
    assert new == kg.warnings == caplog.messages
    assert kg.warnings == [
        "toy/train: 2 duplicate triple(s) (repeating an earlier triple of the same split, 5 triples in all); "
        "kept as they are",
        "toy/valid: 1 duplicate triple(s) (repeating an earlier triple of the same split, 4 triples in all); "
        "kept as they are",
        "toy/valid: 3 of 4 triples also occur in train (leakage: they are evaluated although the model trained "
        "on them)",
        "toy/test: 1 of 3 triples also occur in train (leakage: they are evaluated although the model trained "
        "on them)",
        "toy: 1 relation(s) occur in valid/test but never in train, so their queries cannot be learned "
        "(1 valid and 1 test triples): 'r2'",
        "toy: 2 entities occur in valid/test but never in train (1 valid and 2 test triples involve them; "
        "KG.unseen_entity_mask marks them): 'e4', 'e5'",
    ]
    assert int(kg.unseen_entity_mask("test").sum()) == 2
    assert kg.check_splits() == [] and len(kg.warnings) == 6  # a second call adds nothing
    assert len(kg.train) == 5 and len(kg.valid) == 4  # duplicates are kept


def test_split_warnings_list_at_most_five_names():
    train = [[0, 0, 1]]
    test = [[0, r, 1] for r in range(1, 8)]
    kg = toy_kg(train, train, test, num_relations=8)
    message = [w for w in kg_module.split_warnings(kg) if "relation(s)" in w][0]
    assert message.startswith("toy: 7 relation(s) occur in valid/test")
    assert message.endswith("e.g. 'r1', 'r2', 'r3', 'r4', 'r5', ...")


def test_clean_kgs_have_no_warnings(tmp_path):
    assert load_dataset("synthetic").warnings == []
    assert generate_kg(seed=3).check_splits() == []
    rows = [("a", "r", "b"), ("b", "r", "a")]
    kg = load_tsv_folder(write_folder(tmp_path / "kg", train=rows, valid=[("a", "r", "a")], test=[("b", "r", "b")]))
    assert kg.warnings == []


def test_triple_keys_fallback_when_int64_would_overflow():
    triples = torch.tensor([[5, 1, 7], [2 ** 40, 1, 3], [5, 1, 7], [2 ** 40, 0, 3], [2 ** 40, 1, 3]])
    stub = types.SimpleNamespace(num_entities=2 ** 41, num_relations=2,
                                 split=lambda name: {"train": triples[:3], "valid": triples[3:4],
                                                     "test": triples[4:]}[name])
    keys = kg_module._triple_keys(stub)
    flat = list(keys["train"]) + list(keys["valid"]) + list(keys["test"])
    for i in range(5):
        for j in range(5):
            assert (flat[i] == flat[j]) == bool(torch.equal(triples[i], triples[j])), (i, j)


def test_one_entity_kg_is_rejected(tmp_path):
    with pytest.raises(KGFormatError, match=r"toy: 1 entity; expected at least 2"):
        toy_kg([[0, 0, 0]], [[0, 0, 0]], [[0, 0, 0]], num_entities=1, num_relations=1)
    rows = [("solo", "r", "solo")]
    with pytest.raises(KGFormatError, match=r"one: 1 entity; expected at least 2"):
        load_tsv_folder(write_folder(tmp_path / "one", train=rows, valid=rows, test=rows))


# ------------------------------------------------------------------------------------ replace() and the filter

def test_replaced_kg_rebuilds_its_filter_index():
    from kbit_dgl.eval.ranking import filtered_ranks
    from kbit_dgl.models.model import build_model

    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3, seed=2)
    torch.manual_seed(0)
    model = build_model("distmult", kg.num_entities, kg.num_relations, 8, 12.0).double()
    stale = kg.filter_index  # cached now
    # distmult: a matrix product; TransE/RotatE would torch.compile their kernel on first use (slow).
    # New test triples: every (anchor, relation) query gets all entities as true answers, so the
    # filtered rank of each is 1 only when the filter knows the new triples.
    anchor, relation = int(kg.test[0, 0]), int(kg.test[0, 1])
    new_test = torch.tensor([[anchor, relation, e] for e in range(kg.num_entities)])
    replaced = dataclasses.replace(kg, test=new_test)
    ranks = filtered_ranks(model, new_test, replaced.filter_index)
    assert replaced.filter_index is not stale
    assert torch.all(ranks["tail"] == 1.0)
    fresh = FilterIndex(torch.cat([kg.train, kg.valid, new_test]), kg.num_entities, kg.num_relations)
    assert torch.equal(filtered_ranks(model, new_test, fresh)["head"], ranks["head"])
    assert not torch.all(filtered_ranks(model, new_test, stale)["tail"] == 1.0)  # the stale index would be wrong
    # An index passed explicitly is kept (pipelines/scaling.py keeps the full KG's for a train subset).
    assert dataclasses.replace(kg, train=kg.train[:10], _filter=stale).filter_index is stale


def test_replaced_kg_does_not_share_the_warnings_list():
    kg = toy_kg([[0, 0, 1], [0, 0, 1], [1, 0, 2]], [[2, 0, 0]], [[0, 0, 2]])
    assert len(kg.check_splits()) == 1
    replaced = dataclasses.replace(kg, train=torch.tensor([[0, 0, 1], [2, 0, 0], [1, 0, 2]]))
    assert [w.split(":")[0] for w in replaced.check_splits()] == ["toy/valid"]  # leakage now
    assert len(kg.warnings) == 1 and len(replaced.warnings) == 2  # what the loader saw is kept, not shared
