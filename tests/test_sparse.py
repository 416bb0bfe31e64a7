"""Sparse row updates: equal to the dense update where they should be, touching only the batch's rows."""
from __future__ import annotations

import pytest
import torch
from conftest import small_config, train_interrupted

from kbit_dgl.io import load_saved
from kbit_dgl.models.model import build_model
from kbit_dgl.runs import model_from_config
from kbit_dgl.train.optim import OptimizerGroup, SparseAdagrad, make_optimizer
from kbit_dgl.train.steps import train_step
from kbit_dgl.train.trainer import train

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)


def twin_models(model="transe", num_entities=12, num_relations=3, dim=8):
    """The same initial tables, once dense and once with sparse gradients."""
    torch.manual_seed(0)
    dense = build_model(model, num_entities, num_relations, dim, 12.0)
    sparse = build_model(model, num_entities, num_relations, dim, 12.0, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def batch_loss(model, triples, negatives):
    """A training-shaped loss: positives, negatives shared by all queries, regularisation."""
    heads, relations, tails = model.entities(triples[:, 0]), model.relations(triples[:, 1]), \
        model.entities(triples[:, 2])
    positive = model.decoder.score(heads, relations, tails)
    negative = model.decoder.score_candidates(heads, relations, model.entities(negatives), "tail")
    return -torch.nn.functional.logsigmoid(positive).mean() - torch.nn.functional.logsigmoid(-negative).mean() \
        + 0.01 * heads.pow(2).mean()


STEPS = [  # (triples, shared negatives): entity 2 repeats within a step; 9-11 are never touched
    (torch.tensor([[0, 0, 1], [2, 1, 3], [2, 2, 0]]), torch.tensor([4, 5, 2])),
    (torch.tensor([[5, 0, 6], [7, 1, 2]]), torch.tensor([0, 8])),
    (torch.tensor([[1, 2, 3], [3, 0, 4]]), torch.tensor([6, 6, 7])),
]
UNTOUCHED = [9, 10, 11]


@pytest.mark.parametrize("model", ["transe", "rotate"])
def test_sparse_adagrad_equals_dense_adagrad(model):
    dense, sparse = twin_models(model)
    initial = dense.entity.weight.detach().clone()
    dense_opt = torch.optim.Adagrad(dense.parameters(), lr=0.1)
    sparse_opt = make_optimizer(sparse, "sparse_adagrad", lr=0.1)
    assert isinstance(sparse_opt, SparseAdagrad)
    for triples, negatives in STEPS:
        for net, opt in ((dense, dense_opt), (sparse, sparse_opt)):
            opt.zero_grad(set_to_none=True)
            batch_loss(net, triples, negatives).backward()
            opt.step()
        assert sparse.entity.weight.grad.is_sparse and not dense.entity.weight.grad.is_sparse
        for name in ("entity", "relation"):
            dense_table, sparse_table = getattr(dense, name).weight, getattr(sparse, name).weight
            assert torch.equal(dense_table, sparse_table), name
            assert torch.equal(dense_opt.state[dense_table]["sum"], sparse_opt.state[sparse_table]["sum"]), name
    assert torch.equal(sparse.entity.weight[UNTOUCHED], initial[UNTOUCHED])
    assert not torch.equal(sparse.entity.weight[:9], initial[:9])
    assert float(sparse_opt.state[sparse.entity.weight]["sum"][UNTOUCHED].abs().sum()) == 0.0


def test_sparse_adagrad_equals_dense_adagrad_given_the_same_gradient():
    """Bit for bit on a wider table too, rows in any order (nn.Embedding's dense backward may sum a
    repeated row in another order than coalesce on large batches, so the gradient is given here)."""
    generator = torch.Generator().manual_seed(0)
    dense = torch.nn.Parameter(torch.randn(500, 200, generator=generator))
    sparse = torch.nn.Parameter(dense.detach().clone())
    dense_opt, sparse_opt = torch.optim.Adagrad([dense], lr=0.05), SparseAdagrad([sparse], lr=0.05)
    for _ in range(5):
        rows = torch.randperm(500, generator=generator)[:150]
        values = torch.randn(150, 200, generator=generator)
        dense.grad = torch.zeros(500, 200).index_copy_(0, rows, values)
        sparse.grad = torch.sparse_coo_tensor(rows[None], values, (500, 200))
        dense_opt.step()
        sparse_opt.step()
        assert torch.equal(dense, sparse)
        assert torch.equal(dense_opt.state[dense]["sum"], sparse_opt.state[sparse]["sum"])


def test_torch_adagrad_sparse_path_is_close_to_dense():
    """torch.optim.Adagrad takes sparse gradients too; it matches dense to rounding (not bit for bit)."""
    dense, sparse = twin_models("transe")
    dense_opt, sparse_opt = torch.optim.Adagrad(dense.parameters(), lr=0.1), torch.optim.Adagrad(sparse.parameters(),
                                                                                                   lr=0.1)
    for triples, negatives in STEPS:
        for net, opt in ((dense, dense_opt), (sparse, sparse_opt)):
            opt.zero_grad(set_to_none=True)
            batch_loss(net, triples, negatives).backward()
            opt.step()
    torch.testing.assert_close(sparse.entity.weight, dense.entity.weight, rtol=1e-6, atol=1e-7)


def test_sparse_adam_touches_only_batch_rows():
    _, sparse = twin_models("rotate")
    optimizer = make_optimizer(sparse, "sparse_adam", lr=0.05)
    assert isinstance(optimizer, torch.optim.SparseAdam)
    triples, negatives = STEPS[0]
    before = sparse.entity.weight.detach().clone()
    relations_before = sparse.relation.weight.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    batch_loss(sparse, triples, negatives).backward()
    optimizer.step()
    touched = torch.unique(torch.cat([triples[:, 0], triples[:, 2], negatives]))
    untouched = torch.tensor([i for i in range(sparse.num_entities) if i not in set(touched.tolist())])
    changed = (sparse.entity.weight != before).any(dim=1)
    assert changed[touched].all() and not changed[untouched].any()
    state = optimizer.state[sparse.entity.weight]
    for moment in ("exp_avg", "exp_avg_sq"):
        assert (state[moment][touched] != 0).any(dim=1).all()
        assert float(state[moment][untouched].abs().sum()) == 0.0
    relation_changed = (sparse.relation.weight != relations_before).any(dim=1)
    assert relation_changed.tolist() == [r in set(triples[:, 1].tolist()) for r in range(sparse.num_relations)]


def test_sparse_optimizers_need_sparse_tables_and_known_names():
    dense, _ = twin_models()
    with pytest.raises(ValueError, match="sparse=True"):
        make_optimizer(dense, "sparse_adam", 0.1)
    with pytest.raises(ValueError, match="unknown train.optimizer 'sgd'"):
        make_optimizer(dense, "sgd", 0.1)


def test_sparse_adam_with_dense_parameters_steps_both():
    _, sparse = twin_models()
    sparse.extra = torch.nn.Linear(8, 8)  # stands in for an encoder's dense weights
    optimizer = make_optimizer(sparse, "sparse_adam", 0.1)
    assert isinstance(optimizer, OptimizerGroup)
    triples, negatives = STEPS[0]
    extra_before = sparse.extra.weight.detach().clone()
    loss = batch_loss(sparse, triples, negatives) + sparse.extra(sparse.entities(triples[:, 0])).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(sparse.extra.weight, extra_before)
    restored = make_optimizer(sparse, "sparse_adam", 0.1)
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(restored.optimizers[0].state_dict()["state"][0]["exp_avg"],
                       optimizer.optimizers[0].state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.01), ("sparse_adam", 0.01), ("sparse_adagrad", 0.1),
                                           ("rowwise_adagrad", 0.1)])
