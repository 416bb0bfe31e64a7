"""Losses over positive scores (B,) and negative scores (B, N)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def self_adversarial_loss(positive: torch.Tensor, negative: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """RotatE's self-adversarial negative sampling loss.

    -log sigmoid(pos) - sum_j softmax(temperature * neg)_j log sigmoid(-neg_j), the weights
    detached, averaged over positives and negatives as in the paper's code.
    """
    weights = torch.softmax(negative.detach() * temperature, dim=-1)
    negative_term = -(weights * F.logsigmoid(-negative)).sum(-1)
    positive_term = -F.logsigmoid(positive)
    return (positive_term.mean() + negative_term.mean()) / 2


def margin_ranking_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """TransE's loss: mean over (positive, negative) pairs of max(0, margin - pos + neg)."""
    return torch.relu(margin - positive.unsqueeze(-1) + negative).mean()


LOSSES = ("self_adversarial", "margin")


def compute_loss(name: str, positive: torch.Tensor, negative: torch.Tensor, temperature: float,
                 margin: float) -> torch.Tensor:
    if name == "self_adversarial":
        return self_adversarial_loss(positive, negative, temperature)
    if name == "margin":
        return margin_ranking_loss(positive, negative, margin)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
