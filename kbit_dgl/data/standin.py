"""A wikikg2-shaped stand-in: ``ogbl-wikikg2``'s counts and on-disk layout, with planted structure.

Real ogbl-wikikg2 cannot always be downloaded; :func:`write_wikikg2_standin` writes a dataset of the
same shape into OGB's release layout, so the real loader (``load_dataset("ogbl-wikikg2", root)``,
through ``ogb.linkproppred.LinkPropPredDataset``) reads it exactly as it would read the release.

Counts at ``scale=1``: 2,500,604 entities, 535 relations, 16,109,182 / 429,456 / 598,543
train / valid / test triples, 500 head and 500 tail negatives per valid/test triple (uniform
random entities, as OGB's). ``scale`` multiplies the entity and triple counts; the relations stay
at 535 while there are at least 200 train triples per relation (scale >= 0.0066) and drop to
``max(4, train // 200)`` below that, so a tiny stand-in does not spread its triples over hundreds
of near-empty relations.

The planted model (the data's own generative process, :class:`PlantedModel`):

- every entity belongs to one of ``C = round(sqrt(num_entities))`` equal-sized clusters, whose
  centers are random points of the unit cube ``[0, 1]^latent_dim``;
- every relation is a translation of the latent space (random direction, length uniform in
  ``translation_range``); it maps cluster ``k`` to the cluster ``f_r(k)`` whose center is nearest to
  ``center_k + translation_r`` (TransE's geometry: a translation and a nearest neighbour; most maps
  are many-to-one, the way Wikidata's relations mostly are);
- a triple: relation ``r`` by Zipf frequency (exponent ``relation_exponent`` over a random order of
  the relations: a few relations cover most triples), head ``h`` by entity popularity (Zipf,
  exponent ``entity_exponent`` over a random order of the entities), tail from cluster
  ``f_r(cluster(h))`` by popularity within that cluster; with probability ``noise`` the tail is a
  uniformly random entity instead;
- self-loops and repeated triples are dropped (rejection sampling); the distinct triples are put in
  random order and cut into train, valid, test, so valid/test come from the same process and are
  distinct from train and from each other (no "time" split).

TransE represents the planted model exactly (entity = its cluster's center, relation = its
translation) and RotatE approximately (phases = latent coordinates), so a trained model can approach
:attr:`PlantedModel`'s own ranking quality. That ceiling is computed under OGB's protocol: the true
tail is ranked against its 500 tail negatives by ``P(t | h, r)`` and the true head against its 500
head negatives by ``P(h | r, t)``, ties counting half (the mean of the optimistic and pessimistic
rank, as ``ogb.linkproppred.Evaluator`` and :mod:`kbit_dgl.eval.ranking` count them).

Memory: the split files hold int64 arrays as OGB's do, so at full size valid/test carry 3.4 / 4.8
GB of negatives. They are written with ``torch.save``'s streaming (non-zip) format and pickle
protocol 5, which writes each array straight from memory (the zip format would first copy the whole
pickle into a buffer, doubling the peak); ``torch.load`` reads both formats. Everything else is
generated in fixed-size chunks, so the peak is about one split's negatives plus the triples.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .ogb import ogb_dataset_dir

log = logging.getLogger("kbit_dgl")

#: ogbl-wikikg2's counts (OGB release v1)
WIKIKG2_COUNTS = {"entities": 2_500_604, "relations": 535, "train": 16_109_182, "valid": 429_456,
                  "test": 598_543}
NUM_NEGATIVES = 500
MIN_TRAIN_PER_RELATION = 200  # below this many train triples per relation, fewer relations
CHUNK = 1 << 21               # triples (or query rows x 500) generated per step: bounds the temporaries
RANK_CHUNK = 1 << 14          # queries ranked per step
SUMMARY_FILE = "standin.json"
_GZIP = {"method": "gzip", "compresslevel": 1, "mtime": 0}  # mtime 0: the same seed gives the same bytes


@dataclass
class StandinSizes:
    """The counts of one stand-in."""

    num_entities: int
    num_relations: int
    num_clusters: int
    num_train: int
    num_valid: int
    num_test: int
    num_negatives: int = NUM_NEGATIVES


def standin_sizes(scale: float = 1.0, num_relations: Optional[int] = None, num_clusters: Optional[int] = None,
                  num_negatives: int = NUM_NEGATIVES) -> StandinSizes:
    """wikikg2's counts times ``scale`` (0 < scale <= 1), rounded; relations and clusters as in the module doc
    unless given."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    count = {key: int(round(value * scale)) for key, value in WIKIKG2_COUNTS.items()}
    if count["valid"] < 10:
        raise ValueError(f"scale {scale} leaves {count['valid']} valid triples; use scale >= "
                         f"{10 / WIKIKG2_COUNTS['valid']:.1e} (10 valid triples)")
    relations = num_relations or min(WIKIKG2_COUNTS["relations"], max(4, count["train"] // MIN_TRAIN_PER_RELATION))
    clusters = num_clusters or max(2, int(round(math.sqrt(count["entities"]))))
    if not 2 <= clusters <= count["entities"] // 2:
        raise ValueError(f"num_clusters must be in [2, {count['entities'] // 2}] (two entities each), got {clusters}")
    if relations < 1 or num_negatives < 1:
        raise ValueError(f"need num_relations >= 1 and num_negatives >= 1, got {relations}, {num_negatives}")
    return StandinSizes(num_entities=count["entities"], num_relations=relations, num_clusters=clusters,
                        num_train=count["train"], num_valid=count["valid"], num_test=count["test"],
                        num_negatives=num_negatives)


@dataclass
class PlantedModel:
    """The generative process of a stand-in (see the module doc); N entities, R relations, C clusters."""

    cluster: np.ndarray               # (N,) int64: each entity's cluster
    popularity: np.ndarray            # (N,) float64, sums to 1: head distribution, tail weight within a cluster
    cluster_mass: np.ndarray          # (C,) float64: popularity summed per cluster
    tail_cluster: np.ndarray          # (R, C) int64: f_r(k), the tail cluster of relation r from cluster k
    relation_probability: np.ndarray  # (R,) float64, sums to 1
    centers: np.ndarray               # (C, latent_dim) cluster centers in [0, 1]^latent_dim
    translations: np.ndarray          # (R, latent_dim) one translation per relation
    noise: float                      # probability that a tail is a uniformly random entity

    @property
    def num_entities(self) -> int:
        return len(self.cluster)

    @property
    def num_relations(self) -> int:
        return len(self.tail_cluster)

    def tail_probability(self, head: np.ndarray, relation: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``P(t | h, r)`` (B, K) float64 of each candidate tail (B, K) for the queries ``(head, relation)`` (B,)."""
        target = self.tail_cluster[relation, self.cluster[head]]
        within = (1.0 - self.noise) * self.popularity[candidates] / self.cluster_mass[target][:, None]
        in_cluster = self.cluster[candidates] == target[:, None]
        return np.where(in_cluster, within, 0.0) + self.noise / self.num_entities

    def head_score(self, relation: np.ndarray, tail: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """``P(h) P(t | h, r)`` (B, K) float64, proportional to ``P(h | r, t)``, of each candidate head (B, K)
        for the queries ``(relation, tail)`` (B,)."""
        tail_cluster = self.cluster[tail]
        within = (1.0 - self.noise) * self.popularity[tail] / self.cluster_mass[tail_cluster]
        maps_there = self.tail_cluster[relation[:, None], self.cluster[candidates]] == tail_cluster[:, None]
        return self.popularity[candidates] * (np.where(maps_there, within[:, None], 0.0)
                                              + self.noise / self.num_entities)

    def map_stats(self) -> Dict[str, float]:
        """How the relations map clusters: mean / min / max share of clusters that are some cluster's image
        (1 = one-to-one), and the share of (relation, cluster) pairs mapped to themselves."""
        clusters = self.tail_cluster.shape[1]
        image = np.array([len(np.unique(row)) for row in self.tail_cluster]) / clusters
        return {"image_share_mean": round(float(image.mean()), 4), "image_share_min": round(float(image.min()), 4),
                "image_share_max": round(float(image.max()), 4),
                "identity_share": round(float((self.tail_cluster == np.arange(clusters)).mean()), 4)}


@dataclass
class PlantedParameters:
    """The knobs of the planted model (see the module doc)."""

    entity_exponent: float = 0.8     # Zipf exponent of entity popularity
    relation_exponent: float = 1.2   # Zipf exponent of relation frequency
    latent_dim: int = 3              # dimensions of the latent cube holding the cluster centers
    translation_range: Tuple[float, float] = (0.1, 0.5)  # lengths of the relations' translations
    noise: float = 0.1               # probability that a tail is a uniformly random entity


def build_planted_model(sizes: StandinSizes, rng: np.random.Generator,
                        parameters: Optional[PlantedParameters] = None) -> PlantedModel:
    """Draw the planted model (clusters, popularity, centers, translations, relation frequencies)."""
    p = parameters or PlantedParameters()
    if not 0 <= p.noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {p.noise}")
    n, r, c = sizes.num_entities, sizes.num_relations, sizes.num_clusters
    popularity = (rng.permutation(n) + 1.0) ** -p.entity_exponent
    popularity /= popularity.sum()
    cluster = rng.permutation(np.arange(n, dtype=np.int64) % c)  # equal sizes: no cluster is empty
    centers = rng.random((c, p.latent_dim))
    direction = rng.normal(size=(r, p.latent_dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    translations = direction * rng.uniform(*p.translation_range, size=(r, 1))
    relation_probability = (rng.permutation(r) + 1.0) ** -p.relation_exponent
    relation_probability /= relation_probability.sum()
    return PlantedModel(cluster=cluster, popularity=popularity,
                        cluster_mass=np.bincount(cluster, weights=popularity, minlength=c),
                        tail_cluster=nearest_clusters(centers, translations), relation_probability=relation_probability,
                        centers=centers, translations=translations, noise=p.noise)


def nearest_clusters(centers: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """(R, C) int64: for each relation r and cluster k, the cluster whose center is nearest to
    ``centers[k] + translations[r]`` (squared distances by a matrix product, a few relations at a time)."""
    squared = (centers ** 2).sum(1)
    result = np.empty((len(translations), len(centers)), dtype=np.int64)
    step = max(1, CHUNK // (len(centers) ** 2) + 1)
    for start in range(0, len(translations), step):
        queries = centers[None, :, :] + translations[start:start + step, None, :]  # (s, C, d)
        distances = squared[None, None, :] - 2.0 * queries @ centers.T              # + |q|^2: same argmin
        result[start:start + step] = distances.argmin(2)
    return result


class _Sampler:
    """Inverse-CDF sampling of heads (global popularity), tails (popularity within a cluster), relations."""

    def __init__(self, model: PlantedModel):
        self.model = model
        self.entity_cdf = np.cumsum(model.popularity)
        self.relation_cdf = np.cumsum(model.relation_probability)
        self.by_cluster = np.argsort(model.cluster, kind="stable")
        self.cluster_cdf = np.cumsum(model.popularity[self.by_cluster])
        clusters = len(model.cluster_mass)
        self.start = np.searchsorted(model.cluster[self.by_cluster], np.arange(clusters))
        self.end = np.append(self.start[1:], len(self.by_cluster))
        before = np.concatenate([[0.0], self.cluster_cdf])
        self.cdf_before, self.mass = before[self.start], before[self.end] - before[self.start]

    @staticmethod
    def _draw(cdf: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, uniform * cdf[-1], side="right"), len(cdf) - 1)

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, 3) int64 triples (head, relation, tail) drawn from the planted model."""
        model = self.model
        relation = self._draw(self.relation_cdf, rng.random(count))
        head = self._draw(self.entity_cdf, rng.random(count))
        target = model.tail_cluster[relation, model.cluster[head]]
        position = np.searchsorted(self.cluster_cdf, self.cdf_before[target] + rng.random(count) * self.mass[target],
                                   side="right")
        tail = self.by_cluster[np.clip(position, self.start[target], self.end[target] - 1)]
        noisy = rng.random(count) < model.noise
        tail[noisy] = rng.integers(0, model.num_entities, int(noisy.sum()))
        return np.stack([head, relation, tail], axis=1)


def distinct_triples(model: PlantedModel, count: int, rng: np.random.Generator,
                     progress: bool = False) -> Tuple[np.ndarray, Dict[str, int]]:
    """``count`` distinct triples without self-loops (count, 3) int64, in random order, and how many were
    drawn to get them (``drawn``, ``self_loops``, ``repeats``).

    Triples are drawn in fixed-size chunks and kept as one int64 key each, ``(h * R + r) * N + t``;
    the first ``count`` distinct keys in drawing order are kept, so the result depends on the seed only.
    """
    n, r = model.num_entities, model.num_relations
    if n * n * r >= 2 ** 62:
        raise ValueError(f"{n} entities x {r} relations do not fit one int64 key per triple")
    sampler, parts, drawn, self_loops, distinct = _Sampler(model), [], 0, 0, 0
    with tqdm(total=count, unit="triple", unit_scale=True, desc="triples", disable=not progress) as bar:
        while distinct < count:
            missing = count - distinct
            for start in range(0, int(missing * 1.05) + 1024, CHUNK):
                triples = sampler.sample(min(CHUNK, int(missing * 1.05) + 1024 - start), rng)
                drawn += len(triples)
                loop = triples[:, 0] == triples[:, 2]
                self_loops += int(loop.sum())
                triples = triples[~loop]
                parts.append((triples[:, 0] * r + triples[:, 1]) * n + triples[:, 2])
            keys = np.concatenate(parts)
            parts = [keys]
            _, first = np.unique(keys, return_index=True)
            bar.update(min(count, len(first)) - distinct)
            distinct = len(first)
    first.sort()
    keys = keys[first[:count]]
    del parts, first
    keys = keys[rng.permutation(count)]
    triples = np.stack([keys // (r * n), keys // n % r, keys % n], axis=1)
    return triples, {"drawn": drawn, "self_loops": self_loops, "repeats": drawn - self_loops - distinct}


def planted_ranks(model: PlantedModel, triples: np.ndarray, head_neg: np.ndarray,
                  tail_neg: np.ndarray) -> Dict[str, np.ndarray]:
    """OGB-protocol ranks (n,) float64 of the planted model: ``tail`` = rank of the true tail among itself
    and ``tail_neg`` (n, K) by ``P(t | h, r)``; ``head`` = rank of the true head among ``head_neg`` by
    ``P(h | r, t)``. A rank is 1 + #negatives scoring higher + #negatives scoring equal / 2."""
    ranks = {"tail": np.empty(len(triples)), "head": np.empty(len(triples))}
    for start in range(0, len(triples), RANK_CHUNK):
        batch = triples[start:start + RANK_CHUNK]
        head, relation, tail = batch[:, 0], batch[:, 1], batch[:, 2]
        stop = start + len(batch)
        tail_candidates = np.concatenate([tail[:, None], tail_neg[start:stop]], axis=1)
        head_candidates = np.concatenate([head[:, None], head_neg[start:stop]], axis=1)
        for direction, scores in (("tail", model.tail_probability(head, relation, tail_candidates)),
                                  ("head", model.head_score(relation, tail, head_candidates))):
            positive, negative = scores[:, :1], scores[:, 1:]
            ranks[direction][start:stop] = (1.0 + (negative > positive).sum(1)
                                            + 0.5 * (negative == positive).sum(1))
    return ranks


def rank_metrics(ranks: Dict[str, np.ndarray]) -> Dict[str, object]:
    """MRR, MR, Hits@1/3/10 over both directions pooled (as ``kbit_dgl.eval.ogb`` reports them), and per
    direction under ``tail`` / ``head``."""
    def summary(values: np.ndarray) -> Dict[str, float]:
        metrics = {"mrr": round(float((1.0 / values).mean()), 4), "mr": round(float(values.mean()), 2)}
        metrics.update({f"hits@{k}": round(float((values <= k).mean()), 4) for k in (1, 3, 10)})
        return metrics

    return {**summary(np.concatenate([ranks["tail"], ranks["head"]])),
            "tail": summary(ranks["tail"]), "head": summary(ranks["head"])}


def random_mrr(num_candidates: int) -> float:
    """The expected MRR of a random ranking of ``num_candidates`` (the true one included)."""
    return float(np.mean(1.0 / np.arange(1, num_candidates + 1)))


def degree_stats(train: np.ndarray, num_entities: int, num_relations: int) -> Dict[str, float]:
    """Skew of ``train`` (n, 3): entity degree (head + tail occurrences) and relation frequency."""
    degree = np.bincount(train[:, 0], minlength=num_entities) + np.bincount(train[:, 2], minlength=num_entities)
    ordered = np.sort(degree)[::-1]
    top = max(1, num_entities // 100)
    relation = np.sort(np.bincount(train[:, 1], minlength=num_relations))[::-1]
    return {"degree_mean": round(float(degree.mean()), 2), "degree_median": float(np.median(degree)),
            "degree_p99": float(np.percentile(degree, 99)), "degree_max": int(ordered[0]),
            "entities_without_train_triples": int((degree == 0).sum()),
            "top1pct_entities_share_of_endpoints": round(float(ordered[:top].sum() / degree.sum()), 4),
            "top_relation_share": round(float(relation[0] / len(train)), 4),
            "top10_relations_share": round(float(relation[:10].sum() / len(train)), 4),
            "relation_triples_min": int(relation[-1]), "relation_triples_max": int(relation[0])}


def _write_csv_gz(path: str, frame: pd.DataFrame, header: bool = False) -> None:
    frame.to_csv(path, header=header, index=False, compression=_GZIP)


def _save_split(path: str, data: Dict[str, np.ndarray]) -> None:
    # Non-zip format and protocol 5: the arrays stream to disk without a second in-memory copy.
    torch.save(data, path, _use_new_zipfile_serialization=False, pickle_protocol=5)


def _columns(triples: np.ndarray) -> Dict[str, np.ndarray]:
    return {key: np.ascontiguousarray(triples[:, i]) for i, key in enumerate(("head", "relation", "tail"))}


def _streams(seed: int) -> Tuple[np.random.Generator, ...]:
    """Independent generators for the planted model, the triples, valid's and test's negatives."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))


def standin_planted_model(sizes: StandinSizes, seed: int = 0,
                          parameters: Optional[PlantedParameters] = None) -> PlantedModel:
    """The planted model of the stand-in written with these sizes, seed and parameters."""
    return build_planted_model(sizes, _streams(seed)[0], parameters)


def write_wikikg2_standin(root: str, scale: float = 1.0, seed: int = 0, *, num_relations: Optional[int] = None,
                          num_clusters: Optional[int] = None, num_negatives: int = NUM_NEGATIVES,
                          parameters: Optional[PlantedParameters] = None, with_mapping: bool = True,
                          overwrite: bool = False, progress: bool = False) -> Dict:
    """Write a stand-in ``ogbl-wikikg2`` under ``root/ogbl_wikikg2`` in OGB's release layout; return its summary.

    Files: ``RELEASE_v1.txt``; ``raw/edge.csv.gz`` (head,tail of the train triples, no header),
    ``raw/edge_reltype.csv.gz``, ``raw/num-node-list.csv.gz``, ``raw/num-edge-list.csv.gz``;
    ``split/time/{train,valid,test}.pt`` (dicts of int64 numpy arrays ``head, relation, tail``, valid/test
    also ``head_neg, tail_neg`` (n, num_negatives)); with ``with_mapping`` ``mapping/nodeidx2entityid.csv.gz``
    (``e<idx>``) and ``mapping/reltype2relid.csv.gz`` (``r<idx>``); and ``standin.json``, the returned summary:
    sizes, parameters, the planted model's OGB-protocol metrics on valid and test (``planted``: the ceiling a
    trained model can approach), the random-ranking MRR, degree and relation skew, the cluster maps, how many
    draws were rejected, and the wall time.

    The dataset is built in ``root/ogbl_wikikg2.partial`` and renamed when complete. An existing
    ``ogbl_wikikg2`` is refused unless ``overwrite``. The same arguments give the same files, byte for byte
    (``standin.json``'s wall time aside).
    """
    started = time.time()
    sizes = standin_sizes(scale, num_relations, num_clusters, num_negatives)
    base = ogb_dataset_dir("ogbl-wikikg2", str(root))
    if os.path.exists(base):
        if not overwrite:
            raise FileExistsError(f"{base} exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(base)
    work = base + ".partial"
    shutil.rmtree(work, ignore_errors=True)
    parameters = parameters or PlantedParameters()
    structure_rng, triple_rng, valid_rng, test_rng = _streams(seed)
    model = build_planted_model(sizes, structure_rng, parameters)
    total = sizes.num_train + sizes.num_valid + sizes.num_test
    log.info("stand-in: %d entities, %d relations, %d clusters, %d triples", sizes.num_entities,
             sizes.num_relations, sizes.num_clusters, total)
    triples, rejected = distinct_triples(model, total, triple_rng, progress)
    train = triples[:sizes.num_train]
    evaluated = {"valid": triples[sizes.num_train:sizes.num_train + sizes.num_valid],
                 "test": triples[sizes.num_train + sizes.num_valid:]}

    raw, split_dir = os.path.join(work, "raw"), os.path.join(work, "split", "time")
    os.makedirs(raw)
    os.makedirs(split_dir)
    _write_csv_gz(os.path.join(raw, "edge.csv.gz"), pd.DataFrame(train[:, [0, 2]]))
    _write_csv_gz(os.path.join(raw, "edge_reltype.csv.gz"), pd.DataFrame(train[:, 1]))
    _write_csv_gz(os.path.join(raw, "num-node-list.csv.gz"), pd.DataFrame([sizes.num_entities]))
    _write_csv_gz(os.path.join(raw, "num-edge-list.csv.gz"), pd.DataFrame([sizes.num_train]))
    if with_mapping:
        mapping = os.path.join(work, "mapping")
        os.makedirs(mapping)
        for file, count, prefix, columns in (("nodeidx2entityid.csv.gz", sizes.num_entities, "e",
                                              ["node idx", "entity id"]),
                                             ("reltype2relid.csv.gz", sizes.num_relations, "r", ["reltype", "rel id"])):
            index = np.arange(count)
            frame = pd.DataFrame({columns[0]: index, columns[1]: np.char.add(prefix, index.astype(str))})
            _write_csv_gz(os.path.join(mapping, file), frame, header=True)
    _save_split(os.path.join(split_dir, "train.pt"), _columns(train))
    stats = degree_stats(train, sizes.num_entities, sizes.num_relations)
    del train

    planted = {}
    for split, rng in (("valid", valid_rng), ("test", test_rng)):
        data = evaluated.pop(split)
        shape = (len(data), sizes.num_negatives)
        head_neg = rng.integers(0, sizes.num_entities, shape, dtype=np.int64)
        tail_neg = rng.integers(0, sizes.num_entities, shape, dtype=np.int64)
        planted[split] = rank_metrics(planted_ranks(model, data, head_neg, tail_neg))
        _save_split(os.path.join(split_dir, f"{split}.pt"),
                    {**_columns(data), "head_neg": head_neg, "tail_neg": tail_neg})
        del data, head_neg, tail_neg
        log.info("stand-in %s: planted MRR %.4f", split, planted[split]["mrr"])

    summary = {
        "dataset": "ogbl-wikikg2 stand-in", "seed": seed, "scale": scale,
        "counts": {"entities": sizes.num_entities, "relations": sizes.num_relations, "train": sizes.num_train,
                   "valid": sizes.num_valid, "test": sizes.num_test, "negatives_per_side": sizes.num_negatives,
                   "clusters": sizes.num_clusters},
        "parameters": dataclasses.asdict(parameters),
        "planted": planted, "random_mrr": round(random_mrr(sizes.num_negatives + 1), 5),
        "skew": stats, "cluster_maps": model.map_stats(), "rejected_draws": rejected,
        "bytes_on_disk": sum(os.path.getsize(os.path.join(folder, file))
                             for folder, _, files in os.walk(work) for file in files),
        "wall_seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(work, SUMMARY_FILE), "w") as handle:
        json.dump(summary, handle, indent=2)
    with open(os.path.join(work, "RELEASE_v1.txt"), "w") as handle:
        handle.write("kbit-dgl stand-in for ogbl-wikikg2 in the layout of OGB release v1 "
                     "(kbit_dgl.data.standin); not the real dataset\n")
    os.replace(work, base)
    return summary
