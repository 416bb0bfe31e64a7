"""Evaluation: filtered ranking against all entities, or OGB's official protocol."""
from __future__ import annotations

import logging
import time
from typing import Dict

from ..errors import ConfigError
from .ranking import evaluate_filtered, filtered_ranks, rank_from_scores, summarize  # noqa: F401

log = logging.getLogger("kbit_dgl")


def resolve_protocol(kg, protocol: str = "auto") -> str:
    """``auto`` picks OGB's protocol when the KG carries OGB negatives, else filtered ranking."""
    if protocol == "auto":
        return "ogb" if kg.negatives else "filtered"
    if protocol not in ("filtered", "ogb"):
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; expected auto, filtered or ogb")
    return protocol


def evaluate(model, kg, split: str, protocol: str = "auto", batch_size: int = 256,
             per_relation: bool = False, progress: bool = False) -> Dict:
    """Metrics dict (mrr, mr, hits@1/3/10, per direction, protocol) for ``split``; ``progress`` shows a
    bar of the queries scored, and the time and rate go to the log (not the dict: metrics stay
    comparable between runs)."""
    protocol = resolve_protocol(kg, protocol)
    started = time.perf_counter()
    if protocol == "ogb":
        from .ogb import evaluate_ogb

        metrics = evaluate_ogb(model, kg, split, batch_size, progress)
    else:
        metrics = evaluate_filtered(model, kg, split, batch_size, per_relation, progress)
    seconds = time.perf_counter() - started
    metrics["protocol"] = protocol
    log.info("%s %s: %d queries in %.1f s (%.0f queries/s)", kg.name, split, metrics["num_queries"], seconds,
             metrics["num_queries"] / max(seconds, 1e-9))
    return metrics


def progress_bar(total: int, what: str, enabled: bool):
    """A tqdm bar of ``total`` queries (nothing shown unless ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="query", desc=what, leave=False)
