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

from typing import Dict, Iterator, Optional, Tuple

import torch

from .. import threads
from ..data.kg import FilterIndex
from ..errors import NonFiniteError
from ..models import native
from ..models.kernels import RowSource

HITS_AT = (1, 3, 10)
# rows of a k-bit table decoded at once when scoring against every entity (a RowSource's block):
# with 256 queries the scores of a block take 64 MiB, the decoded block 256 KiB per number in a row
BLOCK_ROWS = 1 << 16
# up to this many queries score a k-bit table's rows by id in the native kernel instead of decoding
# each block once for all of them: with few queries there is no decoding to share (one query's top-10
# over 2.5M 4-bit rows of dim 500: p50 656 ms instead of 3.8 s; results/bench/kbit_serving_topk.json)
BY_ID_QUERIES = 8


def _by_id(model, rows, num_queries: int) -> bool:
    return (isinstance(rows, RowSource) and num_queries <= BY_ID_QUERIES and native.enabled()
            and getattr(model.decoder, "candidate_kernel", None) in native.PACKED_KINDS
            and rows.native_layout() is not None)


def rank_from_scores(scores: torch.Tensor, targets: torch.Tensor,
                     filter_rows: Optional[torch.Tensor] = None,
                     filter_entities: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ranks (b,) float of ``targets`` within ``scores`` (b, N); filtered pairs are excluded.

    ``filter_rows``/``filter_entities`` list (query, entity) pairs to exclude; the target itself
    may be among them (it is always kept).
    """
    rows = torch.arange(len(targets), device=scores.device)
    greater, equal = _count_above(scores, scores[rows, targets], rows, targets, filter_rows, filter_entities)
    return 1.0 + greater + equal / 2.0


def _count_above(scores: torch.Tensor, target_scores: torch.Tensor, target_rows: torch.Tensor,
                 target_columns: torch.Tensor, filter_rows: Optional[torch.Tensor] = None,
                 filter_columns: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(#greater, #equal) per row of ``scores`` against ``target_scores`` (b,), float64, leaving out
    the (row, column) pairs of the targets and of the filter."""
    target_scores = torch.where(torch.isnan(target_scores), float("-inf"), target_scores).unsqueeze(1)
    scores = torch.where(torch.isnan(scores), float("inf"), scores)  # a new tensor: the caller's stays
    # excluded entries (known answers, the target itself) become NaN, which is neither > nor == anything
    if filter_rows is not None and len(filter_rows):
        scores[filter_rows.to(scores.device), filter_columns.to(scores.device)] = float("nan")
    scores[target_rows, target_columns] = float("nan")
    return (scores > target_scores).sum(1).double(), (scores == target_scores).sum(1).double()


def score_blocks(model, anchors: torch.Tensor, relation_ids: torch.Tensor, rows, direction: str,
                 block_rows: int = BLOCK_ROWS) -> Iterator[Tuple[int, torch.Tensor]]:
    """(first entity id, scores (b, block)) of queries against every entity: one block for a float
    table, blocks of ``block_rows`` decoded rows for a :class:`RowSource` (a k-bit table), so that
    neither the float table nor a (b, num_entities) score matrix exists at once."""
    if not isinstance(rows, RowSource):
        yield 0, model.score_candidates(anchors, relation_ids, rows, direction)
        return
    by_id = _by_id(model, rows, len(anchors))
    for start in range(0, len(rows), block_rows):
        stop = min(start + block_rows, len(rows))
        if by_id:  # a few queries: each candidate decoded where the kernel reads it (see BY_ID_QUERIES)
            ids = torch.arange(start, stop, device=anchors.device).expand(len(anchors), -1).contiguous()
            yield start, model.score_candidate_ids(anchors, relation_ids, rows, ids, direction)
        else:
            yield start, model.score_candidates(anchors, relation_ids, rows.block(start, stop), direction)


def ranks_against_all(model, anchors: torch.Tensor, relation_ids: torch.Tensor, rows, targets: torch.Tensor,
                      direction: str, filter_rows: Optional[torch.Tensor] = None,
                      filter_entities: Optional[torch.Tensor] = None, what: str = "prediction") -> torch.Tensor:
    """Ranks (b,) of ``targets`` among all entities (``rows``: a float table or a RowSource), the
    (query, entity) pairs of the filter left out; non-finite scores are refused."""
    if not isinstance(rows, RowSource):
        scores = model.score_candidates(anchors, relation_ids, rows, direction)
        check_finite_scores(scores, what)
        return rank_from_scores(scores, targets, filter_rows, filter_entities)
    index = torch.arange(len(targets), device=targets.device)
    # the targets' own scores, through the same kernel as the blocks: queries against their targets' rows
    if _by_id(model, rows, len(anchors)):
        target_scores = model.score_candidate_ids(anchors, relation_ids, rows, targets[:, None], direction)[:, 0]
    else:
        target_scores = model.score_candidates(anchors, relation_ids, rows[targets], direction).diagonal()
    greater = torch.zeros(len(targets), dtype=torch.float64, device=targets.device)
    equal = torch.zeros_like(greater)
    for start, scores in score_blocks(model, anchors, relation_ids, rows, direction):
        check_finite_scores(scores, what)
        stop = start + scores.shape[1]
        here = (targets >= start) & (targets < stop)
        in_filter = None
        if filter_rows is not None and len(filter_rows):
            inside = (filter_entities >= start) & (filter_entities < stop)
            in_filter = (filter_rows[inside], filter_entities[inside] - start)
        block_greater, block_equal = _count_above(scores, target_scores, index[here], targets[here] - start,
                                                  *(in_filter or (None, None)))
        greater += block_greater
        equal += block_equal
    return 1.0 + greater + equal / 2.0


def top_k(model, anchors: torch.Tensor, relation_ids: torch.Tensor, rows, direction: str, k: int,
          exclude_rows: Optional[torch.Tensor] = None, exclude_entities: Optional[torch.Tensor] = None,
          what: str = "prediction") -> Tuple[torch.Tensor, torch.Tensor]:
    """(scores, entity ids), both (b, k), of the best ``k`` entities per query, merged block by block;
    the (query, entity) pairs ``exclude_*`` are left out (filtered top-k)."""
    best_scores = best_ids = None
    for start, scores in score_blocks(model, anchors, relation_ids, rows, direction):
        check_finite_scores(scores, what)
        if exclude_rows is not None and len(exclude_rows):
            inside = (exclude_entities >= start) & (exclude_entities < start + scores.shape[1])
            scores[exclude_rows[inside], exclude_entities[inside] - start] = float("-inf")
        values, ids = scores.topk(min(k, scores.shape[1]), dim=1)
        ids = ids + start
        if best_scores is not None:
            values, ids = torch.cat([best_scores, values], 1), torch.cat([best_ids, ids], 1)
            values, order = values.topk(min(k, values.shape[1]), dim=1)
            ids = ids.gather(1, order)
        best_scores, best_ids = values, ids
    return best_scores, best_ids


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
                   batch_size: int = 256, device: Optional[torch.device] = None,
                   progress: bool = False) -> Dict[str, torch.Tensor]:
    """Filtered ranks of every triple for tail and head prediction against all entities.

    Returns ``{"tail": (n,), "head": (n,)}`` ranks. Memory is bounded by ``batch_size`` queries
    times the number of entities; the filter is applied as index masks, with no per-query loop.
    Pass ``filter_index=None`` for raw (unfiltered) ranks.
    """
    was_training = model.training
    model.eval()
    all_rows = model.candidate_rows()  # a k-bit model's rows are decoded a block at a time
    device = device or all_rows.device  # not model.entity.weight: a quantized table has no float weight
    result = {}
    from . import progress_bar

    bar = progress_bar(2 * len(triples), "filtered ranking", progress)
    for direction, anchor_column, target_column in (("tail", 0, 2), ("head", 2, 0)):
        ranks = []
        for start in range(0, len(triples), batch_size):
            batch = triples[start:start + batch_size]
            anchor_ids, relation_ids = batch[:, anchor_column], batch[:, 1]
            targets = batch[:, target_column].to(device)
            known = filter_index.known(anchor_ids, relation_ids, direction) if filter_index is not None else ()
            known = tuple(part.to(device) for part in known)
            ranks.append(ranks_against_all(model, all_rows[anchor_ids.to(device)], relation_ids.to(device), all_rows,
                                           targets, direction, *known, what=f"{direction} prediction").cpu())
            bar.update(len(batch))
            threads.tick()
        result[direction] = torch.cat(ranks)
    bar.close()
    model.train(was_training)
    return result


def evaluate_filtered(model, kg, split: str, batch_size: int = 256,
                      per_relation: bool = False, progress: bool = False) -> Dict[str, object]:
    """Filtered MRR/MR/Hits@k on ``split``, head and tail prediction averaged (all queries pooled)."""
    triples = kg.split(split)
    ranks = filtered_ranks(model, triples, kg.filter_index, batch_size, progress=progress)
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
