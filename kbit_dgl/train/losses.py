"""Losses over positive scores (B,) and negative scores (B, N)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    return values.mean() if weights is None else (weights * values).sum() / weights.sum()


def self_adversarial_loss(positive: torch.Tensor, negative: torch.Tensor, temperature: float = 1.0,
                          weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """RotatE's self-adversarial negative sampling loss.

    -log sigmoid(pos) - sum_j softmax(temperature * neg)_j log sigmoid(-neg_j), the weights
    detached, averaged over positives and negatives as in the paper's code (weighted by the
    optional per-positive ``weights``, e.g. subsampling weights).
    """
    adversarial = torch.softmax(negative.detach() * temperature, dim=-1)
    negative_term = -(adversarial * F.logsigmoid(-negative)).sum(-1)
    positive_term = -F.logsigmoid(positive)
    return (_mean(positive_term, weights) + _mean(negative_term, weights)) / 2


def margin_ranking_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0,
                        weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """TransE's loss: mean over (positive, negative) pairs of max(0, margin - pos + neg)."""
    return _mean(torch.relu(margin - positive.unsqueeze(-1) + negative).mean(-1), weights)


LOSSES = ("self_adversarial", "margin")


def compute_loss(name: str, positive: torch.Tensor, negative: torch.Tensor, temperature: float,
                 margin: float, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    if name == "self_adversarial":
        return self_adversarial_loss(positive, negative, temperature, weights)
    if name == "margin":
        return margin_ranking_loss(positive, negative, margin, weights)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
