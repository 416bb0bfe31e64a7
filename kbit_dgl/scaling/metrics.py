"""The quality numbers the sweeps record: filtered MRR / Hits@k and a loss, from one ranking pass.

The loss is the **mean log filtered rank**: the mean over test queries (tail and head
prediction pooled) of ln(rank), with the filtered, tie-averaged rank of
:mod:`kbit_dgl.eval.ranking` (rank 1 gives 0; a model that scores every entity alike gets about
ln(N / 2)). It is defined for every decoder and every quantisation alike, since it depends on
the ranking only and not on the scale of the scores (a softmax cross-entropy over all entities
would depend on the score scale, which the margin and self-adversarial losses leave free), and
unlike MRR it keeps falling when the bad ranks improve. exp(loss) is the geometric mean rank.
"""
from __future__ import annotations

import time
from typing import Dict

import torch

from ..eval.ogb import ogb_ranks
from ..eval.ranking import filtered_ranks, summarize


def rank_metrics(model, kg, split: str = "test", batch_size: int = 256) -> Dict[str, float]:
    """Filtered ``mrr``, ``mr``, ``hits@1/3/10``, ``mean_log_rank``, ``num_queries`` and
    ``eval_seconds`` on ``split`` against all entities (the numbers ``kbit_dgl.eval.evaluate``
    reports for the filtered protocol, plus the loss); on an OGB KG, under OGB's protocol."""
    started = time.perf_counter()
    if split in kg.negatives:  # an OGB KG: each query against its own given negatives (OGB's protocol)
        ranks = ogb_ranks(model, kg, split, batch_size)
    else:
        ranks = filtered_ranks(model, kg.split(split), kg.filter_index, batch_size)
    pooled = torch.cat([ranks["tail"], ranks["head"]])
    metrics = summarize(pooled)
    metrics["mean_log_rank"] = float(pooled.double().log().mean())
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics
