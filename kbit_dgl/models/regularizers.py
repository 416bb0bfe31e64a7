"""Regularizers on the rows of a batch: ``train.regularizer`` at weight ``train.regularization``.

* ``l2``: weight * (mean h^2 + mean r^2 + mean t^2), the project's original term.
* ``n3`` (Lacroix et al. 2018, facebookresearch/kbc): weight * sum |f|^3 / B over the decoder's
  factors (:meth:`~kbit_dgl.models.decoders.Decoder.factors`: a complex coordinate's modulus for
  ComplEx), B the batch's queries. Rows enter once per query that uses them, which weighs each row by
  its frequency, as kbc's per-batch term does.
* ``dura`` (Zhang et al. 2020, DURA's code): for CP, DistMult and ComplEx
  weight * (0.5 sum(h^2 + t^2) + 1.5 sum(h^2 r^2 + t^2 r^2)) / B over the factors; for RESCAL
  weight * (sum(h^2 + t^2) + sum((R^T h)^2 + (R t)^2)) / B.

:func:`check_regularizer` refuses a regularizer the decoder has no form of.
"""
from __future__ import annotations

import torch

from ..config import REGULARIZERS
from ..errors import ConfigError
from .decoders import RESCAL


def check_regularizer(name: str, decoder) -> None:
    """Refuse ``train.regularizer`` ``name`` where ``decoder`` has no form of it."""
    if name not in REGULARIZERS:
        raise ConfigError(f"train.regularizer must be one of {', '.join(REGULARIZERS)}, got {name!r}")
    if name == "l2":
        return
    rows = torch.zeros(1, decoder.entity_dim), torch.zeros(1, decoder.relation_dim)
    has_factors = decoder.factors(rows[0], rows[1], rows[0]) is not None
    if not (has_factors or (name == "dura" and isinstance(decoder, RESCAL))):
        usable = "cp, distmult, complex" + (", rescal" if name == "dura" else "")
        raise ConfigError(f"train.regularizer={name} weighs the factors of a tensor factorization ({usable}); "
                          f"model.name={decoder.name} has none: use train.regularizer=l2")


def regularization(name: str, weight: float, decoder, head: torch.Tensor, relation: torch.Tensor,
                   tail: torch.Tensor) -> torch.Tensor:
    """The regularizer ``name`` at ``weight`` on a batch's aligned rows (B, d): heads, relations, tails."""
    if name == "l2":
        return weight * (head.pow(2).mean() + tail.pow(2).mean() + relation.pow(2).mean())
    queries = head.shape[0]
    if name == "dura" and isinstance(decoder, RESCAL):
        matrix = decoder._matrix(relation)
        projected_head = torch.matmul(matrix.transpose(-1, -2), head.unsqueeze(-1))
        projected_tail = torch.matmul(matrix, tail.unsqueeze(-1))
        norm = (head.pow(2) + tail.pow(2)).sum() + (projected_head.pow(2) + projected_tail.pow(2)).sum()
        return weight * norm / queries
    factor_head, factor_relation, factor_tail = decoder.factors(head, relation, tail)
    if name == "n3":
        norm = sum(factor.pow(3).sum() for factor in (factor_head, factor_relation, factor_tail))
        return weight * norm / queries
    if name == "dura":
        squared_relation = factor_relation.pow(2)
        norm = 0.5 * (factor_head.pow(2) + factor_tail.pow(2)).sum() \
            + 1.5 * (factor_head.pow(2) * squared_relation + factor_tail.pow(2) * squared_relation).sum()
        return weight * norm / queries
    raise ConfigError(f"train.regularizer must be one of {', '.join(REGULARIZERS)}, got {name!r}")
