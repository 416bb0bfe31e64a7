"""k-means codebooks for product quantisation (the ``pq`` data type of :mod:`.quantizers`).

A table (rows, cols) is cut into sub-vectors of ``width`` numbers (a last, shorter one padded by
repeating the row's last number, as the scalar blocks are); each sub-vector position gets its own
codebook of ``k`` centroids, learned by k-means on a fixed-seed sample of at most
``MAX_POINTS_PER_CENTROID * k`` rows, as FAISS's ``IndexPQ`` trains. Seeding is k-means++ (Arthur and
Vassilvitskii 2007) rather than FAISS's random rows, then ``ITERATIONS`` Lloyd steps; a centroid that
loses all its points keeps its place. Every row is then coded by its nearest centroid, sub-vector by
sub-vector. Several sub-vector positions are processed as one batch (``torch.baddbmm``) with the
distance matrices bounded by ``WORKSPACE_BYTES``, so a 2.5M-row table is coded in bounded memory.
Written here rather than calling FAISS because ``faiss-cpu`` is only an optional benchmark dependency.
"""
from __future__ import annotations

from typing import Tuple

import torch

MAX_POINTS_PER_CENTROID = 256  # FAISS's default training-sample cap
ITERATIONS = 25  # FAISS's default number of Lloyd iterations
WORKSPACE_BYTES = 64 << 20  # distance matrices held at once


def subvectors(table: torch.Tensor, width: int) -> torch.Tensor:
    """(n, cols) -> (n, ceil(cols / width), width), the last sub-vector padded with the row's last number."""
    pad = -table.shape[1] % width
    if pad:
        table = torch.cat([table, table[:, -1:].expand(-1, pad)], dim=1)
    return table.reshape(table.shape[0], -1, width)


def _group(points: int, k: int) -> int:
    """Sub-vector positions per batch so that the (group, points, k) distances fit the workspace."""
    return max(1, WORKSPACE_BYTES // (4 * max(1, points) * k))


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(G, n, w), (G, k, w) -> (index (G, n), squared distance (G, n)) of each point's nearest centroid."""
    norms = centroids.square().sum(-1).unsqueeze(1)  # (G, 1, k)
    partial = torch.baddbmm(norms, points, centroids.transpose(1, 2), alpha=-2.0)  # |c|^2 - 2 x.c
    best, index = partial.min(-1)
    return index, (best + points.square().sum(-1)).clamp_min(0)


def _seed(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding of every group at once: (G, n, w) -> (G, k, w)."""
    groups, count, width = points.shape
    arange = torch.arange(groups)
    first = torch.randint(count, (groups,), generator=generator)
    centroids = points.new_empty(groups, k, width)
    centroids[:, 0] = points[arange, first]
    closest = (points - centroids[:, :1]).square().sum(-1)  # (G, n)
    for index in range(1, k):
        weights = closest.double()
        weights = weights + (weights.sum(-1, keepdim=True) == 0).double()  # all points placed: any one
        chosen = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        centroids[:, index] = points[arange, chosen]
        closest = torch.minimum(closest, (points - centroids[:, index:index + 1]).square().sum(-1))
    return centroids


def kmeans(points: torch.Tensor, k: int, iterations: int = ITERATIONS, seed: int = 0) -> torch.Tensor:
    """Centroids (G, k, w) of G independent k-means problems on points (G, n, w).

    With n <= k every point is its own centroid (the rest repeat the last point): exact coding.
    """
    points = points.float()
    groups, count, width = points.shape
    if count <= k:
        padded = torch.cat([points, points[:, -1:].expand(-1, k - count, -1)], dim=1) if count else \
            points.new_zeros(groups, k, width)
        return padded.contiguous()
    generator = torch.Generator().manual_seed(seed)
    centroids = _seed(points.cpu(), k, generator).to(points.device)
    for _ in range(iterations):
        index, _ = _nearest(points, centroids)
        sums = torch.zeros_like(centroids).scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, width), points)
        counts = torch.zeros(groups, k, device=points.device).scatter_add_(1, index, torch.ones_like(index,
                                                                                                    dtype=torch.float))
        moved = sums / counts.clamp_min(1).unsqueeze(-1)
        centroids = torch.where(counts.unsqueeze(-1) > 0, moved, centroids)  # an emptied centroid stays
    return centroids.contiguous()


def product_quantize(table: torch.Tensor, width: int, k: int, seed: int = 0,
                     row_chunk: int = 1 << 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """(codebook (sub-vectors, k, width) float32, codes (rows, sub-vectors) int64) of a float table."""
    table = table.detach().float()
    rows = table.shape[0]
    sample_size = min(rows, MAX_POINTS_PER_CENTROID * k)
    sample = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[:sample_size]
    training = subvectors(table[sample.to(table.device)], width).transpose(0, 1).contiguous()  # (M, n, w)
    count = training.shape[0]
    step = _group(sample_size, k)
    codebook = torch.cat([kmeans(training[start:start + step], k, seed=seed + start)
                          for start in range(0, count, step)])
    codes = torch.empty(rows, count, dtype=torch.int64, device=table.device)
    for start in range(0, rows, row_chunk):
        chunk = subvectors(table[start:start + row_chunk], width).transpose(0, 1)  # (M, n, w)
        step = _group(chunk.shape[1], k)
        for first in range(0, count, step):
            index, _ = _nearest(chunk[first:first + step].contiguous(), codebook[first:first + step])
            codes[start:start + row_chunk, first:first + step] = index.t()
    return codebook, codes
