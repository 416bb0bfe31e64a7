"""Decoders: shapes in both directions, score_candidates == score, fast path == reference."""
from __future__ import annotations

import math

import pytest
import torch

from kbit_dgl.models import kernels
from kbit_dgl.models.decoders import RotatE, make_decoder
from kbit_dgl.models.model import build_model
from kbit_dgl.train.losses import margin_ranking_loss, self_adversarial_loss

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

MODELS = ["transe", "transe_l2", "rotate", "distmult", "complex", "pairre", "cp", "rescal"]


def rows(decoder, *shape, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda width: torch.randn(*shape, width, generator=generator, dtype=dtype, requires_grad=True)  # noqa
    return make(decoder.entity_dim), make(decoder.relation_dim)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("direction", ["tail", "head"])
def test_score_candidates_equals_score(name, direction):
    decoder = make_decoder(name, 16).double()
    anchor, relation = rows(decoder, 5)
    candidates, _ = rows(decoder, 7, seed=1)
    scores = decoder.score_candidates(anchor, relation, candidates, direction)
    assert scores.shape == (5, 7)
    for i in range(5):
        for j in range(7):
            head, tail = (anchor[i], candidates[j]) if direction == "tail" else (candidates[j], anchor[i])
            expected = decoder.score(head, relation[i], tail)
            assert torch.allclose(scores[i, j], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("direction", ["tail", "head"])
@pytest.mark.parametrize("shape", [((6,), (9,)), ((3, 4), (3, 5)), ((4, 1), (4, 7))])
def test_fast_path_matches_reference_values_and_gradients(name, direction, shape):
    """Chunked shared negatives (C, b) x (C, n), plain (b) x (n) and per-query (B, 1) x (B, n)."""
    decoder = make_decoder(name, 12)
    anchor, relation = rows(decoder, *shape[0], dtype=torch.float32)
    candidates, _ = rows(decoder, *shape[1], dtype=torch.float32, seed=2)
    fast = decoder.score_candidates(anchor, relation, candidates, direction)
    reference = decoder.score_candidates_reference(anchor, relation, candidates, direction)
    assert fast.shape == reference.shape == (*shape[0], shape[1][-1])
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    weights = torch.randn(fast.shape, generator=torch.Generator().manual_seed(3))
    fast_grads = torch.autograd.grad((fast * weights).sum(), [anchor, relation, candidates])
    reference_grads = torch.autograd.grad((reference * weights).sum(), [anchor, relation, candidates])
    for got, expected in zip(fast_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_eager_chunked_fallback_matches(monkeypatch):
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 64)  # force many chunks
    query, candidates = torch.randn(3, 8, dtype=torch.float64), torch.randn(50, 8, dtype=torch.float64)
    expected = (query[:, None, :] - candidates[None]).abs().sum(-1)
    torch.testing.assert_close(kernels.pairwise_l1(query, candidates), expected)


def test_rotate_relations_are_unit_rotations():
    decoder = RotatE(8, gamma=0.0)
    head = torch.randn(1, 8)
    phase = torch.full((1, 4), math.pi)  # rotation by pi maps h to -h: a symmetric relation
    assert torch.allclose(decoder.score(head, phase, -head), torch.zeros(1), atol=1e-5)
    model = build_model("rotate", 10, 3, 8, 12.0)
    assert model.relation.weight.shape == (3, 4)
    assert float(model.relation.weight.detach().abs().max()) <= math.pi
    bound = (12.0 + 2.0) / 8
    assert float(model.entity.weight.abs().max()) <= bound


def test_pairre_normalises_entities():
    model = build_model("pairre", 10, 3, 6, 12.0)
    assert model.relation.weight.shape == (3, 12)
    norms = model.entities(torch.arange(10)).norm(dim=-1)
    assert torch.allclose(norms, torch.ones(10), atol=1e-6)


def test_unknown_model_and_odd_dim():
    with pytest.raises(ValueError, match="unknown model 'foo'"):
        make_decoder("foo", 8)
    with pytest.raises(ValueError, match="even dim"):
        make_decoder("rotate", 7)


def test_losses():
    positive, negative = torch.tensor([2.0]), torch.tensor([[0.0, -1.0]])
    assert float(margin_ranking_loss(positive, negative, margin=3.0)) == pytest.approx((1.0 + 0.0) / 2)
    # self-adversarial weights favour the hardest negative; equal scores give plain averaging
    flat = self_adversarial_loss(torch.tensor([0.0]), torch.zeros(1, 4))
    assert float(flat) == pytest.approx(math.log(2.0))


def test_subsampling_weights_and_weighted_losses():
    from kbit_dgl.train.sampling import subsampling_weights

    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 2]])
    # counts: (h, r) = 2, 2, 1; (r, t) = 1, 1, 1
    expected = 1 / torch.sqrt(torch.tensor([2 + 1 + 6, 2 + 1 + 6, 1 + 1 + 6.0]))
    torch.testing.assert_close(subsampling_weights(triples, 4, 2), expected)
    positive, negative = torch.randn(3), torch.randn(3, 5)
    equal = torch.full((3,), 0.7)
    torch.testing.assert_close(self_adversarial_loss(positive, negative, 1.0, equal),
                               self_adversarial_loss(positive, negative, 1.0))
    torch.testing.assert_close(margin_ranking_loss(positive, negative, 1.0, equal),
                               margin_ranking_loss(positive, negative, 1.0))
    only_first = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(margin_ranking_loss(positive, negative, 1.0, only_first),
                               margin_ranking_loss(positive[:1], negative[:1], 1.0))


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("direction", ["tail", "head"])
@pytest.mark.parametrize("name", ["transe", "transe_l2", "rotate", "distmult", "complex", "pairre", "cp", "rescal"])
def test_candidate_ids_path_matches_gathering_the_rows(name, direction, compiled, monkeypatch):
    """OGB's protocol: each query against its own candidates, gathered inside the kernel."""
    if not compiled:
        monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
        monkeypatch.setattr(kernels, "CHUNK_ELEMENTS", 40)  # several slices of queries
    decoder = make_decoder(name, 12)
    anchor, relation = rows(decoder, 5, dtype=torch.float32)
    table, _ = rows(decoder, 30, dtype=torch.float32, seed=2)
    ids = torch.randint(30, (5, 7), generator=torch.Generator().manual_seed(4))
    fast = decoder.score_candidate_ids(anchor, relation, table, ids, direction)
    reference = decoder.score_candidates(anchor.unsqueeze(1), relation.unsqueeze(1), table[ids], direction).squeeze(1)
    assert fast.shape == (5, 7)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
