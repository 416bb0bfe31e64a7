"""OGB's protocol: rank each test triple against its own 500 head / 500 tail negatives,
scored through ``ogb.linkproppred.Evaluator`` (the official MRR and Hits@k)."""
from __future__ import annotations

from typing import Dict

import torch

from .. import threads
from ..errors import ConfigError
from . import progress_bar
from .ranking import check_finite_scores


@torch.no_grad()
def evaluate_ogb(model, kg, split: str, batch_size: int = 256, progress: bool = False) -> Dict[str, object]:
    """OGB MRR/Hits@1/3/10 (and MR from the same ranks) on ``split`` of an OGB KG."""
    lists = _evaluator_lists(model, kg, split, batch_size, progress)
    metrics: Dict[str, object] = {}
    for direction in ("", "tail", "head"):
        def pooled(name):
            keys = [f"{d}:{name}" for d in (("tail", "head") if not direction else (direction,))]
            return torch.cat([torch.cat(lists[k]) for k in keys]).double()
        part = {"mrr": float(pooled("mrr_list").mean()), "mr": float((1.0 / pooled("mrr_list")).mean())}
        for k in (1, 3, 10):
            part[f"hits@{k}"] = float(pooled(f"hits@{k}_list").mean())
        part["num_queries"] = int(len(pooled("mrr_list")))
        if direction:
            metrics[direction] = part
        else:
            metrics.update(part)
    return metrics


@torch.no_grad()
def ogb_ranks(model, kg, split: str, batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """``{"tail": ranks, "head": ranks}`` (float64) under OGB's protocol: 1 / the Evaluator's reciprocal ranks."""
    lists = _evaluator_lists(model, kg, split, batch_size)
    return {direction: 1.0 / torch.cat(lists[f"{direction}:mrr_list"]).double() for direction in ("tail", "head")}


def _evaluator_lists(model, kg, split: str, batch_size: int, progress: bool = False) -> Dict[str, list]:
    """``ogb.linkproppred.Evaluator``'s per-query lists (``<direction>:mrr_list``, ``hits@k_list``), per batch."""
    import os

    os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb's version check would reach for the network
    from ogb.linkproppred import Evaluator

    if split not in kg.negatives:
        raise ConfigError(f"{kg.name}: no OGB negatives for split {split!r}; use the filtered protocol")
    evaluator = Evaluator(name=kg.name if kg.name.startswith("ogbl-") else "ogbl-wikikg2")
    was_training = model.training
    model.eval()
    all_rows = model.candidate_rows()  # a k-bit model's rows are decoded inside the kernel, by id
    device = all_rows.device
    triples = kg.split(split)
    lists: Dict[str, list] = {}
    bar = progress_bar(2 * len(triples), f"{split} (OGB protocol)", progress)
    for direction, anchor_column, target_column, key in (("tail", 0, 2, "tail_neg"), ("head", 2, 0, "head_neg")):
        negatives = kg.negatives[split][key]
        for start in range(0, len(triples), batch_size):
            batch = triples[start:start + batch_size].to(device)
            candidates = torch.cat([batch[:, target_column:target_column + 1],
                                    negatives[start:start + batch_size].to(device=device, dtype=torch.int64)],
                                   dim=1)
            # each query against its own 1 + K candidates, gathered inside the scoring kernel
            scores = model.score_candidate_ids(all_rows[batch[:, anchor_column]], batch[:, 1], all_rows, candidates,
                                               direction)
            check_finite_scores(scores, f"{kg.name} {split}, {direction} prediction")
            result = evaluator.eval({"y_pred_pos": scores[:, 0].float().cpu(),
                                     "y_pred_neg": scores[:, 1:].float().cpu()})
            for name, values in result.items():
                lists.setdefault(f"{direction}:{name}", []).append(values)
            bar.update(len(batch))
            threads.tick()
    bar.close()
    model.train(was_training)
    return lists
