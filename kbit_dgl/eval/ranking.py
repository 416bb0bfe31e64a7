"""Filtered rank-based evaluation against all entities, both directions.

A query's rank is ``1 + #(other candidates scoring higher) + #(others scoring equal) / 2``: the
mean of the optimistic and the pessimistic rank (as OGB and LibKGE count ties), so a model that
scores everything equally gets the middle rank, not rank 1. A NaN score counts against the
target (a NaN candidate ranks above it, a NaN target below everything), and the evaluation
functions refuse non-finite scores outright (:func:`check_finite_scores`): a broken model must
never produce a metric. "Filtered" removes every other
known true answer (train, valid and test) from the candidates, as Bordes et al. (2013) do.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..data.kg import FilterIndex
from ..errors import NonFiniteError

HITS_AT = (1, 3, 10)


def rank_from_scores(scores: torch.Tensor, targets: torch.Tensor,
                     filter_rows: Optional[torch.Tensor] = None,
                     filter_entities: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ranks (b,) float of ``targets`` within ``scores`` (b, N); filtered pairs are excluded.

    ``filter_rows``/``filter_entities`` list (query, entity) pairs to exclude; the target itself
    may be among them (it is always kept).
    """
    rows = torch.arange(len(targets), device=scores.device)
    target_scores = scores[rows, targets]
    target_scores = torch.where(torch.isnan(target_scores), float("-inf"), target_scores).unsqueeze(1)
    scores = torch.where(torch.isnan(scores), float("inf"), scores)  # a new tensor: the caller's stays
    # excluded entries (known answers, the target itself) become NaN, which is neither > nor == anything
    if filter_rows is not None and len(filter_rows):
        scores[filter_rows.to(scores.device), filter_entities.to(scores.device)] = float("nan")
    scores[rows, targets] = float("nan")
    greater = (scores > target_scores).sum(1)
    equal = (scores == target_scores).sum(1)
    return 1.0 + greater.double() + equal.double() / 2.0


def check_finite_scores(scores: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` if ``scores`` hold NaN or inf: the model's weights are broken."""
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(f"{what}: {bad} of {scores.numel()} scores are NaN or infinite; the model's weights "
                             f"are broken (a diverged run, or a damaged file), so no metric is reported")


def summarize(ranks: torch.Tensor) -> Dict[str, float]:
    """MRR, MR and Hits@k from a flat tensor of ranks."""
    ranks = ranks.double()
    metrics = {"mrr": float((1.0 / ranks).mean()), "mr": float(ranks.mean())}
    for k in HITS_AT:
        metrics[f"hits@{k}"] = float((ranks <= k).double().mean())
    metrics["num_queries"] = int(len(ranks))
    return metrics


@torch.no_grad()
def filtered_ranks(model, triples: torch.Tensor, filter_index: Optional[FilterIndex],
                   batch_size: int = 256, device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
    """Filtered ranks of every triple for tail and head prediction against all entities.

    Returns ``{"tail": (n,), "head": (n,)}`` ranks. Memory is bounded by ``batch_size`` queries
    times the number of entities; the filter is applied as index masks, with no per-query loop.
    Pass ``filter_index=None`` for raw (unfiltered) ranks.
    """
    was_training = model.training
    model.eval()
    all_rows = model.all_entities()
    device = device or all_rows.device  # not model.entity.weight: a quantized table has no float weight
    result = {}
    for direction, anchor_column, target_column in (("tail", 0, 2), ("head", 2, 0)):
        ranks = []
        for start in range(0, len(triples), batch_size):
            batch = triples[start:start + batch_size]
            anchor_ids, relation_ids = batch[:, anchor_column], batch[:, 1]
            targets = batch[:, target_column].to(device)
            scores = model.score_candidates(all_rows[anchor_ids.to(device)], relation_ids.to(device), all_rows,
                                            direction)
            check_finite_scores(scores, f"{direction} prediction")
            if filter_index is not None:
                rows, entities = filter_index.known(anchor_ids, relation_ids, direction)
                ranks.append(rank_from_scores(scores, targets, rows, entities).cpu())
            else:
                ranks.append(rank_from_scores(scores, targets).cpu())
        result[direction] = torch.cat(ranks)
    model.train(was_training)
    return result


def evaluate_filtered(model, kg, split: str, batch_size: int = 256,
                      per_relation: bool = False) -> Dict[str, object]:
    """Filtered MRR/MR/Hits@k on ``split``, head and tail prediction averaged (all queries pooled)."""
    triples = kg.split(split)
    ranks = filtered_ranks(model, triples, kg.filter_index, batch_size)
    metrics: Dict[str, object] = summarize(torch.cat([ranks["tail"], ranks["head"]]))
    metrics["tail"] = summarize(ranks["tail"])
    metrics["head"] = summarize(ranks["head"])
    unseen = kg.unseen_entity_mask(split)
    metrics["num_triples_with_unseen_entity"] = int(unseen.sum())
    if per_relation:
        table = {}
        for relation in torch.unique(triples[:, 1]).tolist():
            mask = triples[:, 1] == relation
            table[kg.relation_names[relation]] = summarize(torch.cat([ranks["tail"][mask], ranks["head"][mask]]))
        metrics["per_relation"] = table
    return metrics
