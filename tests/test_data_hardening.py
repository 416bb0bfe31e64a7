"""Issue #12, KG level: split-level warnings, 1-entity KGs, the filter cache of a replaced KG, and
renumbering a KG to given id maps (``KG.reindexed``)."""
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

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

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


# ------------------------------------------------------------------------------------ reindexed()

def shuffled(names, seed):
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    return [names[i] for i in order]


def named_triples(kg, split):
    return [(kg.entity_names[h], kg.relation_names[r], kg.entity_names[t]) for h, r, t in kg.split(split).tolist()]


def test_reindexed_round_trip_keeps_every_triple_by_name():
    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3, seed=2)
    entities, relations = shuffled(kg.entity_names, 1), shuffled(kg.relation_names, 2)
    moved = kg.reindexed(entities, relations)
    assert moved.entity_names == entities and moved.relation_names == relations
    assert moved.entity_id(entities[0]) == 0 and moved.relation_id(relations[3]) == 3
    for split in ("train", "valid", "test"):
        assert named_triples(moved, split) == named_triples(kg, split)
        assert not torch.equal(moved.split(split), kg.split(split))
    back = moved.reindexed(kg.entity_names, kg.relation_names)
    for split in ("train", "valid", "test"):
        assert torch.equal(back.split(split), kg.split(split))
    assert moved.relation_info == kg.relation_info
    assert kg.reindexed(list(kg.entity_names), tuple(kg.relation_names)) is kg  # same order: no copy


def test_reindexed_filtered_ranks_are_invariant_for_a_permuted_model():
    from kbit_dgl.eval.ranking import filtered_ranks
    from kbit_dgl.models.model import build_model

    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3, seed=2)
    torch.manual_seed(0)
    model = build_model("distmult", kg.num_entities, kg.num_relations, 8, 12.0).double()
    moved = kg.reindexed(shuffled(kg.entity_names, 3), shuffled(kg.relation_names, 4))
    permuted = build_model("distmult", kg.num_entities, kg.num_relations, 8, 12.0).double()
    entity_old = torch.tensor([kg.entity_id(n) for n in moved.entity_names])
    relation_old = torch.tensor([kg.relation_id(n) for n in moved.relation_names])
    with torch.no_grad():
        permuted.entity.weight.copy_(model.entity.weight[entity_old])
        permuted.relation.weight.copy_(model.relation.weight[relation_old])
    expected = filtered_ranks(model, kg.test, kg.filter_index)
    got = filtered_ranks(permuted, moved.test, moved.filter_index)
    for direction in ("tail", "head"):
        torch.testing.assert_close(got[direction], expected[direction])


def test_reindexed_permutes_negatives_and_entity_type():
    train = torch.tensor([[0, 0, 2], [1, 0, 3], [2, 1, 3]])
    negatives = {"valid": {"head_neg": torch.tensor([[0, 1]]), "tail_neg": torch.tensor([[2, 3]])}}
    kg = KG("typed", train, train[:1], train[:1], 4, 2, list("abcd"), ["treats", "binds"], negatives=negatives,
            entity_type=torch.tensor([0, 0, 1, 1]), type_names=["drug", "protein"])
    moved = kg.reindexed(["d", "a", "c", "b"], ["binds", "treats"])
    assert moved.train.tolist() == [[1, 1, 2], [3, 1, 0], [2, 0, 0]]
    assert moved.negatives["valid"]["head_neg"].tolist() == [[1, 3]]  # a, b
    assert moved.negatives["valid"]["tail_neg"].tolist() == [[2, 0]]  # c, d
    assert moved.entity_type.tolist() == [1, 0, 1, 0] and moved.type_names == ["drug", "protein"]
    assert kg.negatives["valid"]["head_neg"].tolist() == [[0, 1]]  # the original is untouched


def test_reindexed_name_mismatch_lists_counts_and_examples():
    kg = toy_kg([[0, 0, 1]], [[1, 0, 2]], [[2, 0, 1]], num_entities=8)
    names = [f"e{i}" for i in range(8)]
    with pytest.raises(KGFormatError) as info:
        kg.reindexed(names[:7] + ["x"], kg.relation_names)
    assert str(info.value) == ("toy: the 8 given entity names do not match the KG's 8: 1 of the KG's entity names "
                               "are not among them ('e7'); 1 given names are not in the KG ('x'); expected the "
                               "same names, each once, in any order")
    with pytest.raises(KGFormatError, match=r"7 of the KG's entity names are not among them \(e.g. 'e1', 'e2', "
                                            r"'e3', 'e4', 'e5', \.\.\.\); 0 given names.*1 given names occur more "
                                            r"than once \('e0'\)"):
        kg.reindexed(["e0"] * 8, kg.relation_names)
    with pytest.raises(KGFormatError, match=r"the 2 given relation names do not match the KG's 3"):
        kg.reindexed(names, ["r0", "r1"])
