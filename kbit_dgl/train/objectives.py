"""Training objectives (``train.objective``): what one step's loss is, for any decoder.

* ``negative_sampling``: each positive against shared sampled negatives (:func:`steps.train_step`,
  ``train.loss``); heads and tails corrupted on alternate steps.
* ``1vsall`` (kbc; LibKGE's 1vsAll): each training triple gives two queries, (h, r, ?) and (?, r, t)
  (as (t, r^-1, ?) with reciprocal relations), each scored against **every** entity and trained with
  a softmax cross-entropy towards its answer. For the bilinear decoders (DistMult, ComplEx, CP,
  RESCAL) the scores of a batch are one matrix product (2B, d) x (d, N), so the step is GEMM-bound.
  ``train.num_candidates=k`` scores against a shared uniform sample of k entities per batch instead
  (still one product): a sampled softmax over the answer and the k samples, each sample's logit
  shifted by log((N - 1) / k) so the sum estimates the full softmax's normaliser (the answer itself is
  not sampled: a sample that hits it is masked out). This is for KGs where all N do not fit a step.
* ``kvsall`` (LibKGE's KvsAll): each distinct training query (anchor, relation) is one example,
  scored against every entity with binary cross-entropy towards the multi-hot vector of all its
  answers in the training split (label smoothing as LibKGE's: (1 - s) y + 1 / N).

For ``1vsall`` and ``kvsall``: ``train.label_smoothing``; ``train.relation_prediction`` adds that
weight times the cross-entropy of predicting each query's relation row from (anchor, answer) over all
relation rows (Chen et al. 2021); the regularizer (:mod:`kbit_dgl.models.regularizers`) weighs the
rows of each query (anchor, relation, answer; KvsAll: its first answer).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.kg import KG
from ..errors import ConfigError
from ..models.model import KGEModel
from ..models.regularizers import regularization
from . import steps


class NegativeSampling:
    """``train.objective=negative_sampling``: the examples are the training triples."""

    name = "negative_sampling"

    def __init__(self, config: Config, kg: KG):
        self.config = config
        self.examples = kg.train

    def loss(self, model: KGEModel, batch: torch.Tensor, generator: torch.Generator, direction: str,
             weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return steps.train_step(model, batch, self.config, generator, direction, weights)


class _ScoredAgainstAll:
    """What 1vsAll and KvsAll share: queries in both directions, scored against all entities (or a
    sample), with the regularizer and relation prediction."""

    def __init__(self, config: Config, kg: KG):
        self.config, self.train = config, config.train
        self.num_entities, self.num_relations = kg.num_entities, kg.num_relations

    def _relation_rows(self, model: KGEModel, codes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, str]:
        """For query codes (relation r: a tail query (anchor, r, ?); r + R: a head query (?, r, anchor)),
        the relation rows, the row ids (for relation prediction) and the scoring direction of the
        batch's head queries (``tail`` with reciprocal relations, where row r + R is r's inverse)."""
        if model.reciprocal:
            return model.relations(codes), codes, "tail"
        rows = codes % self.num_relations
        return model.relations(rows), rows, "head"

    def _scores(self, model: KGEModel, anchor_rows: torch.Tensor, relation_rows: torch.Tensor,
                head_query: torch.Tensor, head_direction: str, candidates: torch.Tensor) -> torch.Tensor:
        """(Q, C) scores of the queries against candidate rows (C, d): one product when every query
        scores in one direction."""
        decoder = model.decoder
        if head_direction == "tail" or not bool(head_query.any()):
            return decoder.score_candidates(anchor_rows, relation_rows, candidates, "tail")
        if bool(head_query.all()):
            return decoder.score_candidates(anchor_rows, relation_rows, candidates, "head")
        scores = anchor_rows.new_empty((len(anchor_rows), len(candidates)))
        for mask, direction in ((~head_query, "tail"), (head_query, "head")):
            scores[mask] = decoder.score_candidates(anchor_rows[mask], relation_rows[mask], candidates, direction)
        return scores

    @staticmethod
    def _as_triples(anchor_rows: torch.Tensor, answer_rows: torch.Tensor, head_query: torch.Tensor,
                    head_direction: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(head rows, tail rows) of the queries as aligned triples: a head query scored in the head
        direction is (answer, r, anchor), every other query (anchor, r, answer)."""
        flip = (head_query if head_direction == "head" else torch.zeros_like(head_query)).unsqueeze(-1)
        return torch.where(flip, answer_rows, anchor_rows), torch.where(flip, anchor_rows, answer_rows)

    def _extra_terms(self, model: KGEModel, anchor_rows: torch.Tensor, relation_rows: torch.Tensor,
                     relation_ids: torch.Tensor, answer_rows: torch.Tensor, head_query: torch.Tensor,
                     head_direction: str) -> torch.Tensor:
        """The regularizer and relation prediction on aligned (anchor, relation, answer) rows."""
        train, decoder = self.train, model.decoder
        heads, tails = self._as_triples(anchor_rows, answer_rows, head_query, head_direction)
        extra = anchor_rows.new_zeros(())
        if train.regularization > 0:
            extra = extra + regularization(train.regularizer, train.regularization, decoder, heads, relation_rows,
                                           tails)
        if train.relation_prediction > 0:
            relation_scores = decoder.score_relations(heads, tails, model.relation.weight)
            extra = extra + train.relation_prediction * F.cross_entropy(relation_scores, relation_ids)
        return extra