def test_short_training_with_each_optimizer(small_kg, tmp_path, optimizer, lr):
    config = small_config("rotate", epochs=2, lr=lr, optimizer=optimizer, regularization=1e-4)
    metrics = train(config, small_kg, str(tmp_path / optimizer), progress=False)
    assert 0 < metrics["test"]["mrr"] <= 1 and metrics["steps"] > 0
    checkpoint = load_saved(tmp_path / optimizer / "checkpoint.pt")
    assert checkpoint["optimizer_name"] == optimizer


def test_training_step_changes_only_batch_rows(small_kg):
    config = small_config("transe", epochs=1, lr=0.1, optimizer="sparse_adagrad")
    torch.manual_seed(0)
    model = model_from_config(config, small_kg)
    optimizer = make_optimizer(model, "sparse_adagrad", config.train.lr)
    before = model.entity.weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    positives = small_kg.train[:64]
    loss = train_step(model, positives, config, generator, "tail")
    loss.backward()
    optimizer.step()
    negatives = torch.Generator().manual_seed(0)
    negative_ids = torch.randint(small_kg.num_entities, (1, config.train.num_negatives), generator=negatives)
    touched = set(positives[:, 0].tolist()) | set(positives[:, 2].tolist()) | set(negative_ids.flatten().tolist())
    changed = set((model.entity.weight != before).any(dim=1).nonzero().flatten().tolist())
    assert changed and changed <= touched


