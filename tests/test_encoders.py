"""GNN encoders: shapes, no leakage in sampled batches, full = sampled = layer-wise inference,
a user's own encoder through the registry, R-GCN + DistMult end to end, config and CLI."""
from __future__ import annotations

import json
import os

import dgl
import pytest
import torch
from conftest import train_interrupted
from dgl.nn import RelGraphConv, SAGEConv

from kbit_dgl.cli import main
from kbit_dgl.config import Config
from kbit_dgl.data.synthetic import generate_kg
from kbit_dgl.eval import evaluate
from kbit_dgl.models.encoders import (
    CompGCNEncoder,
    GraphEncoder,
    GroupedRelGraphConv,
    basis_sums,
    edge_norm,
    register_encoder,
    resolve_encoder,
)
from kbit_dgl.runs import load_run, model_from_config
from kbit_dgl.train.encoder_training import SharedUniformNegatives, edge_loader, layer_fanouts, resolve_mode
from kbit_dgl.train.trainer import train

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def eager_kernels(monkeypatch):
    """The fused L1 kernels' torch.compile costs ~10 s per shape here and is tested elsewhere."""
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")


@pytest.fixture(scope="module")
def kg():
    return generate_kg(num_persons=60, num_cities=8, num_countries=3)


def encoder_config(model="distmult", encoder="rgcn", dim=16, epochs=3, **encoder_overrides):
    config = Config()
    config.model.name, config.model.dim, config.model.encoder = model, dim, encoder
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = 64, 16, 32
    config.train.max_epochs, config.train.valid_every, config.train.lr = epochs, epochs, 0.01
    config.encoder.num_bases = 4
    for key, value in encoder_overrides.items():
        setattr(config.encoder, key, value)
    return config


@pytest.mark.parametrize("regularizer", ["basis", "bdd"])
@pytest.mark.parametrize("decoder", ["distmult", "transe", "rotate"])
def test_rgcn_output_shapes(kg, regularizer, decoder):
    torch.manual_seed(0)
    model = model_from_config(encoder_config(decoder, regularizer=regularizer), kg)
    rows = model.all_entities()
    assert rows.shape == (kg.num_entities, model.decoder.entity_dim)
    assert model.encoder.graph.num_edges() == 2 * len(kg.train)
    assert int(model.encoder.graph.edata["etype"].max()) < 2 * kg.num_relations
    scores = model.score_triples(kg.test[:5])
    assert scores.shape == (5,) and torch.isfinite(scores).all()
    scores.sum().backward()  # gradients reach the table and the encoder
    assert model.entity.weight.grad is not None
    assert all(p.grad is not None for p in model.encoder.parameters())


FORMS = [("basis", False), ("basis", True), ("bdd", None), (None, None)]  # (regularizer, basis_first)


