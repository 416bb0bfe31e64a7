"""Benchmark KGs whose only property that matters is their size."""
from __future__ import annotations

import torch

from ..data.kg import KG


def random_kg(num_entities: int, num_relations: int, num_triples: int, seed: int = 0) -> KG:
    """A KG of uniformly random int64 triples (only the entity count matters for a step's cost);
    ``num_triples`` training triples, 100 valid and 100 test triples, names ``"0"``, ``"1"``, ..."""
    generator = torch.Generator().manual_seed(seed)

    def triples(count: int) -> torch.Tensor:
        return torch.stack([torch.randint(num_entities, (count,), generator=generator),
                            torch.randint(num_relations, (count,), generator=generator),
                            torch.randint(num_entities, (count,), generator=generator)], dim=1)

    return KG(name=f"random-{num_entities}", train=triples(num_triples), valid=triples(100), test=triples(100),
              num_entities=num_entities, num_relations=num_relations,
              entity_names=[str(i) for i in range(num_entities)],
              relation_names=[str(i) for i in range(num_relations)])
