"""Keep freed memory in the process while a step makes large, short-lived tensors (glibc's malloc).

glibc serves each allocation above its mmap threshold (which grows to at most 32 MiB) with a fresh
``mmap`` and gives it back to the kernel on ``free``. A step that makes a few dozen tensors of tens to
hundreds of MiB then pays a page fault, and the kernel's zero-fill, for every 4 KiB page of each of
them, on every step. A sampled R-GCN step over the 2.5M-entity wikikg2 stand-in (DistMult, dim 200,
batch 512, one process, 2 threads) took 540k faults and 1.84 s; with the settings below, 10k faults
and 0.80 s (peak RSS 9.30 -> 9.99 GiB). PyTorch's CPU performance guide recommends jemalloc or tcmalloc
for the same reason; this gets the effect from glibc itself, without a dependency or ``LD_PRELOAD``:

* ``mallopt(M_MMAP_MAX, 0)``: large blocks come from the heap, not from their own mappings;
* ``mallopt(M_TRIM_THRESHOLD, 2 GiB - 1)`` (the largest ``mallopt`` takes): freed memory at the top of
  the heap stays mapped for the next step.

It is not a process-wide default, because it is not free: freed blocks that later requests do not fit
stay resident. On the OGB TransE-500 config (whose steps make no large tensors) training, checkpointing
and evaluating with it peaked at 15.0 GiB against 11.4 GiB without, and trained no faster (25.8k against
37.9k triples/s steady, not side by side). So it is
scoped (:func:`kept_freed_memory`) to the loops measured to gain, the epochs of an encoder in sampled
mode; on leaving, glibc's steady-state settings are restored and ``malloc_trim(0)`` gives what was
kept back to the kernel. ``KBIT_DGL_KEEP_FREED_MEMORY=0`` turns it off. Elsewhere than glibc
(macOS, musl) it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Iterator, Optional

from .settings import env_flag

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
KEEP_TRIM_THRESHOLD = 2 ** 31 - 1
# what glibc's dynamic thresholds settle at once large blocks have been freed (restored on leaving)
STEADY_MMAP_THRESHOLD, STEADY_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 32 * 2 ** 20, 64 * 2 ** 20, 65536

_libc: Optional[object] = None
_depth = 0


def _glibc():
    """glibc's handle with ``mallopt`` / ``malloc_trim`` typed, or None (not Linux, not glibc, turned off)."""
    global _libc
    if not env_flag("KBIT_DGL_KEEP_FREED_MEMORY") or not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError):  # not glibc
            _libc = False
        else:
            _libc = libc
    return _libc or None


@contextlib.contextmanager
def kept_freed_memory() -> Iterator[bool]:
    """Within: large freed blocks stay in the process for the next step (see the module docstring);
    yields whether that is in force. Nested uses share the outermost one's scope."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD)
            libc.malloc_trim(0)
