"""One training step's loss: a batch of positives against shared negatives, for any decoder."""
from __future__ import annotations

from typing import Optional

import torch

from ..config import Config
from ..models.model import KGEModel
from ..models.regularizers import regularization
from .losses import compute_loss
from .sampling import chunk_layout, uniform_negatives


def train_step(model: KGEModel, positives: torch.Tensor, config: Config, generator: torch.Generator,
               direction: str, weights: Optional[torch.Tensor] = None,
               all_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss of one batch of positive triples (B, 3): corrupt ``direction`` with shared negatives.

    ``weights`` (B,) optionally weighs each positive (``train.subsampling``); ``all_rows``
    (num_entities, d), when given, are the entity representations to gather from (an encoder's
    output, computed once per step).
    """
    train = config.train
    num_chunks, _ = chunk_layout(len(positives), train.negative_chunk_size)
    # drawn on the CPU generator (resumable, the same on every device), then moved to the batch's device
    negative_ids = uniform_negatives(num_chunks, train.num_negatives, model.num_entities, generator)
    negative_ids = negative_ids.to(positives.device)
    heads, relations, tails = positives[:, 0], positives[:, 1], positives[:, 2]
    if model.reciprocal and direction == "head":  # (?, r, t) as (t, r^-1, ?)
        heads, relations, tails, direction = tails, relations + model.num_relations, heads, "tail"
    # one lookup for every entity row of the step: one gather, and with dense tables one (num_entities,
    # d) gradient in the backward instead of three to fill and add up
    rows = model.entities(torch.cat([heads, tails, negative_ids.reshape(-1)]), all_rows)
    head_rows, tail_rows, negative_rows = rows.split([len(heads), len(tails), negative_ids.numel()])
    return batch_loss(model.decoder, head_rows, model.relations(relations), tail_rows,
                      negative_rows.reshape(*negative_ids.shape, -1), train, direction, weights)


def batch_loss(decoder, head_rows: torch.Tensor, relation_rows: torch.Tensor, tail_rows: torch.Tensor,
               negative_rows: torch.Tensor, train, direction: str,
               weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss from the rows of a batch: (B, d) heads / relations / tails and (num_chunks, N, d)
    negatives, each chunk of B / num_chunks queries sharing one negative set; ``train`` is the
    ``train`` config section."""
    num_chunks = negative_rows.shape[0]
    chunk = len(head_rows) // num_chunks
    positive_scores = decoder.score(head_rows, relation_rows, tail_rows)
    anchor = head_rows if direction == "tail" else tail_rows
    negative_scores = decoder.score_candidates(
        anchor.view(num_chunks, chunk, -1), relation_rows.view(num_chunks, chunk, -1),
        negative_rows, direction).reshape(len(head_rows), -1)
    loss = compute_loss(train.loss, positive_scores, negative_scores, train.adversarial_temperature, train.margin,
                        weights)
    if train.regularization > 0:
        loss = loss + regularization(train.regularizer, train.regularization, decoder, head_rows, relation_rows,
                                     tail_rows)
    return loss
