"""Batches of positives and uniform negatives, driven by one seeded generator (resumable)."""
from __future__ import annotations

from typing import Iterator, Tuple

import torch


def epoch_permutation(num_triples: int, generator: torch.Generator) -> torch.Tensor:
    """The order of one epoch's positives: a fresh shuffle of ``num_triples`` ids."""
    return torch.randperm(num_triples, generator=generator)


def positive_batches(num_triples: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield index tensors over a fresh shuffle of ``num_triples`` (the last batch may be short)."""
    order = epoch_permutation(num_triples, generator)
    for start in range(0, num_triples, batch_size):
        yield order[start:start + batch_size]


def chunk_layout(batch: int, chunk_size: int) -> Tuple[int, int]:
    """(num_chunks, chunk) with num_chunks * chunk == batch and chunk <= chunk_size when possible."""
    chunk_size = max(1, min(chunk_size, batch))
    if batch % chunk_size == 0:
        return batch // chunk_size, chunk_size
    return 1, batch  # a short last batch shares one negative set


def uniform_negatives(num_chunks: int, num_negatives: int, num_entities: int,
                      generator: torch.Generator) -> torch.Tensor:
    """(num_chunks, num_negatives) entity ids drawn uniformly; each chunk shares its row."""
    return torch.randint(num_entities, (num_chunks, num_negatives), generator=generator)


def subsampling_weights(triples: torch.Tensor, num_entities: int, num_relations: int) -> torch.Tensor:
    """(n,) per-triple weights 1/sqrt(#(h, r, .) + #(., r, t) + 6), as the RotatE code's default.

    Like word2vec's subsampling, triples whose (head, relation) or (relation, tail) is frequent
    weigh less, so 1-N and N-1 relations do not dominate the loss. The +6 is the code's start
    count of 4 per key (each count includes the triple itself and starts at 4).
    """
    weights = torch.zeros(len(triples), dtype=torch.float64)
    for anchor in (0, 2):
        keys = triples[:, anchor] * num_relations + triples[:, 1]
        _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        weights += counts[inverse].double()
    return (1.0 / torch.sqrt(weights + 6.0)).float()
