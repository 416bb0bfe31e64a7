"""The 1vsAll / KvsAll regime (issue #30): the objectives against hand-written references, the N3 and
DURA regularizers against kbc's and DURA's formulas, relation prediction, the sampled softmax, and
the refusals, all before anything is written."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import small_config

from kbit_dgl.data.kg import KG
from kbit_dgl.errors import ConfigError
from kbit_dgl.models.decoders import make_decoder
from kbit_dgl.models.regularizers import regularization
from kbit_dgl.runs import check_config, model_from_config
from kbit_dgl.train.objectives import KvsAll, OneVsAll, make_objective
from kbit_dgl.train.trainer import Trainer, train


def _kg(num_entities=30, num_relations=3, triples=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randint(num_entities, (triples,), generator=generator)
    relations = torch.randint(num_relations, (triples,), generator=generator)
    tails = torch.randint(num_entities, (triples,), generator=generator)
    train = torch.unique(torch.stack([heads, relations, tails], 1), dim=0)
    return KG(name="tiny", train=train, valid=train[:10], test=train[10:20], num_entities=num_entities,
              num_relations=num_relations, entity_names=[f"e{i}" for i in range(num_entities)],
              relation_names=[f"r{i}" for i in range(num_relations)])


def _config(model="complex", **train):
    config = small_config(model, **{"objective": "1vsall", "optimizer": "adagrad", "lr": 0.1, **train})
    config.model.dim = 8
    return config


@pytest.mark.parametrize("reciprocal", ["true", "false"])
@pytest.mark.parametrize("model", ["complex", "distmult", "cp", "rescal", "rotate"])
def test_1vsall_is_cross_entropy_of_both_queries_against_every_entity(model, reciprocal):
    kg = _kg()
    config = _config(model)
    config.model.reciprocal = reciprocal
    torch.manual_seed(0)
    net = model_from_config(config, kg)
    batch = kg.train[:16]
    loss = OneVsAll(config, kg).loss(net, batch, torch.Generator().manual_seed(0))
    rows, num_relations = net.all_entities(), kg.num_relations
    expected = []
    for head, relation, tail in batch.tolist():  # one query at a time, through the reference scorer
        tail_scores = net.decoder.score_candidates_reference(
            rows[head:head + 1], net.relations(torch.tensor([relation])), rows, "tail")
        if reciprocal == "true":
            head_scores = net.decoder.score_candidates_reference(
                rows[tail:tail + 1], net.relations(torch.tensor([relation + num_relations])), rows, "tail")
        else:
            head_scores = net.decoder.score_candidates_reference(
                rows[tail:tail + 1], net.relations(torch.tensor([relation])), rows, "head")
        expected += [F.cross_entropy(tail_scores, torch.tensor([tail])),
                     F.cross_entropy(head_scores, torch.tensor([head]))]
    assert float(loss) == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)


def test_kvsall_labels_are_every_answer_in_the_training_split():
    kg = _kg(triples=400)
    objective = KvsAll(_config("distmult", objective="kvsall"), kg)
    answers = {}
    for head, relation, tail in kg.train.tolist():
        answers.setdefault((head, relation), set()).add(tail)
        answers.setdefault((tail, relation + kg.num_relations), set()).add(head)
    assert len(objective.examples) == len(answers)
    picked = torch.randperm(len(objective.examples), generator=torch.Generator().manual_seed(1))[:40]
    labels, first = objective.labels(objective.examples[picked, 2])
    for row, (anchor, code, _) in enumerate(objective.examples[picked].tolist()):
        assert set(torch.nonzero(labels[row]).flatten().tolist()) == answers[(anchor, code)]
        assert int(first[row]) in answers[(anchor, code)]


def test_kvsall_loss_is_binary_cross_entropy_with_libkge_smoothing():
    kg = _kg()
    config = _config("distmult", objective="kvsall", label_smoothing=0.1)
    config.model.reciprocal = "true"
    net = model_from_config(config, kg)
    objective = KvsAll(config, kg)
    batch = objective.examples[:12]
    labels, _ = objective.labels(batch[:, 2])
    rows = net.all_entities()
    scores = torch.stack([net.decoder.score_candidates_reference(rows[a:a + 1], net.relations(torch.tensor([c])),
                                                                 rows, "tail")[0] for a, c, _ in batch.tolist()])
    smoothed = 0.9 * labels + 1.0 / kg.num_entities
    expected = F.binary_cross_entropy_with_logits(scores, smoothed, reduction="sum") / len(batch)
    assert float(objective.loss(net, batch, torch.Generator())) == pytest.approx(float(expected), rel=1e-5)


def test_the_sampled_softmax_scores_the_answer_and_a_corrected_shared_sample():
    kg = _kg(num_entities=40)
    config = _config("distmult", num_candidates=10, optimizer="sparse_adam")
    config.model.reciprocal = "true"
    net = model_from_config(config, kg)
    batch = kg.train[:8]
    objective = OneVsAll(config, kg)
    loss = objective.loss(net, batch, torch.Generator().manual_seed(3))
    sampled = torch.randint(40, (10,), generator=torch.Generator().manual_seed(3))  # the same draw
    rows = net.all_entities()
    anchors = torch.cat([batch[:, 0], batch[:, 2]])
    answers = torch.cat([batch[:, 2], batch[:, 0]])
    relations = net.relations(torch.cat([batch[:, 1], batch[:, 1] + kg.num_relations]))
    full = net.decoder.score_candidates(rows[anchors], relations, rows, "tail")
    logits = torch.cat([full.gather(1, answers[:, None]), full[:, sampled] + math.log(39 / 10)], 1)
    logits[:, 1:][sampled[None, :] == answers[:, None]] = float("-inf")  # a sample that hits the answer
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, torch.zeros(16, dtype=torch.long))), rel=1e-5)
    loss.backward()
    assert net.entity.weight.grad.is_sparse  # sampled rows only: sparse optimizers apply


def test_relation_prediction_adds_its_weighted_cross_entropy():
    kg = _kg()
    config = _config("cp")
    config.model.reciprocal = "true"
    net = model_from_config(config, kg)
    batch = kg.train[:10]
    plain = OneVsAll(config, kg).loss(net, batch, torch.Generator())
    config.train.relation_prediction = 0.5
    with_relations = OneVsAll(config, kg).loss(net, batch, torch.Generator())
    rows = net.all_entities()
    heads, tails = torch.cat([batch[:, 0], batch[:, 2]]), torch.cat([batch[:, 2], batch[:, 0]])
    targets = torch.cat([batch[:, 1], batch[:, 1] + kg.num_relations])
    scores = torch.stack([torch.stack([net.decoder.score(rows[h], net.relation.weight[r], rows[t])
                                       for r in range(2 * kg.num_relations)]) for h, t in zip(heads, tails)])
    assert float(with_relations - plain) == pytest.approx(0.5 * float(F.cross_entropy(scores, targets)), rel=1e-4)


def test_n3_and_dura_follow_kbc_and_dura():
    torch.manual_seed(0)
    complex_ = make_decoder("complex", 6)
    h, r, t = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    modulus = [torch.sqrt(x[:, :3] ** 2 + x[:, 3:] ** 2) for x in (h, r, t)]
    kbc = 0.05 * sum(torch.sum(torch.abs(f) ** 3) for f in modulus) / 4  # kbc's N3.forward
    assert float(regularization("n3", 0.05, complex_, h, r, t)) == pytest.approx(float(kbc), rel=1e-6)
    fh, fr, ft = modulus
    dura = 0.1 * (0.5 * torch.sum(ft ** 2 + fh ** 2) + 1.5 * torch.sum(fh ** 2 * fr ** 2 + ft ** 2 * fr ** 2)) / 4
    assert float(regularization("dura", 0.1, complex_, h, r, t)) == pytest.approx(float(dura), rel=1e-6)
    rescal = make_decoder("rescal", 3)
    h, t, matrix = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3, 3)
    expected = 0.1 * (torch.sum(h ** 2 + t ** 2) + torch.sum(torch.bmm(matrix.transpose(1, 2), h.unsqueeze(-1)) ** 2
                                                           + torch.bmm(matrix, t.unsqueeze(-1)) ** 2)) / 4
    got = regularization("dura", 0.1, rescal, h, matrix.reshape(4, 9), t)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    assert float(regularization("l2", 0.1, complex_, h[:, :1], r[:, :1], t[:, :1])) == pytest.approx(
        float(0.1 * (h[:, :1].pow(2).mean() + t[:, :1].pow(2).mean() + r[:, :1].pow(2).mean())))


@pytest.mark.parametrize("objective", ["1vsall", "kvsall"])
def test_the_regime_trains_resumes_exactly_and_beats_chance(objective, small_kg, tmp_path):
    config = _config("complex", objective=objective, regularizer="n3", regularization=0.01, epochs=6,
                     valid_every=2, batch_size=100)
    config.model.dim = 32
    whole = train(config, small_kg, str(tmp_path / "whole"), progress=False)
    assert whole["objective"] == objective and whole["test"]["mrr"] > (0.3 if objective == "1vsall" else 0.1)
    config.train.max_epochs = 3
    train(config, small_kg, str(tmp_path / "part"), progress=False)
    config.train.max_epochs = 6
    resumed = train(config, small_kg, str(tmp_path / "part"), resume=True, progress=False)
    assert resumed["test"] == whole["test"]


def test_the_trainer_step_takes_the_objective(small_kg):
    config = _config("distmult", objective="kvsall", optimizer="adam", lr=0.01)
    trainer = Trainer(config, small_kg)
    assert len(trainer.examples) > len(small_kg.train)  # distinct queries, both directions
    before = trainer.model.entity.weight.detach().clone()
    assert trainer.step(trainer.examples[:32]) > 0
    assert not trainer.model.entity.sparse and not torch.equal(before, trainer.model.entity.weight)


@pytest.mark.parametrize("changes, message", [
    ({"objective": "2vsall"}, "train.objective must be one of"),
    ({"objective": "kvsall", "num_candidates": 5}, "num_candidates=5 is for train.objective=1vsall"),
    ({"objective": "negative_sampling", "num_candidates": 5}, "num_candidates=5 is for"),
    ({"num_candidates": -1}, "num_candidates must be >= 0"),
    ({"regularization": float("inf")}, "regularization must be finite"),
    ({"regularization": float("nan")}, "regularization must be finite"),
    ({"relation_prediction": float("nan")}, "relation_prediction must be finite"),
    ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ({"optimizer": "sparse_adam"}, "every row of the entity table"),
    ({"num_procs": 2}, "trains in one process"),
    ({"qat_bits": 4}, "trains float tables"),
    ({"subsampling": True}, "subsampling"),
    ({"regularizer": "n4"}, "train.regularizer must be one of"),
    ({"objective": "negative_sampling", "relation_prediction": 1.0}, "relation_prediction is for"),
])
def test_bad_settings_are_refused_before_anything_is_written(changes, message, small_kg, tmp_path):
    config = _config("complex", **changes)
    with pytest.raises(ConfigError, match=message):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_an_objective_or_regularizer_the_model_cannot_use_is_refused_by_name(small_kg, tmp_path):
    for model, changes, message in [("transe", {"regularizer": "n3"}, "model.name=transe has none"),
                                    ("rescal", {"regularizer": "n3"}, "model.name=rescal has none"),
                                    ("rotate", {"regularizer": "dura"}, "model.name=rotate has none")]:
        with pytest.raises(ConfigError, match=message):
            train(_config(model, **changes), small_kg, str(tmp_path / "run"), progress=False)
    check_config(_config("rescal", regularizer="dura"))
    config = _config("distmult", num_candidates=small_kg.num_entities)
    with pytest.raises(ConfigError, match="not below the KG's"):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    config = _config("distmult")
    config.model.encoder = "rgcn"
    with pytest.raises(ConfigError, match="trains shallow models"):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
    assert make_objective(small_config("transe"), small_kg).name == "negative_sampling"
