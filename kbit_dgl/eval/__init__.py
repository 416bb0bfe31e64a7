"""Evaluation: filtered ranking against all entities, or OGB's official protocol."""
from __future__ import annotations

from typing import Dict

from ..errors import ConfigError
from .ranking import evaluate_filtered, filtered_ranks, rank_from_scores, summarize  # noqa: F401


def resolve_protocol(kg, protocol: str = "auto") -> str:
    """``auto`` picks OGB's protocol when the KG carries OGB negatives, else filtered ranking."""
    if protocol == "auto":
        return "ogb" if kg.negatives else "filtered"
    if protocol not in ("filtered", "ogb"):
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; expected auto, filtered or ogb")
    return protocol


def evaluate(model, kg, split: str, protocol: str = "auto", batch_size: int = 256,
             per_relation: bool = False) -> Dict:
    """Metrics dict (mrr, mr, hits@1/3/10, per direction, protocol) for ``split``."""
    protocol = resolve_protocol(kg, protocol)
    if protocol == "ogb":
        from .ogb import evaluate_ogb

        metrics = evaluate_ogb(model, kg, split, batch_size)
    else:
        metrics = evaluate_filtered(model, kg, split, batch_size, per_relation)
    metrics["protocol"] = protocol
    return metrics