@pytest.mark.parametrize("regularizer,basis_first", FORMS)
@pytest.mark.parametrize("on_block", [False, True])
def test_grouped_relgraphconv_equals_dgl_relgraphconv(kg, regularizer, basis_first, on_block):
    """Same parameters, same values and gradients as dgl.nn.RelGraphConv, on the full graph and on
    a sampled block (fewer destination than source nodes), with layer norm and self-loop."""
    torch.manual_seed(0)
    graph = model_from_config(encoder_config(), kg).encoder.graph
    if on_block:
        sampler = dgl.dataloading.MultiLayerNeighborSampler([3])
        _, _, (graph,) = sampler.sample_blocks(graph, torch.arange(0, kg.num_entities, 3))
        graph.edata["etype"] = model_from_config(encoder_config(), kg).encoder.graph.edata["etype"][
            graph.edata[dgl.EID]]
    num_types = 2 * kg.num_relations
    kwargs = dict(regularizer=regularizer, num_bases=4 if regularizer else None, self_loop=True,
                  activation=torch.relu, layer_norm=True)
    reference, grouped = RelGraphConv(12, 12, num_types, **kwargs), GroupedRelGraphConv(12, 12, num_types, **kwargs)
    grouped.load_state_dict(reference.state_dict())
    grouped.basis_first = basis_first
    feats = [torch.randn(graph.num_src_nodes(), 12, requires_grad=True) for _ in range(2)]
    with torch.no_grad():
        feats[1].copy_(feats[0])
    norm = edge_norm(graph)
    outputs = [conv(graph, feat, graph.edata["etype"], norm) for conv, feat in zip((reference, grouped), feats)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    assert outputs[0].shape == (graph.num_dst_nodes(), 12)
    weights = torch.randn_like(outputs[0])
    for out in outputs:
        (out * weights).sum().backward()
    torch.testing.assert_close(feats[1].grad, feats[0].grad, rtol=1e-5, atol=1e-5)
    for (name, p_ref), (_, p_grouped) in zip(reference.named_parameters(), grouped.named_parameters()):
        torch.testing.assert_close(p_grouped.grad, p_ref.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("regularizer,basis_first", FORMS)
def test_grouped_relgraphconv_with_many_relations_of_skewed_counts(regularizer, basis_first):
    """Relations of 1 to ~300 edge pairs (many buckets of the batched products), some absent."""
    torch.manual_seed(1)
    num_types, num_nodes = 40, 90
    counts = (torch.rand(num_types) ** 4 * 300).long() * (torch.rand(num_types) > 0.2)
    etypes = torch.repeat_interleave(torch.arange(num_types), counts)
    src, dst = torch.randint(0, num_nodes, (2, len(etypes)))
    graph = dgl.graph((src, dst), num_nodes=num_nodes)
    kwargs = dict(regularizer=regularizer, num_bases=4 if regularizer else None, self_loop=False)
    reference, grouped = RelGraphConv(8, 8, num_types, **kwargs), GroupedRelGraphConv(8, 8, num_types, **kwargs)
    grouped.load_state_dict(reference.state_dict())
    grouped.basis_first = basis_first
    feats = [torch.randn(num_nodes, 8, requires_grad=True) for _ in range(2)]
    with torch.no_grad():
        feats[1].copy_(feats[0])
    outputs = [conv(graph, feat, etypes, edge_norm(graph)) for conv, feat in zip((reference, grouped), feats)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for out in outputs:
        out.square().sum().backward()
    torch.testing.assert_close(feats[1].grad, feats[0].grad, rtol=1e-4, atol=1e-5)
    for (name, p_ref), (_, p_grouped) in zip(reference.named_parameters(), grouped.named_parameters()):
        torch.testing.assert_close(p_grouped.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_bdd_needs_divisible_width(kg):
    with pytest.raises(ValueError, match="divisible"):
        model_from_config(encoder_config(regularizer="bdd", num_bases=5), kg)


def test_leakage_batch_edges_and_inverses_absent_from_own_blocks(kg):
    model = model_from_config(encoder_config(), kg)
    graph, num_train = model.encoder.graph, len(kg.train)
    negatives = SharedUniformNegatives(kg.num_entities, 8, 16, torch.Generator().manual_seed(0))
    etypes = graph.edata["etype"]

    def block_triples(blocks):
        found = set()
        for block in blocks:
            src, dst = block.edges()
            src, dst = block.srcdata[dgl.NID][src], block.dstdata[dgl.NID][dst]
            found |= set(zip(src.tolist(), etypes[block.edata[dgl.EID]].tolist(), dst.tolist()))
        return found

    leaks_without_exclusion = 0
    plain_sampler = dgl.dataloading.as_edge_prediction_sampler(dgl.dataloading.MultiLayerNeighborSampler([-1, -1]))
    plain = dgl.dataloading.DataLoader(graph, torch.arange(num_train), plain_sampler, batch_size=32)
    for _, pair_graph, blocks in plain:
        targets = kg.train[pair_graph.edata[dgl.EID]].tolist()
        leaks_without_exclusion += len({tuple(t) for t in targets} & block_triples(blocks))
    assert leaks_without_exclusion > 0  # the check below can see a leak when there is one

    for _, pair_graph, negative_graph, blocks in edge_loader(graph, num_train, [-1, -1], 32, negatives):
        batch = pair_graph.edata[dgl.EID]
        assert int(batch.max()) < num_train
        forbidden = set(batch.tolist()) | set((batch + num_train).tolist())
        for block in blocks:
            assert not forbidden & set(block.edata[dgl.EID].tolist())
        used = block_triples(blocks)
        for h, r, t in kg.train[batch].tolist():
            assert (h, r, t) not in used
            assert (t, r + kg.num_relations, h) not in used
        # the positives read back through the pair graph are the batch's own triples
        heads, tails = pair_graph.edges()
        ids = pair_graph.ndata[dgl.NID]
        assert torch.equal(torch.stack([ids[heads], etypes[batch], ids[tails]], 1), kg.train[batch])
        assert negative_graph.num_edges() == 8 * (len(batch) // 16 if len(batch) % 16 == 0 else 1)


@pytest.mark.parametrize("encoder,regularizer", [("rgcn", "basis"), ("rgcn", "bdd"), ("compgcn", "basis")])
def test_full_graph_sampled_and_layerwise_inference_agree(kg, encoder, regularizer):
    torch.manual_seed(0)
    model = model_from_config(encoder_config(encoder=encoder, regularizer=regularizer, dropout=0.0,
                                             layer_norm=True), kg)
    model.eval()
    graph, table, relations = model.encoder.graph, model.entity.weight, model.relation.weight
    with torch.no_grad():
        full = model.encoder(table, relations)
        sampler = dgl.dataloading.MultiLayerNeighborSampler([-1, -1])
        seeds = torch.arange(0, kg.num_entities, 3)
        loader = dgl.dataloading.DataLoader(graph, seeds, sampler, batch_size=10)
        for input_nodes, output_nodes, blocks in loader:
            sampled = model.encoder.forward_blocks(blocks, table[input_nodes], relations)
            torch.testing.assert_close(sampled, full[output_nodes], atol=1e-5, rtol=1e-5)
        layerwise = model.encoder.inference(table, relations, batch_size=13)
    torch.testing.assert_close(layerwise, full, atol=1e-5, rtol=1e-5)
    # eval-mode all_entities() is the cached layer-wise result, recomputed after a parameter changes
    first = model.all_entities()
    assert model.all_entities() is first and not first.requires_grad
    with torch.no_grad():
        model.entity.weight.add_(0.1)
    assert not torch.equal(model.all_entities(), first)


@register_encoder("test_sage")
class SAGEEncoder(GraphEncoder):
    """A user's encoder: GraphSAGE (mean) layers that ignore relation types, plus a learned
    per-relation message offset, written against the documented interface."""

    def __init__(self, graph, num_relations, dim, config):
        super().__init__(graph, config.inference_batch_size)
        self.num_layers = config.layers
        self.convs = torch.nn.ModuleList(SAGEConv(dim, dim, "mean") for _ in range(config.layers))

    def layer(self, index, graph, h, relation_state):
        h = self.convs[index](graph, (h, h[: graph.num_dst_nodes()]))
        return (torch.relu(h) if index < self.num_layers - 1 else h), relation_state


def test_user_encoder_plugs_in_and_trains(kg, tmp_path):
    assert resolve_encoder("test_sage") is SAGEEncoder
    assert resolve_encoder("kbit_dgl.models.encoders:CompGCNEncoder") is CompGCNEncoder
    with pytest.raises(ValueError, match="unknown model.encoder"):
        resolve_encoder("nope")
    config = encoder_config("distmult", "test_sage", epochs=10)
    torch.manual_seed(config.train.seed)
    untrained = evaluate(model_from_config(config, kg), kg, "test")["mrr"]
    metrics = train(config, kg, str(tmp_path / "run"), progress=False)
    assert metrics["encoder"] == "test_sage"
    assert metrics["test"]["mrr"] > untrained + 0.05


def test_rgcn_distmult_trains_end_to_end_and_resumes(kg, tmp_path, monkeypatch):
    config = encoder_config("distmult", "rgcn", epochs=6, regularizer="bdd")
    config.train.valid_every = 3
    torch.manual_seed(config.train.seed)
    untrained = evaluate(model_from_config(config, kg), kg, "test")["mrr"]
    reference = train(config, kg, str(tmp_path / "whole"), progress=False)
    assert reference["test"]["mrr"] > untrained + 0.05

    train_interrupted(config, kg, tmp_path / "split", monkeypatch)
    resumed = train(config, kg, str(tmp_path / "split"), resume=True, progress=False)
    assert resumed["test"] == reference["test"]
    _, _, loaded = load_run(str(tmp_path / "split"), kg)
    assert evaluate(loaded, kg, "test")["mrr"] == pytest.approx(resumed["test"]["mrr"])


@pytest.mark.parametrize("decoder", ["transe", "rotate"])
def test_sampled_training_runs(kg, tmp_path, decoder):
    config = encoder_config(decoder, "rgcn", epochs=2, mode="sampled", fanouts=[4, 4])
    metrics = train(config, kg, str(tmp_path / "run"), progress=False)
    assert metrics["steps"] == 2 * -(-len(kg.train) // config.train.batch_size)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in metrics["history"])
    assert 0 < metrics["test"]["mrr"] <= 1


def test_modes_fanouts_and_optimizer_checks(kg):
    config = encoder_config()
    assert resolve_mode(config, 1000) == "full" and resolve_mode(config, 10 ** 6) == "sampled"
    config.encoder.fanouts = [5]
    assert layer_fanouts(config, 3) == [5, 5, 5]
    config.encoder.fanouts = [5, 4]
    with pytest.raises(ValueError, match="fanouts"):
        layer_fanouts(config, 3)
    config.train.optimizer = "sparse_adam"
    with pytest.raises(ValueError, match="encoder.mode=sampled"):
        model_from_config(config, kg)  # full graph: every row is read each step
    config.encoder.mode = "sampled"
    config.model.encoder = "compgcn"
    with pytest.raises(ValueError, match="relation table"):
        model_from_config(config, kg)


def test_sampled_training_with_sparse_row_updates(kg, tmp_path):
    """Sampled R-GCN with sparse Adam (tables) + Adam (encoder): builds sparse tables and trains."""
    config = encoder_config(epochs=1, mode="sampled", fanouts=[2])
    config.train.optimizer = "sparse_adam"
    torch.manual_seed(0)
    model = model_from_config(config, kg)
    assert model.entity.sparse
    metrics = train(config, kg, str(tmp_path / "run"), progress=False)
    assert metrics["epochs"] == 1 and metrics["test"]["mrr"] > 0


def test_config_keys_and_cli(kg, tmp_path):
    config = Config()
    config.apply_overrides(["model.encoder=rgcn", "encoder.layers=1", "encoder.regularizer=bdd",
                            "encoder.fanouts=10,5", "encoder.self_loop=false"])
    assert config.encoder.fanouts == [10, 5] and config.encoder.self_loop is False
    config.apply_overrides(["encoder.fanouts=[3, -1]"])
    assert config.encoder.fanouts == [3, -1]
    with pytest.raises(ValueError, match="list of integers"):
        config.apply_overrides(["encoder.fanouts=many"])
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert Config.from_yaml(str(path)).to_dict() == config.to_dict()

    folder = tmp_path / "family"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        lines = [f"{kg.entity_names[h]}\t{kg.relation_names[r]}\t{kg.entity_names[t]}\n"
                 for h, r, t in kg.split(split).tolist()]
        (folder / f"{split}.txt").write_text("".join(lines))
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", str(folder), "--model", "distmult", "--out", run, "--no-progress",
                 "--set", "model.encoder=rgcn", "encoder.layers=2", "encoder.regularizer=bdd", "model.dim=16",
                 "train.max_epochs=1", "train.batch_size=128", "train.num_negatives=16"]) == 0
    saved = Config.from_yaml(os.path.join(run, "config.yaml"))
    assert saved.model.encoder == "rgcn" and saved.encoder.regularizer == "bdd"
    assert json.loads(open(os.path.join(run, "metrics.json")).read())["encoder"] == "rgcn"
    assert main(["evaluate", run, "--split", "test"]) == 0
    assert main(["train", "--dataset", str(folder), "--model", "rotate", "--encoder", "compgcn", "--out",
                 str(tmp_path / "run2"), "--no-progress", "--set", "model.dim=16", "train.max_epochs=1"]) == 0


@pytest.mark.parametrize("profile", ["skewed", "capped"])
def test_basis_sums_equals_a_dense_reference_with_isolated_nodes(profile):
    """Skewed: in-degrees 0, 1, 2 ... 35 (grouped by in-degree); capped: 0 or 2-3, as a sampled block's
    fan-out makes them (one padded group); duplicate edges in both."""
    torch.manual_seed(2)
    num_src, num_dst, bases, width = 50, 40, 3, 5
    if profile == "skewed":
        degree = torch.cat([torch.zeros(5, dtype=torch.long), torch.arange(1, 36)])[torch.randperm(num_dst)]
    else:
        degree = torch.cat([torch.zeros(2, dtype=torch.long), torch.randint(2, 4, (num_dst - 2,))])
    dst = torch.repeat_interleave(torch.arange(num_dst), degree)
    perm = torch.randperm(len(dst))
    dst, src = dst[perm], torch.randint(0, num_src, (len(dst),))
    feat = torch.randn(num_src, width, requires_grad=True)
    weights = torch.randn(len(dst), bases, requires_grad=True)
    out = basis_sums(src, dst, num_dst, feat, weights)
    adjacency = torch.zeros(num_dst, num_src, bases).index_put((dst, src), weights, accumulate=True)
    reference = torch.einsum("vsb,sd->vbd", adjacency, feat)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (feat, weights), grad)
    want = torch.autograd.grad(reference, (feat, weights), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert basis_sums(src[:0], dst[:0], 4, feat, weights[:0]).abs().sum() == 0


def test_basis_first_is_chosen_where_edges_barely_merge_into_relation_destination_pairs():
    conv = GroupedRelGraphConv(4, 4, 10, regularizer="basis", num_bases=2)
    distinct = torch.arange(100)  # 100 edges, 100 pairs (a sampled block)
    assert conv._use_basis_first(distinct, num_dst=50)
    merged = torch.arange(100) % 20  # 100 edges into 20 pairs (a full graph's hubs)
    assert not conv._use_basis_first(merged, num_dst=50)
    assert not conv._use_basis_first(distinct, num_dst=300)  # 2 x 300 destination rows > 4 x 100 edges
    conv.basis_first = True
    assert conv._use_basis_first(merged, num_dst=50)
    bdd = GroupedRelGraphConv(4, 4, 10, regularizer="bdd", num_bases=2)
    assert not bdd._use_basis_first(distinct, num_dst=50)
