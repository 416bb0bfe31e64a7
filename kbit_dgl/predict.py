"""Rank candidate entities for one query, by name, marking answers already known true."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

from .errors import ConfigError
from .eval.ranking import check_finite_scores


@torch.no_grad()
def predict(model, kg, relation: str, head: Optional[str] = None, tail: Optional[str] = None,
            top: int = 10) -> List[Dict]:
    """Top ``top`` answers to (head, relation, ?) or (?, relation, tail).

    Each row: ``{"entity", "id", "score", "known"}`` where ``known`` names the split(s) holding
    that triple (empty when the triple is not in the KG).
    """
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    direction = "tail" if head is not None else "head"
    anchor = kg.entity_id(head if head is not None else tail)
    relation_id = kg.relation_id(relation)
    all_rows = model.all_entities()
    device = all_rows.device
    scores = model.score_candidates(all_rows[torch.tensor([anchor], device=device)],
                                    torch.tensor([relation_id], device=device), all_rows,
                                    direction)[0]
    check_finite_scores(scores, f"({head}, {relation}, {tail})")
    values, ids = torch.topk(scores, min(top, len(scores)))
    known: Dict[int, List[str]] = {}
    for split in ("train", "valid", "test"):
        triples = kg.split(split)
        anchor_column, answer_column = (0, 2) if direction == "tail" else (2, 0)
        mask = (triples[:, anchor_column] == anchor) & (triples[:, 1] == relation_id)
        for entity in triples[mask, answer_column].tolist():
            known.setdefault(entity, []).append(split)
    return [{"entity": kg.entity_names[i], "id": i, "score": float(v), "known": ",".join(known.get(i, []))}
            for v, i in zip(values.tolist(), ids.tolist())]
