"""Issue #12, KG level: the filter cache of a replaced KG."""
from __future__ import annotations

import dataclasses

import torch

from kbit_dgl.data.kg import FilterIndex
from kbit_dgl.data.synthetic import generate_kg

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
