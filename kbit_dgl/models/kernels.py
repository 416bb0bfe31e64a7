"""Fused pairwise distances that never materialise a (..., b, n, d) tensor.

L1, RotatE's sum of complex moduli and PairRE's L1 with a per-query scale on the candidates have no
matrix-product form. Written as a broadcast and compiled with ``torch.compile`` (inductor's C++
backend on CPU, Triton on GPU), the subtraction, the modulus and the reduction over d fuse into
one loop nest, forward and backward (measured against eager broadcasting by
``pipelines/bench_kernels.py``, results in ``results/bench/kernels.json``). Where compilation is
disabled (``KBIT_DGL_COMPILE=0``) or fails (no C++ compiler, say) the same expression runs eagerly
in memory-bounded chunks.
"""
from __future__ import annotations

import copy
import types
import warnings
from typing import Callable, Dict, Optional

import torch

from .. import compat
from ..settings import env_flag
from . import native

# Elements of the (b, n, d) temporaries an eager chunk may hold at once.
CHUNK_ELEMENTS = 1 << 23


def _l1(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    return (query.unsqueeze(-2) - candidates.unsqueeze(-3)).abs().sum(-1)


def _complex_l1(query_re, query_im, candidates_re, candidates_im) -> torch.Tensor:
    delta_re = query_re.unsqueeze(-2) - candidates_re.unsqueeze(-3)
    delta_im = query_im.unsqueeze(-2) - candidates_im.unsqueeze(-3)
    return torch.sqrt(delta_re * delta_re + delta_im * delta_im + 1e-12).sum(-1)


def _scaled_l1(query, scale, candidates) -> torch.Tensor:
    return (query.unsqueeze(-2) - scale.unsqueeze(-2) * candidates.unsqueeze(-3)).abs().sum(-1)


# The same distances against candidate rows given as ids: query rows (b, d), candidate rows (b, k, d)
# gathered from a table (``table[ids]``) or decoded by a :class:`RowSource` (``source.rows(ids, ...)``)
# inside the kernel. Compiled, the gather (and decoding) fuses into the reduction, so the (b, k, d)
# candidate rows are never written out (OGB's protocol scores each query against its own 1,001).
def _l1_rows(query, rows) -> torch.Tensor:
    return (query.unsqueeze(1) - rows).abs().sum(-1)


def _l2_rows(query, rows) -> torch.Tensor:
    delta = query.unsqueeze(1) - rows
    return torch.sqrt((delta * delta).sum(-1))


def _complex_l1_rows(query_re, query_im, rows) -> torch.Tensor:
    half = rows.shape[-1] // 2
    delta_re = query_re.unsqueeze(1) - rows[..., :half]
    delta_im = query_im.unsqueeze(1) - rows[..., half:]
    return torch.sqrt(delta_re * delta_re + delta_im * delta_im + 1e-12).sum(-1)


def _scaled_l1_rows(query, scale, rows) -> torch.Tensor:
    return (query.unsqueeze(1) - scale.unsqueeze(1) * rows).abs().sum(-1)


def _dot_rows(query, rows) -> torch.Tensor:
    return (query.unsqueeze(1) * rows).sum(-1)


_ROWS: Dict[str, Callable] = {"l1": _l1_rows, "l2": _l2_rows, "complex_l1": _complex_l1_rows,
                              "scaled_l1": _scaled_l1_rows, "dot": _dot_rows}


def _ids_kernel(distance: Callable, queries: int) -> Callable:
    """``fn(*query_args, table, ids)``: ``distance`` against ``table[ids]``."""
    def kernel(*args):
        return distance(*args[:queries], args[queries][args[queries + 1]])
    return kernel


class RowSource:
    """Rows of a table that are not stored as floats (k-bit codes, say), decoded by id on demand.

    Subclasses set ``num_rows``, ``dim``, ``tensors`` (the stored state, a tuple) and ``key`` (a
    hashable naming everything static about the decoding: the compiled kernels are cached by it),
    and implement ``rows(ids, *tensors)``, a traceable function returning float32 (*ids.shape, dim)
    rows: :func:`pairwise_ids` compiles it into the distance kernel, so only the stored codes of
    each candidate are read. ``source[ids]`` decodes eagerly; ``block(start, stop)`` a row range.
    """

    num_rows: int
    dim: int
    tensors: tuple = ()
    key: tuple = ()

    def rows(self, ids: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def native_layout(self) -> Optional[dict]:
        """The stored tensors in the form ``native.packed_ids`` reads, or None (the default: it cannot)."""
        return None

    @property
    def shape(self):
        return (self.num_rows, self.dim)

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def __len__(self) -> int:
        return self.num_rows

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids, *self.tensors)

    def block(self, start: int, stop: int) -> torch.Tensor:
        """float32 rows start..stop-1, decoded by one compiled kernel where compiling works."""
        ids = torch.arange(start, stop, device=self.device)
        static = copy.copy(self)  # the compiled decoder is cached by key: it must not keep the tensors alive
        static.tensors = ()

        def decode(*args):  # a plain function: dynamo inlines it (a bound method object would break the graph)
            return static.rows(*args)
        return _compiled_or_eager(("rows", self.key), (ids, *self.tensors), lambda: self.rows(ids, *self.tensors),
                                  decode)


def _source_kernel(distance: Callable, queries: int, source: RowSource) -> Callable:
    """``fn(*query_args, ids, *source.tensors)``: ``distance`` against ``source.rows(ids, ...)``."""
    static = copy.copy(source)  # the kernel is cached by source.key: it must not keep the tensors alive
    static.tensors = ()

    def kernel(*args):
        return distance(*args[:queries], static.rows(args[queries], *args[queries + 1:]))
    return kernel


_EAGER: Dict[str, Callable] = {"l1": _l1, "complex_l1": _complex_l1, "scaled_l1": _scaled_l1,
                               **{f"{name}_ids": _ids_kernel(fn, 2 if name in ("complex_l1", "scaled_l1") else 1)
                                  for name, fn in _ROWS.items()}}
_COMPILED: Dict[str, Callable] = {}
_BROKEN: Dict[str, str] = {}  # kernel name -> why compiling it failed (it runs eagerly from then on)


def compile_enabled() -> bool:
    return env_flag("KBIT_DGL_COMPILE")


def _compiled(name, eager: Optional[Callable] = None) -> Callable:
    """The compiled kernel cached under ``name`` (a kernel name, or a key with ``eager`` to compile).

    Row-source kernels compile with automatic dynamic shapes (static first, shapes that change made
    dynamic on the second call): ``dynamic=True`` would also make the decoder's constants (its bits,
    block width) symbolic, and bit shifts by a symbolic amount do not compile."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_own_code(eager) if eager else _EAGER[name], dynamic=None if eager else True)
    return _COMPILED[name]


def _own_code(function: Callable) -> Callable:
    """``function`` behind a wrapper with a code object of its own. Dynamo keeps its compiled graphs
    and its automatic-dynamic decisions per code object: kernels of different row sources share one
    closure's code, and a constant that differs between them (the bits) would otherwise turn symbolic."""
    def call(*args):
        return function(*args)
    code = call.__code__.replace(co_name=f"kbit_kernel_{len(_COMPILED)}")
    return types.FunctionType(code, call.__globals__, code.co_name, None, call.__closure__)


def chunked(fn: Callable, query_args, candidate_args, width: int) -> torch.Tensor:
    """Eager ``fn`` over slices of the candidates (dim -2), bounded to CHUNK_ELEMENTS per slice."""
    num_candidates = candidate_args[0].shape[-2]
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    if step >= num_candidates:
        return fn(*query_args, *candidate_args)
    return torch.cat([fn(*query_args, *[c[..., s:s + step, :] for c in candidate_args])
                      for s in range(0, num_candidates, step)], dim=-1)


def _compiled_or_eager(name, args, eager: Callable[[], torch.Tensor],
                       function: Optional[Callable] = None) -> torch.Tensor:
    """The compiled kernel ``name`` (``function`` compiled, if given) on ``args``; ``eager()`` where
    compiling is off or broke."""
    if not compile_enabled() or name in _BROKEN:
        return eager()
    try:
        return _compiled(name, function)(*args)
    except compat.dynamo_exceptions() as error:
        # Compilation failed, or the inputs themselves are wrong (dynamo wraps both). The eager path
        # tells them apart: bad inputs fail there too and that error propagates; if eager works, the
        # toolchain is what broke, and this kernel alone runs eagerly from now on, loudly.
        result = eager()
        _BROKEN[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        warnings.warn(f"torch.compile failed for the {name} kernel ({_BROKEN[name]}); it runs on the eager "
                      f"chunked path from now on (slower, same values)", stacklevel=3)
        return result


def pairwise(name: str, query_args, candidate_args) -> torch.Tensor:
    """(..., b, n) distances between every query row and every candidate row: on the CPU, the
    hand-written kernels of :mod:`.native` where they apply, else the compiled (or eager) expression."""
    result = native.pairwise(name, query_args, candidate_args)
    if result is not None:
        return result
    width = query_args[0][..., 0].numel() * query_args[0].shape[-1] * len(query_args)
    return _compiled_or_eager(name, (*query_args, *candidate_args),
                              lambda: chunked(_EAGER[name], query_args, candidate_args, width))


def pairwise_l1(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """sum_k |query[..., i, k] - candidates[..., j, k]| -> (..., b, n)."""
    return pairwise("l1", (query,), (candidates,))


def pairwise_complex_l1(query_re, query_im, candidates_re, candidates_im) -> torch.Tensor:
    """sum_k |q_k - c_k| over complex numbers given as real/imaginary parts -> (..., b, n)."""
    return pairwise("complex_l1", (query_re, query_im), (candidates_re, candidates_im))


def pairwise_scaled_l1(query: torch.Tensor, scale: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """sum_k |query[..., i, k] - scale[..., i, k] * candidates[..., j, k]| -> (..., b, n) (PairRE)."""
    return pairwise("scaled_l1", (query, scale), (candidates,))


def pairwise_ids(name: str, query_args, table, ids: torch.Tensor) -> torch.Tensor:
    """(b, k) distances (or dot products, ``dot``) between query rows (b, d) and the candidates
    ``table[ids]`` for ids (b, k), without materialising the (b, k, d) candidate rows when compiled;
    eagerly, in slices of queries bounded to CHUNK_ELEMENTS gathered numbers. ``table`` is a float
    tensor (n, d) or a :class:`RowSource`, whose rows are decoded inside the kernel."""
    queries = len(query_args)
    step = max(1, CHUNK_ELEMENTS // max(ids.shape[1] * table.shape[1], 1))
    if isinstance(table, RowSource):
        result = native.packed_ids(name, query_args, ids, table)  # byte-aligned k-bit codes on the CPU
        if result is not None:
            return result
        function = _source_kernel(_ROWS[name], queries, table)
        args = (*query_args, ids, *table.tensors)

        def eager() -> torch.Tensor:
            return torch.cat([function(*[q[s:s + step] for q in query_args], ids[s:s + step], *table.tensors)
                              for s in range(0, len(ids), step)], dim=0)

        return _compiled_or_eager((name, table.key), args, eager, function)
    name = f"{name}_ids"

    def eager() -> torch.Tensor:
        return torch.cat([_EAGER[name](*[q[s:s + step] for q in query_args], table, ids[s:s + step])
                          for s in range(0, len(ids), step)], dim=0)

    return _compiled_or_eager(name, (*query_args, table, ids), eager)