def test_qat_with_sparse_optimizer_trains(small_kg, tmp_path):
    config = small_config("transe", epochs=2, lr=0.1, optimizer="sparse_adagrad", qat_bits=4)
    metrics = train(config, small_kg, str(tmp_path / "qat"), progress=False)
    assert 0 < metrics["test"]["mrr"] <= 1


def test_resume_with_sparse_optimizer_equals_uninterrupted_run(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=4, lr=0.01, optimizer="sparse_adam")
    reference = train(config, small_kg, str(tmp_path / "whole"), progress=False)

    train_interrupted(config, small_kg, tmp_path / "split", monkeypatch)
    other = small_config("transe", epochs=4, lr=0.01, optimizer="sparse_adagrad")
    with pytest.raises(ValueError, match="train.optimizer=sparse_adam"):
        train(other, small_kg, str(tmp_path / "split"), resume=True, progress=False)
    resumed = train(config, small_kg, str(tmp_path / "split"), resume=True, progress=False)

    whole = load_saved(tmp_path / "whole" / "checkpoint.pt")
    split = load_saved(tmp_path / "split" / "checkpoint.pt")
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], split["model"][key]), key
    for index, state in whole["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(split["optimizer"]["state"][index][name])), name
    assert resumed["test"] == reference["test"]
    assert resumed["history"] == reference["history"]


def test_rowwise_adagrad_keeps_one_accumulator_per_row_and_matches_the_formula():
    from kbit_dgl.train.optim import RowwiseAdagrad

    table = torch.nn.Embedding(10, 4, sparse=True)
    start = table.weight.detach().clone()
    optimizer = RowwiseAdagrad(table.parameters(), lr=0.1)
    ids = torch.tensor([2, 5, 2])
    table(ids).pow(2).sum().backward()
    optimizer.step()
    grad = torch.zeros(10, 4)
    grad.index_add_(0, ids, 2 * start[ids])
    state = optimizer.state[table.weight]["sum"]
    assert state.shape == (10,)
    expected_sum = grad.pow(2).mean(1)
    assert torch.allclose(state, expected_sum)
    touched = torch.tensor([2, 5])
    expected = start[touched] - 0.1 * grad[touched] / (expected_sum[touched].sqrt().unsqueeze(1) + 1e-10)
    assert torch.allclose(table.weight[touched], expected)
    untouched = torch.tensor([0, 1, 3, 4, 6, 7, 8, 9])
    assert torch.equal(table.weight[untouched], start[untouched])


def test_one_row_wise_adagrad_formula_serves_every_mode():
    """One process, N processes (DGL's NodeEmbedding) and DistDGL all step through
    optim.rowwise_adagrad_rows: the formula is written once."""
    import pathlib

    import kbit_dgl.train as train_package

    folder = pathlib.Path(train_package.__file__).parent
    sources = {path.name: path.read_text() for path in folder.glob("*.py")}
    assert [name for name, text in sources.items() if ".pow(2).mean(1" in text] == ["optim.py"]
    assert all("rowwise_adagrad_rows(" in sources[name] for name in ("optim.py", "distributed.py", "distdgl.py"))
