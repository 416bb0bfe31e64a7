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

import os
import warnings
from typing import Callable, Dict

import torch
import torch._dynamo

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


# The same distances against candidates given as ids into a table: query rows (b, d), table (n, d),
# ids (b, k) -> (b, k). Compiled, the gather fuses into the reduction, so the (b, k, d) candidate rows
# are never written out (OGB's protocol scores each query against its own 1,001 candidates).
def _l1_ids(query, table, ids) -> torch.Tensor:
    return (query.unsqueeze(1) - table[ids]).abs().sum(-1)


def _l2_ids(query, table, ids) -> torch.Tensor:
    delta = query.unsqueeze(1) - table[ids]
    return torch.sqrt((delta * delta).sum(-1))


def _complex_l1_ids(query_re, query_im, table, ids) -> torch.Tensor:
    candidates = table[ids]
    half = candidates.shape[-1] // 2
    delta_re = query_re.unsqueeze(1) - candidates[..., :half]
    delta_im = query_im.unsqueeze(1) - candidates[..., half:]
    return torch.sqrt(delta_re * delta_re + delta_im * delta_im + 1e-12).sum(-1)


def _scaled_l1_ids(query, scale, table, ids) -> torch.Tensor:
    return (query.unsqueeze(1) - scale.unsqueeze(1) * table[ids]).abs().sum(-1)


def _dot_ids(query, table, ids) -> torch.Tensor:
    return (query.unsqueeze(1) * table[ids]).sum(-1)


_EAGER: Dict[str, Callable] = {"l1": _l1, "complex_l1": _complex_l1, "scaled_l1": _scaled_l1,
                               "l1_ids": _l1_ids, "l2_ids": _l2_ids, "complex_l1_ids": _complex_l1_ids,
                               "scaled_l1_ids": _scaled_l1_ids, "dot_ids": _dot_ids}
_COMPILED: Dict[str, Callable] = {}
_BROKEN: Dict[str, str] = {}  # kernel name -> why compiling it failed (it runs eagerly from then on)


def compile_enabled() -> bool:
    return os.environ.get("KBIT_DGL_COMPILE", "1") not in ("0", "false", "no")


def _compiled(name: str) -> Callable:
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_EAGER[name], dynamic=True)
    return _COMPILED[name]


def chunked(fn: Callable, query_args, candidate_args, width: int) -> torch.Tensor:
    """Eager ``fn`` over slices of the candidates (dim -2), bounded to CHUNK_ELEMENTS per slice."""
    num_candidates = candidate_args[0].shape[-2]
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    if step >= num_candidates:
        return fn(*query_args, *candidate_args)
    return torch.cat([fn(*query_args, *[c[..., s:s + step, :] for c in candidate_args])
                      for s in range(0, num_candidates, step)], dim=-1)


def _compiled_or_eager(name: str, args, eager: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The compiled kernel ``name`` on ``args``; ``eager()`` where compiling is off or broke."""
    if not compile_enabled() or name in _BROKEN:
        return eager()
    try:
        return _compiled(name)(*args)
    except torch._dynamo.exc.TorchDynamoException as error:
        # Compilation failed, or the inputs themselves are wrong (dynamo wraps both). The eager path
        # tells them apart: bad inputs fail there too and that error propagates; if eager works, the
        # toolchain is what broke, and this kernel alone runs eagerly from now on, loudly.
        result = eager()
        _BROKEN[name] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        warnings.warn(f"torch.compile failed for the {name} kernel ({_BROKEN[name]}); it runs on the eager "
                      f"chunked path from now on (slower, same values)", stacklevel=3)
        return result


def pairwise(name: str, query_args, candidate_args) -> torch.Tensor:
    """(..., b, n) distances between every query row and every candidate row."""
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


def pairwise_ids(name: str, query_args, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(b, k) distances (or dot products, ``dot_ids``) between query rows (b, d) and ``table[ids]``
    for ids (b, k), without materialising the (b, k, d) candidate rows when compiled; eagerly, in
    slices of queries bounded to CHUNK_ELEMENTS gathered numbers."""
    name = f"{name}_ids"

    def eager() -> torch.Tensor:
        step = max(1, CHUNK_ELEMENTS // max(ids.shape[1] * table.shape[1], 1))
        return torch.cat([_EAGER[name](*[q[s:s + step] for q in query_args], table, ids[s:s + step])
                          for s in range(0, len(ids), step)], dim=0)

    return _compiled_or_eager(name, (*query_args, table, ids), eager)