class OneVsAll(_ScoredAgainstAll):
    """``train.objective=1vsall``: the examples are the training triples; each gives two queries."""

    name = "1vsall"

    def __init__(self, config: Config, kg: KG):
        super().__init__(config, kg)  # num_candidates < num_entities: checked with the run-time settings
        self.examples = kg.train

    def loss(self, model: KGEModel, batch: torch.Tensor, generator: torch.Generator, direction: str = "tail",
             weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        heads, relations, tails = batch[:, 0], batch[:, 1], batch[:, 2]
        anchors, answers = torch.cat([heads, tails]), torch.cat([tails, heads])
        codes = torch.cat([relations, relations + self.num_relations])
        head_query = codes >= self.num_relations
        relation_rows, relation_ids, head_direction = self._relation_rows(model, codes)
        sample = self.train.num_candidates
        if not sample:  # every entity: the rows come from the table itself (a dense gradient)
            all_rows = model.all_entities()
            anchor_rows, answer_rows = all_rows[anchors], all_rows[answers]
            scores = self._scores(model, anchor_rows, relation_rows, head_query, head_direction, all_rows)
            loss = F.cross_entropy(scores, answers, label_smoothing=self.train.label_smoothing)
        else:  # a shared uniform sample: one lookup of the batch's rows and the sample's
            sampled = torch.randint(self.num_entities, (sample,), generator=generator).to(batch.device)
            rows = model.entities(torch.cat([anchors, answers, sampled]))
            anchor_rows, answer_rows, sampled_rows = rows.split([len(anchors), len(answers), sample])
            sampled_scores = self._scores(model, anchor_rows, relation_rows, head_query, head_direction,
                                          sampled_rows) + math.log((self.num_entities - 1) / sample)
            sampled_scores = sampled_scores.masked_fill(sampled.unsqueeze(0) == answers.unsqueeze(1), float("-inf"))
            heads, tails = self._as_triples(anchor_rows, answer_rows, head_query, head_direction)
            answer_scores = model.decoder.score(heads, relation_rows, tails)
            scores = torch.cat([answer_scores.unsqueeze(1), sampled_scores], dim=1)
            loss = F.cross_entropy(scores, torch.zeros_like(answers), label_smoothing=self.train.label_smoothing)
        return loss + self._extra_terms(model, anchor_rows, relation_rows, relation_ids, answer_rows, head_query,
                                        head_direction)


class KvsAll(_ScoredAgainstAll):
    """``train.objective=kvsall``: the examples are the distinct training queries, rows
    ``(anchor, code, query index)`` (code r: (anchor, r, ?); r + R: (?, r, anchor))."""

    name = "kvsall"

    def __init__(self, config: Config, kg: KG):
        super().__init__(config, kg)
        train, width = kg.train, 2 * kg.num_relations
        anchors = torch.cat([train[:, 0], train[:, 2]])
        codes = torch.cat([train[:, 1], train[:, 1] + kg.num_relations])
        answers = torch.cat([train[:, 2], train[:, 0]])
        keys, inverse = torch.unique(anchors * width + codes, return_inverse=True)
        order = torch.argsort(inverse, stable=True)
        self.answers = answers[order]  # every query's answers, query by query
        self.counts = torch.bincount(inverse, minlength=len(keys))
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.examples = torch.stack([keys // width, keys % width, torch.arange(len(keys))], 1)

    def labels(self, query_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Q, N) multi-hot answers of the queries, and each query's first answer (Q,)."""
        counts, offsets = self.counts[query_ids], self.offsets[query_ids]
        rows = torch.repeat_interleave(torch.arange(len(query_ids)), counts)
        starts = torch.repeat_interleave(offsets - torch.cumsum(counts, 0) + counts, counts)
        positions = torch.arange(int(counts.sum())) + starts
        labels = torch.zeros(len(query_ids), self.num_entities)
        labels[rows, self.answers[positions]] = 1.0
        return labels, self.answers[offsets]

    def loss(self, model: KGEModel, batch: torch.Tensor, generator: torch.Generator, direction: str = "tail",
             weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        anchors, codes = batch[:, 0], batch[:, 1]
        labels, first = self.labels(batch[:, 2].cpu())
        labels, first = labels.to(batch.device), first.to(batch.device)
        head_query = codes >= self.num_relations
        relation_rows, relation_ids, head_direction = self._relation_rows(model, codes)
        all_rows = model.all_entities()
        anchor_rows = all_rows[anchors]
        scores = self._scores(model, anchor_rows, relation_rows, head_query, head_direction, all_rows)
        smoothing = self.train.label_smoothing
        if smoothing:
            labels = (1.0 - smoothing) * labels + 1.0 / self.num_entities
        loss = F.binary_cross_entropy_with_logits(scores, labels, reduction="sum") / len(batch)
        return loss + self._extra_terms(model, anchor_rows, relation_rows, relation_ids, all_rows[first], head_query,
                                        head_direction)


OBJECTIVES = {cls.name: cls for cls in (NegativeSampling, OneVsAll, KvsAll)}


def make_objective(config: Config, kg: KG):
    """The objective ``train.objective`` names, for ``kg``."""
    name = config.train.objective
    if name not in OBJECTIVES:
        raise ConfigError(f"train.objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](config, kg)
