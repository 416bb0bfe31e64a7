"""Ranking: ties, filtering against a brute-force reference, OGB protocol through ogb's Evaluator."""
from __future__ import annotations

import pytest
import torch

from kbit_dgl.data import KG
from kbit_dgl.data.synthetic import generate_kg
from kbit_dgl.eval import evaluate
from kbit_dgl.eval.ranking import filtered_ranks, rank_from_scores, summarize
from kbit_dgl.models.model import build_model


def test_all_equal_scores_get_the_middle_rank():
    scores = torch.zeros(2, 9)
    ranks = rank_from_scores(scores, torch.tensor([0, 8]))
    assert ranks.tolist() == [5.0, 5.0]  # (1 + 9) / 2, not 1


def test_ties_and_filter():
    scores = torch.tensor([[3.0, 5.0, 3.0, 1.0, 3.0]])
    assert rank_from_scores(scores, torch.tensor([0])).tolist() == [3.0]  # 1 higher + 2 ties / 2 + 1
    # filtering entity 1 (higher) and 2 (tied) leaves one tie
    rows, entities = torch.tensor([0, 0, 0]), torch.tensor([1, 2, 0])
    assert rank_from_scores(scores, torch.tensor([0]), rows, entities).tolist() == [1.5]


def test_summarize():
    metrics = summarize(torch.tensor([1.0, 2.0, 4.0, 20.0]))
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.05) / 4)
    assert metrics["mr"] == pytest.approx(6.75)
    assert (metrics["hits@1"], metrics["hits@3"], metrics["hits@10"]) == (0.25, 0.5, 0.75)


def brute_force_ranks(model, kg, triples):
    """One query at a time, the filter built from Python sets, scores from decoder.score."""
    known = {tuple(t) for t in torch.cat([kg.train, kg.valid, kg.test]).tolist()}
    entity_rows = model.all_entities()
    ranks = {"tail": [], "head": []}
    with torch.no_grad():
        for h, r, t in triples.tolist():
            relation = model.relations(torch.tensor(r))
            for direction in ("tail", "head"):
                def score(e):
                    head, tail = (h, e) if direction == "tail" else (e, t)
                    return float(model.decoder.score(entity_rows[head], relation, entity_rows[tail]))
                target = t if direction == "tail" else h
                true_score = score(target)
                greater = equal = 0
                for e in range(kg.num_entities):
                    triple = (h, r, e) if direction == "tail" else (e, r, t)
                    if e == target or triple in known:
                        continue
                    s = score(e)
                    greater += s > true_score
                    equal += s == true_score
                ranks[direction].append(1 + greater + equal / 2)
    return ranks


@pytest.mark.parametrize("name", ["transe", "rotate", "distmult"])
def test_filtered_ranks_match_brute_force(name):
    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3, seed=2)
    torch.manual_seed(0)
    model = build_model(name, kg.num_entities, kg.num_relations, 8, 12.0).double()
    triples = kg.test[:25]
    fast = filtered_ranks(model, triples, kg.filter_index, batch_size=7)
    expected = brute_force_ranks(model, kg, triples)
    for direction in ("tail", "head"):
        torch.testing.assert_close(fast[direction], torch.tensor(expected[direction], dtype=torch.float64))


def test_evaluate_reports_both_directions_and_unseen():
    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3, seed=2)
    model = build_model("transe", kg.num_entities, kg.num_relations, 8, 12.0)
    metrics = evaluate(model, kg, "valid", per_relation=True)
    assert metrics["protocol"] == "filtered"
    assert metrics["num_queries"] == 2 * len(kg.valid)
    assert metrics["tail"]["num_queries"] == len(kg.valid)
    assert metrics["mrr"] == pytest.approx((metrics["tail"]["mrr"] + metrics["head"]["mrr"]) / 2)
    assert sum(v["num_queries"] for v in metrics["per_relation"].values()) == 2 * len(kg.valid)


def test_ogb_protocol_through_ogb_evaluator():
    """Ranks against each query's own negatives; compared with a direct computation."""
    generator = torch.Generator().manual_seed(0)
    train = torch.stack([torch.randint(20, (50,), generator=generator), torch.randint(3, (50,), generator=generator),
                         torch.randint(20, (50,), generator=generator)], 1)
    test = train[:6].clone()
    negatives = {"head_neg": torch.randint(20, (6, 4), generator=generator),
                 "tail_neg": torch.randint(20, (6, 4), generator=generator)}
    kg = KG("ogbl-wikikg2", train, test, test, 20, 3, [str(i) for i in range(20)], ["0", "1", "2"],
            negatives={"valid": negatives, "test": negatives})
    torch.manual_seed(0)
    model = build_model("transe", 20, 3, 6, 12.0)
    metrics = evaluate(model, kg, "test")
    assert metrics["protocol"] == "ogb" and metrics["num_queries"] == 12
    with torch.no_grad():
        expected = []
        for i, (h, r, t) in enumerate(test.tolist()):
            positive = model.score_triples(torch.tensor([[h, r, t]]))[0]
            for direction, key in (("tail", "tail_neg"), ("head", "head_neg")):
                cands = negatives[key][i].tolist()
                negative_triples = torch.tensor([[h, r, c] if direction == "tail" else [c, r, t] for c in cands])
                scores = model.score_triples(negative_triples)
                rank = 1 + float((scores > positive).sum()) + 0.5 * float((scores == positive).sum())
                expected.append(rank)
    expected = torch.tensor(expected)
    assert metrics["mrr"] == pytest.approx(float((1 / expected).mean()), rel=1e-5)
    assert metrics["hits@3"] == pytest.approx(float((expected <= 3).float().mean()))
