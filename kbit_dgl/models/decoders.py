"""Decoders: score (head, relation, tail) from entity and relation rows.

Every decoder has two scoring shapes (see docs/design/decoders.md; the layers: docs/design/architecture.md):

* ``score(head, relation, tail) -> (B,)`` for aligned rows;
* ``score_candidates(anchor, relation, candidates, direction) -> (..., b, N)`` scores each query
  against a candidate matrix.  ``direction="tail"`` answers (anchor, r, ?) and ``"head"`` answers
  (?, r, anchor).  ``anchor``/``relation`` are (..., b, d), ``candidates`` (N, d) or (..., N, d):
  the leading dims let training score chunks of queries against each chunk's shared negatives,
  and (B, 1, d) against (B, N, d) gives per-query candidates (per-triple negatives, OGB's lists).

Larger scores mean "more likely true".  Distances and bilinear forms that reduce to a matrix
product use one (``torch.cdist`` / ``matmul``); the rest fall back to a memory-bounded chunked
reference, which is also what the tests compare every fast path against.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .kernels import chunked, pairwise_complex_l1, pairwise_ids, pairwise_l1, pairwise_scaled_l1


def _complex(x: torch.Tensor):
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


class Decoder(nn.Module):
    """Base class. ``entity_dim``/``relation_dim`` are the widths of the rows the tables hold."""

    name = "decoder"
    distance_based = True  # scores are gamma - distance (margins make sense)
    #: the ``kernels`` distance ``score_candidate_ids`` uses (None: several, or none of them)
    candidate_kernel: Optional[str] = None

    def __init__(self, dim: int, gamma: float = 12.0):
        super().__init__()
        self.dim = dim
        self.gamma = gamma
        self.entity_dim = dim
        self.relation_dim = dim

    # ---- initialisation and constraints -------------------------------------------------
    def embedding_range(self) -> float:
        """The RotatE code's uniform init range: (gamma + 2) / dim."""
        return (self.gamma + 2.0) / self.dim

    def init_entities(self, weight: torch.Tensor) -> None:
        nn.init.uniform_(weight, -self.embedding_range(), self.embedding_range())

    def init_relations(self, weight: torch.Tensor) -> None:
        nn.init.uniform_(weight, -self.embedding_range(), self.embedding_range())

    def prepare_entities(self, rows: torch.Tensor) -> torch.Tensor:
        """A transform applied to entity rows before scoring (e.g. PairRE's L2 normalisation)."""
        return rows

    # ---- scoring ---------------------------------------------------------------------------
    def score(self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """(..., d) rows -> (...,) scores."""
        return self._score(head, relation, tail)

    def _score(self, head, relation, tail):  # pragma: no cover - abstract
        raise NotImplementedError

    def score_candidates(self, anchor: torch.Tensor, relation: torch.Tensor, candidates: torch.Tensor,
                         direction: str = "tail") -> torch.Tensor:
        return self.score_candidates_reference(anchor, relation, candidates, direction)

    def score_candidate_ids(self, anchor: torch.Tensor, relation: torch.Tensor, table: torch.Tensor,
                            ids: torch.Tensor, direction: str = "tail") -> torch.Tensor:
        """(b, k) scores of queries (anchor rows (b, d), relation rows (b, d_r)) against their own
        candidates ``table[ids]`` (ids (b, k), table (n, d)): OGB's protocol. Decoders with a fused
        kernel never write out the (b, k, d) candidate rows; this reference gathers them."""
        return self.score_candidates(anchor.unsqueeze(-2), relation.unsqueeze(-2), table[ids], direction).squeeze(-2)

    def score_relations(self, head: torch.Tensor, tail: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
        """(B, R) scores of (head, r, tail) for every relation row ``relations`` (R, d_r), heads and
        tails (B, d): relation prediction (Chen et al. 2021). Bilinear decoders do it in one matrix
        product; this reference broadcasts :meth:`score` in chunks."""
        def block(h: torch.Tensor, t: torch.Tensor, rels: torch.Tensor) -> torch.Tensor:
            return self._score(h.unsqueeze(-2), rels.unsqueeze(-3), t.unsqueeze(-2))

        width = head[..., 0].numel() * max(self.entity_dim, self.relation_dim) * 3
        return chunked(block, (head, tail), (relations,), width)

    def factors(self, head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor):
        """The non-negative per-coordinate magnitudes ``(|h|, |r|, |t|)`` the N3 and DURA regularizers
        weigh (kbc's factors: a complex number's modulus), or None for decoders they do not apply to
        (distances: TransE, RotatE, PairRE)."""
        return None

    def search_query(self, anchor: torch.Tensor, relation: torch.Tensor, direction: str = "tail"):
        """(query vectors, metric) such that ranking candidates by score is a vector search: metric
        ``"l2"`` (score = gamma - ||query - candidate||_2) or ``"ip"`` (score = query . candidate); None
        for scores with no such form (L1 distances, RotatE's moduli, PairRE's per-query scale)."""
        return None

    def score_candidates_reference(self, anchor: torch.Tensor, relation: torch.Tensor,
                                   candidates: torch.Tensor, direction: str = "tail") -> torch.Tensor:
        """Plain broadcast of ``score`` over candidates, chunked to bound memory."""
        _check_direction(direction)

        def block(a: torch.Tensor, r: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
            a, r, c = a.unsqueeze(-2), r.unsqueeze(-2), cands.unsqueeze(-3)  # (.., b, 1, d), (.., 1, n, d)
            return self._score(a, r, c) if direction == "tail" else self._score(c, r, a)

        width = anchor[..., 0].numel() * max(self.entity_dim, self.relation_dim) * 3
        return chunked(block, (anchor, relation), (candidates,), width)


def _check_direction(direction: str) -> None:
    if direction not in ("tail", "head"):
        raise ValueError(f"direction must be 'tail' or 'head', got {direction!r}")


class TransE(Decoder):
    """TransE (Bordes et al. 2013): gamma - ||h + r - t||_p, p = 1 or 2."""

    name = "transe"

    def __init__(self, dim: int, gamma: float = 12.0, p: int = 1):
        super().__init__(dim, gamma)
        if p not in (1, 2):
            raise ValueError(f"TransE norm p must be 1 or 2, got {p}")
        self.p = p
        self.candidate_kernel = "l1" if p == 1 else "l2"

    def _score(self, head, relation, tail):
        difference = head + relation - tail
        if self.p == 1:  # torch 2.2's vector_norm(ord=1) on the CPU is ~30x slower than this (1.3 ms a step)
            return self.gamma - difference.abs().sum(-1)
        return self.gamma - torch.linalg.vector_norm(difference, ord=2, dim=-1)

    def score_candidates(self, anchor, relation, candidates, direction="tail"):
        _check_direction(direction)
        query = anchor + relation if direction == "tail" else anchor - relation
        if self.p == 1:
            return self.gamma - pairwise_l1(query, candidates)
        if candidates.dim() < query.dim():
            candidates = candidates.expand(*query.shape[:-2], *candidates.shape[-2:])
        return self.gamma - torch.cdist(query, candidates, p=2.0)  # a matrix product inside

    def score_candidate_ids(self, anchor, relation, table, ids, direction="tail"):
        _check_direction(direction)
        query = anchor + relation if direction == "tail" else anchor - relation
        return self.gamma - pairwise_ids("l1" if self.p == 1 else "l2", (query,), table, ids)

    def search_query(self, anchor, relation, direction="tail"):
        _check_direction(direction)
        return (anchor + relation if direction == "tail" else anchor - relation, "l2") if self.p == 2 else None


class RotatE(Decoder):
    """RotatE (Sun et al. 2019): gamma - sum_i |h_i * r_i - t_i| with |r_i| = 1.

    Entity rows hold ``dim/2`` complex numbers as (real | imaginary); relation rows hold
    ``dim/2`` phases, so relations are unit-modulus rotations by construction.
    """

    name = "rotate"

    def __init__(self, dim: int, gamma: float = 12.0):
        if dim % 2:
            raise ConfigError(f"RotatE needs an even dim (real + imaginary halves), got {dim}")
        super().__init__(dim, gamma)
        self.relation_dim = dim // 2

    def init_relations(self, weight):
        nn.init.uniform_(weight, -math.pi, math.pi)

    def _rotate(self, anchor, phase, direction):
        re, im = _complex(anchor)
        cos, sin = torch.cos(phase), torch.sin(phase)
        if direction == "head":
            sin = -sin  # |h r - t| = |h - t conj(r)| since |r| = 1
        return re * cos - im * sin, re * sin + im * cos

    def _score(self, head, relation, tail):
        q_re, q_im = self._rotate(head, relation, "tail")
        t_re, t_im = _complex(tail)
        return self.gamma - torch.sqrt((q_re - t_re) ** 2 + (q_im - t_im) ** 2 + 1e-12).sum(-1)

    def score_candidates(self, anchor, relation, candidates, direction="tail"):
        _check_direction(direction)
        q_re, q_im = self._rotate(anchor, relation, direction)
        c_re, c_im = _complex(candidates)
        return self.gamma - pairwise_complex_l1(q_re, q_im, c_re, c_im)

    def score_candidate_ids(self, anchor, relation, table, ids, direction="tail"):
        _check_direction(direction)
        q_re, q_im = self._rotate(anchor, relation, direction)
        return self.gamma - pairwise_ids("complex_l1", (q_re, q_im), table, ids)


class Bilinear(Decoder):
    """A score that is a dot product of a query row and the candidate's row: ``_query(anchor, relation,
    direction) . candidate``. Scoring candidates is one matrix product, OGB's per-query candidates one
    fused dot kernel, and a vector search an inner-product one."""

    distance_based = False
    candidate_kernel = "dot"

    def init_entities(self, weight):
        nn.init.xavier_uniform_(weight)

    def init_relations(self, weight):
        nn.init.xavier_uniform_(weight)

    def _query(self, anchor, relation, direction):  # pragma: no cover - abstract
        raise NotImplementedError

    def score_candidates(self, anchor, relation, candidates, direction="tail"):
        _check_direction(direction)
        return torch.matmul(self._query(anchor, relation, direction), candidates.transpose(-1, -2))

    def score_candidate_ids(self, anchor, relation, table, ids, direction="tail"):
        _check_direction(direction)
        return pairwise_ids("dot", (self._query(anchor, relation, direction),), table, ids)

    def search_query(self, anchor, relation, direction="tail"):
        _check_direction(direction)
        return self._query(anchor, relation, direction), "ip"


class DistMult(Bilinear):
    """DistMult (Yang et al. 2015): <h, r, t>."""

    name = "distmult"

    def _query(self, anchor, relation, direction):
        return anchor * relation

    def _score(self, head, relation, tail):
        return (head * relation * tail).sum(-1)

    def score_relations(self, head, tail, relations):
        return torch.matmul(head * tail, relations.transpose(-1, -2))

    def factors(self, head, relation, tail):
        return head.abs(), relation.abs(), tail.abs()


class ComplEx(Bilinear):
    """ComplEx (Trouillon et al. 2016): Re(<h, r, conj(t)>), rows as (real | imaginary)."""

    name = "complex"

    def __init__(self, dim: int, gamma: float = 12.0):
        if dim % 2:
            raise ConfigError(f"ComplEx needs an even dim (real + imaginary halves), got {dim}")
        super().__init__(dim, gamma)

    def _query(self, anchor, relation, direction):
        a_re, a_im = _complex(anchor)
        r_re, r_im = _complex(relation)
        if direction == "head":
            r_im = -r_im  # Re(h r conj(t)) = Re(h conj(conj(r) t))
        return torch.cat([a_re * r_re - a_im * r_im, a_re * r_im + a_im * r_re], dim=-1)

    def _score(self, head, relation, tail):
        return (self._query(head, relation, "tail") * tail).sum(-1)

    def score_relations(self, head, tail, relations):
        # Re(h r conj(t)) = r_re . Re(h conj(t)) - r_im . Im(h conj(t))
        h_re, h_im = _complex(head)
        t_re, t_im = _complex(tail)
        pair = torch.cat([h_re * t_re + h_im * t_im, h_re * t_im - h_im * t_re], dim=-1)
        return torch.matmul(pair, relations.transpose(-1, -2))

    def factors(self, head, relation, tail):
        return tuple(torch.sqrt(re * re + im * im) for re, im in map(_complex, (head, relation, tail)))


class CP(Bilinear):
    """CP, canonical polyadic (Hitchcock 1927; Lacroix et al. 2018): <h_head, r, t_tail>, each entity
    row holding a head-role half and a tail-role half (entity_dim = 2 dim)."""

    name = "cp"

    def __init__(self, dim: int, gamma: float = 12.0):
        super().__init__(dim, gamma)
        self.entity_dim = 2 * dim

    def _halves(self, rows):
        return rows[..., : self.dim], rows[..., self.dim:]

    def _query(self, anchor, relation, direction):
        """The query as a full-width row: candidates' other half is multiplied by zeros."""
        head_role, tail_role = self._halves(anchor)
        zeros = torch.zeros_like(relation)
        if direction == "tail":  # h_head * r against the candidates' tail role
            return torch.cat([zeros, head_role * relation], dim=-1)
        return torch.cat([tail_role * relation, zeros], dim=-1)

    def _score(self, head, relation, tail):
        return (self._halves(head)[0] * relation * self._halves(tail)[1]).sum(-1)

    def score_candidates(self, anchor, relation, candidates, direction="tail"):
        _check_direction(direction)  # the product over the candidates' one role only: half the work
        head_role, tail_role = self._halves(anchor)
        if direction == "tail":
            return torch.matmul(head_role * relation, self._halves(candidates)[1].transpose(-1, -2))
        return torch.matmul(tail_role * relation, self._halves(candidates)[0].transpose(-1, -2))

    def score_relations(self, head, tail, relations):
        return torch.matmul(self._halves(head)[0] * self._halves(tail)[1], relations.transpose(-1, -2))

    def factors(self, head, relation, tail):
        return self._halves(head)[0].abs(), relation.abs(), self._halves(tail)[1].abs()


class RESCAL(Bilinear):
    """RESCAL (Nickel et al. 2011): h^T R t with a full d x d matrix per relation (relation_dim = d^2)."""

    name = "rescal"

    def __init__(self, dim: int, gamma: float = 12.0):
        super().__init__(dim, gamma)
        self.relation_dim = dim * dim

    def init_relations(self, weight):
        nn.init.normal_(weight, std=1.0 / self.dim)  # entries of the entities' scale: scores start near 0

    def _matrix(self, relation):
        return relation.reshape(*relation.shape[:-1], self.dim, self.dim)

    def _query(self, anchor, relation, direction):
        matrix = self._matrix(relation)
        if direction == "tail":  # (h^T R) . c
            return torch.matmul(anchor.unsqueeze(-2), matrix).squeeze(-2)
        return torch.matmul(matrix, anchor.unsqueeze(-1)).squeeze(-1)  # c . (R t)

    def _score(self, head, relation, tail):
        head, relation, tail = torch.broadcast_tensors(head.unsqueeze(-1), self._matrix(relation),
                                                       tail.unsqueeze(-2))
        return (head * relation * tail).sum((-1, -2))

    def score_relations(self, head, tail, relations):
        outer = (head.unsqueeze(-1) * tail.unsqueeze(-2)).flatten(-2)  # (B, d * d)
        return torch.matmul(outer, relations.transpose(-1, -2))


class PairRE(Decoder):
    """PairRE (Chao et al. 2021): gamma - ||h * r_head - t * r_tail||_1 with L2-normalised entities."""

    name = "pairre"

    def __init__(self, dim: int, gamma: float = 12.0):
        super().__init__(dim, gamma)
        self.relation_dim = 2 * dim

    def prepare_entities(self, rows):
        return F.normalize(rows, p=2, dim=-1)

    def _score(self, head, relation, tail):
        r_head, r_tail = relation[..., : self.dim], relation[..., self.dim:]
        return self.gamma - (head * r_head - tail * r_tail).abs().sum(-1)

    def score_candidates(self, anchor, relation, candidates, direction="tail"):
        _check_direction(direction)
        r_head, r_tail = relation[..., : self.dim], relation[..., self.dim:]
        if direction == "tail":  # |h r_h - c r_t|
            return self.gamma - pairwise_scaled_l1(anchor * r_head, r_tail, candidates)
        return self.gamma - pairwise_scaled_l1(anchor * r_tail, r_head, candidates)  # |c r_h - t r_t|

    def score_candidate_ids(self, anchor, relation, table, ids, direction="tail"):
        _check_direction(direction)
        r_head, r_tail = relation[..., : self.dim], relation[..., self.dim:]
        if direction == "tail":
            return self.gamma - pairwise_ids("scaled_l1", (anchor * r_head, r_tail), table, ids)
        return self.gamma - pairwise_ids("scaled_l1", (anchor * r_tail, r_head), table, ids)


DECODERS: Dict[str, Type[Decoder]] = {cls.name: cls for cls in (TransE, RotatE, DistMult, ComplEx, PairRE, CP,
                                                                 RESCAL)}


def make_decoder(name: str, dim: int, gamma: float = 12.0) -> Decoder:
    """Build a decoder by name: transe (L1), transe_l2, rotate, distmult, complex, pairre, cp, rescal."""
    key = name.lower().replace("-", "_")
    if key in ("transe", "transe_l1"):
        return TransE(dim, gamma, p=1)
    if key == "transe_l2":
        return TransE(dim, gamma, p=2)
    if key not in DECODERS:
        raise ConfigError(f"unknown model {name!r}; expected one of transe, transe_l2, {', '.join(list(DECODERS)[1:])}")
    return DECODERS[key](dim, gamma)
