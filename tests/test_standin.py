"""The wikikg2-shaped stand-in: OGB's layout read by the real loader, counts, determinism, skew, the
planted ceiling, and a quickly trained TransE far above random."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
from conftest import small_config

from kbit_dgl.data import load_dataset
from kbit_dgl.data.standin import (
    SUMMARY_FILE,
    PlantedModel,
    PlantedParameters,
    _Sampler,
    build_planted_model,
    planted_ranks,
    random_mrr,
    standin_planted_model,
    standin_sizes,
    write_wikikg2_standin,
)

TINY = 0.0005  # 1,250 entities, 40 relations, 8,055 / 215 / 299 triples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    summary = write_wikikg2_standin(str(root), scale=TINY, seed=0)
    return str(root), summary


def file_digests(root: str) -> dict:
    base = os.path.join(root, "ogbl_wikikg2")
    digests = {}
    for folder, _, files in os.walk(base):
        for name in files:
            path = os.path.join(folder, name)
            if name != SUMMARY_FILE and "processed" not in path:  # ogb writes processed/ on the first load
                with open(path, "rb") as handle:
                    digests[os.path.relpath(path, base)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def test_sizes_are_wikikg2s_counts_scaled():
    full = standin_sizes(1.0)
    assert (full.num_entities, full.num_relations, full.num_train, full.num_valid, full.num_test) == (
        2_500_604, 535, 16_109_182, 429_456, 598_543)
    assert full.num_negatives == 500 and full.num_clusters == 1581  # round(sqrt(2,500,604))
    tenth = standin_sizes(0.1)
    assert (tenth.num_entities, tenth.num_relations, tenth.num_train, tenth.num_valid, tenth.num_test) == (
        250_060, 535, 1_610_918, 42_946, 59_854)
    tiny = standin_sizes(TINY)
    assert (tiny.num_entities, tiny.num_relations, tiny.num_train, tiny.num_valid, tiny.num_test) == (
        1250, 40, 8055, 215, 299)  # 8,055 // 200 train triples per relation = 40 relations
    for scale in (0.0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            standin_sizes(scale)
    with pytest.raises(ValueError, match="valid triples"):
        standin_sizes(1e-6)


def test_loads_through_ogbs_loader(tiny):
    root, summary = tiny
    kg = load_dataset("ogbl-wikikg2", root)
    sizes = standin_sizes(TINY)
    assert (kg.num_entities, kg.num_relations) == (sizes.num_entities, sizes.num_relations)
    assert (len(kg.train), len(kg.valid), len(kg.test)) == (sizes.num_train, sizes.num_valid, sizes.num_test)
    assert summary["counts"]["train"] == sizes.num_train
    for split in ("valid", "test"):
        for key in ("head_neg", "tail_neg"):
            negatives = kg.negatives[split][key]
            assert negatives.shape == (len(kg.split(split)), 500) and negatives.dtype == torch.int64
    assert kg.entity_names[:3] == ["e0", "e1", "e2"] and kg.relation_names[-1] == "r39"
    # The split files are what OGB ships: dicts of int64 numpy arrays; the graph is the train triples.
    raw = torch.load(os.path.join(root, "ogbl_wikikg2", "split", "time", "test.pt"))
    assert sorted(raw) == ["head", "head_neg", "relation", "tail", "tail_neg"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.int64 for v in raw.values())
    assert torch.equal(kg.test[:, 2], torch.from_numpy(raw["tail"]))
    # Distinct triples, valid/test disjoint from train: the loader finds no duplicates and no leakage.
    assert not [w for w in kg.warnings if "duplicate" in w or "leakage" in w]
    everything = torch.cat([kg.train, kg.valid, kg.test]).numpy()
    assert len(np.unique(everything, axis=0)) == len(everything)
    assert not (everything[:, 0] == everything[:, 2]).any()  # no self-loops


def test_same_seed_same_files_other_seed_other_files(tiny, tmp_path):
    root, summary = tiny
    again = write_wikikg2_standin(str(tmp_path / "again"), scale=TINY, seed=0)
    assert file_digests(str(tmp_path / "again")) == file_digests(root)
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in summary.items() if k != "wall_seconds"}
    write_wikikg2_standin(str(tmp_path / "other"), scale=TINY, seed=1)
    other, same = file_digests(str(tmp_path / "other")), file_digests(root)
    assert other["split/time/train.pt"] != same["split/time/train.pt"]
    assert other["raw/num-node-list.csv.gz"] == same["raw/num-node-list.csv.gz"]
    with open(os.path.join(root, "ogbl_wikikg2", SUMMARY_FILE)) as handle:
        assert json.load(handle)["planted"] == summary["planted"]


def test_existing_dataset_is_refused_unless_overwrite(tiny):
    root, _ = tiny
    with pytest.raises(FileExistsError, match="overwrite"):
        write_wikikg2_standin(root, scale=TINY, seed=0)


def test_degrees_and_relations_are_skewed(tiny):
    root, summary = tiny
    kg = load_dataset("ogbl-wikikg2", root)
    train = kg.train.numpy()
    degree = np.bincount(train[:, 0], minlength=kg.num_entities) + np.bincount(train[:, 2], minlength=kg.num_entities)
    top = np.sort(degree)[::-1][:kg.num_entities // 100]
    assert top.sum() / degree.sum() > 0.08  # the top 1 % of entities hold 8x their share of endpoints
    assert degree.max() > 10 * np.median(degree)
    relation = np.sort(np.bincount(train[:, 1], minlength=kg.num_relations))[::-1]
    assert relation[0] / len(train) > 0.15 and relation[:10].sum() / len(train) > 0.6  # uniform: 2.5 % / 25 %
    assert relation[-1] > 0  # every relation occurs in train
    assert summary["skew"]["top1pct_entities_share_of_endpoints"] == pytest.approx(top.sum() / degree.sum(), abs=1e-4)


def test_planted_ceiling_is_ogbs_mrr_of_the_planted_scores(tiny):
    root, summary = tiny
    ceiling = summary["planted"]["test"]
    assert summary["random_mrr"] == pytest.approx(0.0136, abs=1e-4)
    assert ceiling["mrr"] > 10 * summary["random_mrr"]
    # The same number from ogb's own Evaluator on the planted model's scores.
    from ogb.linkproppred import Evaluator

    kg = load_dataset("ogbl-wikikg2", root)
    model = standin_planted_model(standin_sizes(TINY), seed=0)
    test = kg.test.numpy()
    negatives = {key: value.numpy() for key, value in kg.negatives["test"].items()}
    tail = model.tail_probability(test[:, 0], test[:, 1], np.concatenate([test[:, 2:], negatives["tail_neg"]], 1))
    head = model.head_score(test[:, 1], test[:, 2], np.concatenate([test[:, :1], negatives["head_neg"]], 1))
    evaluator = Evaluator(name="ogbl-wikikg2")
    mrr = {}
    for direction, scores in (("tail", tail), ("head", head)):
        result = evaluator.eval({"y_pred_pos": torch.from_numpy(scores[:, 0]),
                                 "y_pred_neg": torch.from_numpy(scores[:, 1:])})
        mrr[direction] = float(result["mrr_list"].mean())
        assert ceiling[direction]["mrr"] == pytest.approx(mrr[direction], abs=1e-4)
    assert ceiling["mrr"] == pytest.approx((mrr["tail"] + mrr["head"]) / 2, abs=1e-4)


def test_planted_ranks_count_ties_half():
    # Noise 1: every tail is uniform, so every candidate scores the same and the rank is 1 + K / 2.
    sizes = standin_sizes(TINY)
    model = build_planted_model(sizes, np.random.default_rng(0), PlantedParameters(noise=1.0))
    triples = np.array([[0, 0, 1], [2, 1, 3]])
    negatives = np.arange(8).reshape(2, 4) + 10
    ranks = planted_ranks(model, triples, negatives, negatives)
    assert ranks["tail"].tolist() == [3.0, 3.0]
    # A hand-made model: 4 entities in 2 clusters, relation 0 maps cluster 0 -> 1, no noise.
    hand = PlantedModel(cluster=np.array([0, 0, 1, 1]), popularity=np.array([0.4, 0.1, 0.3, 0.2]),
                        cluster_mass=np.array([0.5, 0.5]), tail_cluster=np.array([[1, 0]]),
                        relation_probability=np.array([1.0]), centers=np.zeros((2, 1)),
                        translations=np.zeros((1, 1)), noise=0.0)
    # (0, 0, 3): P(t | 0, 0) = 0.6 for entity 2, 0.4 for entity 3, 0 in cluster 0; P(h | 0, 3) is
    # proportional to popularity on cluster 0 (0.4, 0.1) and 0 on cluster 1.
    ranks = planted_ranks(hand, np.array([[0, 0, 3]]), np.array([[1, 0, 2, 3]]), np.array([[2, 0, 1, 3]]))
    assert ranks["tail"].tolist() == [1 + 1 + 0.5]  # entity 2 scores higher, the copy of 3 ties
    assert ranks["head"].tolist() == [1 + 0.5]      # the copy of 0 ties, the rest score lower
    assert random_mrr(501) == pytest.approx(np.mean(1 / np.arange(1, 502)))


def test_sampler_follows_the_planted_probabilities():
    sizes = standin_sizes(TINY, num_relations=3, num_clusters=10)
    model = build_planted_model(sizes, np.random.default_rng(1), PlantedParameters(noise=0.2))
    triples = _Sampler(model).sample(2_000_000, np.random.default_rng(2))
    heads = np.bincount(triples[:, 0], minlength=sizes.num_entities) / len(triples)
    assert np.abs(heads - model.popularity).sum() / 2 < 0.02  # total variation distance
    relations = np.bincount(triples[:, 1], minlength=3) / len(triples)
    assert np.abs(relations - model.relation_probability).max() < 0.002
    target = model.tail_cluster[triples[:, 1], model.cluster[triples[:, 0]]]
    in_target = model.cluster[triples[:, 2]] == target
    assert in_target.mean() == pytest.approx(0.8 + 0.2 / 10, abs=0.002)  # noise lands there 1 time in 10
    # Tails that land in the most frequent target cluster follow P(t | h, r) restricted to that cluster.
    cluster = np.bincount(target).argmax()
    members = np.flatnonzero(model.cluster == cluster)
    rows = triples[in_target & (target == cluster)]
    observed = np.bincount(rows[:, 2], minlength=sizes.num_entities)[members] / len(rows)
    expected = model.tail_probability(rows[:1, 0], rows[:1, 1], members[None])[0]
    assert np.abs(observed - expected / expected.sum()).sum() / 2 < 0.03


def test_trained_transe_beats_random_by_far(tiny, tmp_path):
    from kbit_dgl.train.trainer import train

    root, summary = tiny
    kg = load_dataset("ogbl-wikikg2", root)
    config = small_config("transe_l2", epochs=10, lr=0.03, valid_every=10)  # L2: the planted geometry
    metrics = train(config, kg, str(tmp_path / "run"), progress=False)
    assert metrics["protocol"] == "ogb"
    assert metrics["test"]["mrr"] > 6 * summary["random_mrr"]  # measured 0.15: 11x random, 0.4x the ceiling
    assert metrics["test"]["mrr"] < summary["planted"]["test"]["mrr"]
