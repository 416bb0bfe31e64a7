"""k-means codebooks for product quantisation (the ``pq`` data type of :mod:`.quantizers`).

A table (rows, cols) is cut into sub-vectors of ``width`` numbers (a last, shorter one padded by
repeating the row's last number, as the scalar blocks are); each sub-vector position gets its own
codebook of ``k`` centroids, learned by k-means on a fixed-seed sample of at most
``MAX_POINTS_PER_CENTROID * k`` rows, as FAISS's ``IndexPQ`` trains. Seeding is k-means++ (Arthur and
Vassilvitskii 2007) on the sample's first ``SEED_POINTS_PER_CENTROID * k`` rows rather than FAISS's
random rows, then ``ITERATIONS`` Lloyd steps on the whole sample; a centroid that
loses all its points keeps its place. Every row is then coded by its nearest centroid, sub-vector by
sub-vector. Several sub-vector positions are processed as one batch (``torch.baddbmm``) with the
distance matrices bounded by ``WORKSPACE_BYTES``, so a 2.5M-row table is coded in bounded memory;
one-number sub-vectors find their nearest centroid by bisection instead.
Written here rather than calling FAISS because ``faiss-cpu`` is only an optional benchmark dependency.
"""
from __future__ import annotations

from typing import Tuple

import torch

from .quantizers import _blocked

MAX_POINTS_PER_CENTROID = 256  # FAISS's default training-sample cap
ITERATIONS = 25  # FAISS's default number of Lloyd iterations
SEED_POINTS_PER_CENTROID = 32  # k-means++ seeds from this many sample points per centroid (k sequential passes)
WORKSPACE_BYTES = 64 << 20  # distance matrices held at once


# (n, cols) -> (n, ceil(cols / width), width), the last sub-vector padded with the row's last number:
# the scalar types' blocking, shared so that both pad alike
subvectors = _blocked


def _group(points: int, k: int) -> int:
    """Sub-vector positions per batch so that the (group, points, k) distances fit the workspace."""
    return max(1, WORKSPACE_BYTES // (4 * max(1, points) * k))


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(G, n, w), (G, k, w) -> (index (G, n), squared distance (G, n)) of each point's nearest centroid."""
    if points.shape[-1] == 1:  # one number per sub-vector: the nearest of sorted centroids by bisection
        values, order = centroids.squeeze(-1).sort(-1)
        midpoints = (values[:, 1:] + values[:, :-1]) / 2
        slot = torch.searchsorted(midpoints.contiguous(), points.squeeze(-1).contiguous())
        index = order.gather(1, slot)
        return index, (points.squeeze(-1) - values.gather(1, slot)).square()
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


def _assign(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid index (G, n) of points (G, n, w), a few groups at a time (bounded workspace)."""
    if points.shape[-1] == 1:  # bisection needs no (n, k) distances
        return _nearest(points, centroids)[0]
    step = _group(points.shape[1], centroids.shape[1])
    return torch.cat([_nearest(points[first:first + step], centroids[first:first + step])[0]
                      for first in range(0, points.shape[0], step)])


def kmeans(points: torch.Tensor, k: int, iterations: int = ITERATIONS, seed: int = 0) -> torch.Tensor:
    """Centroids (G, k, w) of G independent k-means problems on points (G, n, w).

    With n <= k every point is its own centroid (the rest repeat the last point): exact coding.
    """
    points = points.float().contiguous()
    groups, count, width = points.shape
    if count <= k:
        padded = torch.cat([points, points[:, -1:].expand(-1, k - count, -1)], dim=1) if count else \
            points.new_zeros(groups, k, width)
        return padded.contiguous()
    generator = torch.Generator().manual_seed(seed)
    seeding = points[:, :SEED_POINTS_PER_CENTROID * k].cpu()  # the sample is in random order already
    centroids = _seed(seeding, k, generator).to(points.device)
    for _ in range(iterations):
        index = _assign(points, centroids)
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
    codebook = kmeans(training, k, seed=seed)
    codes = torch.empty(rows, codebook.shape[0], dtype=torch.int64, device=table.device)
    for start in range(0, rows, row_chunk):
        chunk = subvectors(table[start:start + row_chunk], width).transpose(0, 1).contiguous()  # (M, n, w)
        codes[start:start + row_chunk] = _assign(chunk, codebook).t()
    return codebook, codes
