"""Hand-written CPU kernels for the L1 and RotatE pairwise distances (``csrc/pairwise_cpu.cpp``).

On the CPU these two distances are most of a TransE or RotatE training step. Inductor's code for
them (torch 2.2) stores RotatE's (chunks, B, N, D) moduli between forward and backward and
recomputes exact square roots and divisions: forward + backward took 4.6x (RotatE) and 1.7x (L1)
the time of these loops (``pipelines/bench_kernels.py``, ``results/bench/kernels.json``). The extension is
built once per machine with ``torch.utils.cpp_extension`` (the C++ compiler that ``torch.compile``
needs anyway) on first use, about 20 s, and cached under torch's extensions folder.

``pairwise(name, query_args, candidate_args)`` returns None where the kernels do not apply: no
gradient wanted (evaluation keeps the compiled forward, as fast there), not on the CPU, not
float32, leading dimensions that differ, ``KBIT_DGL_NATIVE=0``, or a build that failed (warned
once); the caller then takes the compiled path. Values and gradients agree with the Python
expressions in ``kernels`` to float32 rounding (``tests/test_native_kernels.py``); square roots go
through the CPU's reciprocal square root and one Newton step (``-ffast-math``).
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from .. import compat
from ..settings import env_flag

SOURCE = Path(__file__).parent / "csrc" / "pairwise_cpu.cpp"
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
KERNELS = ("l1", "complex_l1")
PACKED_KINDS = {"l1": 0, "l2": 1, "dot": 2}  # distances of packed_ids_distance (kernels' _ROWS names)

_LOCK = threading.Lock()
_STATE: dict = {}  # "module" once built; "error" once a build failed


def enabled() -> bool:
    return env_flag("KBIT_DGL_NATIVE")


def _cpu_signature() -> str:
    """What the build depends on besides the source's text: the CPU's instruction sets (-march=native),
    torch, and where the source lies (torch's build file names it by path: two checkouts sharing one
    build folder would rebuild it in turn, each time the other one had built)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    link = " ".join(_openmp_link_flags())
    key = f"{flags}|{torch.__version__}|{' '.join(FLAGS)}|{link}|{SOURCE.resolve()}"
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def _openmp_link_flags() -> list:
    """Link the OpenMP runtime torch itself loaded (the PyPI wheel bundles its own libgomp): with the
    system's libgomp the kernels would get a second thread pool, whose threads and torch's spin
    against each other for the same cores (the kernels did not scale from 1 to 2 threads that way)."""
    torch_lib = Path(torch.__file__).parent / "lib"
    bundled = sorted(torch_lib.glob("libgomp*.so*"))
    if not bundled:
        return ["-fopenmp"]
    return [f"-L{torch_lib}", f"-l:{bundled[0].name}", f"-Wl,-rpath,{torch_lib}"]


@contextlib.contextmanager
def _one_builder(name: str) -> Iterator[None]:
    """Build (or load) one process at a time, and clear a lock that a killed build left behind.

    torch's ``load`` marks a build in progress with a ``lock`` file in the build folder and makes every
    other process wait until the file is gone; a process killed while building never removes it, and
    every later one then waits for ever. Here each process first takes an ``flock`` on a file beside it,
    which the kernel releases when its holder dies: whoever holds it is the only one of ours building,
    so a ``lock`` file found then is stale and is removed (with a warning), where torch waits on it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own waiting
        fcntl = None
    directory = compat.cpp_extension_build_directory(name) if fcntl is not None else None
    if directory is None:  # not POSIX, or an unknown torch (warned): torch's own waiting
        yield
        return
    with open(directory / "kbit_dgl_build.flock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            stale = directory / "lock"
            if compat.cpp_extension_lock_file_blocks() and stale.exists():
                warnings.warn(f"removed {stale}, left by a build that did not finish (a process killed while "
                              f"building the CPU kernels)", stacklevel=4)
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def module():
    """The built extension, or None (disabled, or the build failed: warned once)."""
    if not enabled():
        return None
    with _LOCK:
        if "module" in _STATE or "error" in _STATE:
            return _STATE.get("module")
        try:
            from torch.utils.cpp_extension import load
            name = f"kbit_dgl_pairwise_{_cpu_signature()}"
            with _one_builder(name):
                _STATE["module"] = load(name, [str(SOURCE)], extra_cflags=FLAGS,
                                        extra_ldflags=_openmp_link_flags(), verbose=False)
        except Exception as error:  # no compiler, no ninja, a toolchain error: the compiled path still works
            _STATE["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error) else ''}"
            warnings.warn(f"the CPU kernels in {SOURCE.name} could not be built ({_STATE['error']}); L1 and RotatE "
                          f"distances use torch.compile's code instead (slower, same values)", stacklevel=3)
        return _STATE.get("module")


class _L1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, candidates):
        ctx.save_for_backward(query, candidates)
        return _STATE["module"].l1_forward(query, candidates)

    @staticmethod
    def backward(ctx, grad):
        query, candidates = ctx.saved_tensors
        need_q, need_c = ctx.needs_input_grad
        grad_q, grad_c = _STATE["module"].l1_backward(grad.contiguous(), query, candidates, need_q, need_c)
        return (grad_q if need_q else None), (grad_c if need_c else None)


class _ComplexL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query_re, query_im, candidates_re, candidates_im):
        ctx.save_for_backward(query_re, query_im, candidates_re, candidates_im)
        return _STATE["module"].complex_l1_forward(query_re, query_im, candidates_re, candidates_im)

    @staticmethod
    def backward(ctx, grad):
        need = ctx.needs_input_grad
        need_q, need_c = need[0] or need[1], need[2] or need[3]
        grads = _STATE["module"].complex_l1_backward(grad.contiguous(), *ctx.saved_tensors, need_q, need_c)
        return tuple(g if n else None for g, n in zip(grads, need))


_FUNCTIONS = {"l1": _L1, "complex_l1": _ComplexL1}


def pairwise(name: str, query_args: Sequence[torch.Tensor],
             candidate_args: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
    """(..., b, n) distances from the native kernel ``name``, or None where it does not apply."""
    tensors = (*query_args, *candidate_args)
    if name not in _FUNCTIONS or not enabled():
        return None
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        # scoring without a backward (evaluation, prediction): the compiled forward is as fast or faster
        # against many candidates (RotatE over 14.5k entities: 91 against 104 ms per 256 queries)
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() < 2 for t in tensors):
        return None
    lead = query_args[0].shape[:-2]
    if any(t.shape[:-2] != lead for t in tensors) or any(t.shape != query_args[0].shape for t in query_args) \
            or any(t.shape != candidate_args[0].shape for t in candidate_args) \
            or candidate_args[0].shape[-1] != query_args[0].shape[-1]:
        return None
    b, n, d = query_args[0].shape[-2], candidate_args[0].shape[-2], query_args[0].shape[-1]
    if min(b, n, d, lead.numel()) == 0 or module() is None:
        return None
    b, n, d = query_args[0].shape[-2], candidate_args[0].shape[-2], query_args[0].shape[-1]
    flat = [q.reshape(-1, b, d).contiguous() for q in query_args] + \
           [c.reshape(-1, n, d).contiguous() for c in candidate_args]
    return _FUNCTIONS[name].apply(*flat).reshape(*lead, b, n)


def packed_ids(name: str, query_args: Sequence[torch.Tensor], ids: torch.Tensor, source) -> Optional[torch.Tensor]:
    """(b, k) distances between query rows (b, d) and candidates ``ids`` (b, k) decoded from k-bit codes.

    ``source`` is a row source of :mod:`.kernels` whose ``native_layout()`` describes byte-aligned
    codes (1, 2, 4 or 8 bits; see ``quant.embedding.PackedRows``). None where the kernel does not
    apply (another distance or code layout, a gradient wanted, not a float32 CPU query, disabled or
    not built); the caller then takes the compiled path, whose values these equal to float32
    rounding (``tests/test_native_kernels.py``). OGB's protocol from 4-bit codes ran 3x the compiled
    kernel's rate, as fast as the fp32 table (``results/bench/kbit_serving_ogb.json``).
    """
    if name not in PACKED_KINDS or len(query_args) != 1 or not enabled():
        return None
    layout = source.native_layout()
    query = query_args[0]
    if layout is None or (torch.is_grad_enabled() and query.requires_grad):
        return None
    if query.device.type != "cpu" or query.dtype != torch.float32 or query.dim() != 2 or ids.dim() != 2:
        return None
    if module() is None:
        return None
    empty = query.new_empty(0)
    return _STATE["module"].packed_ids_distance(
        PACKED_KINDS[name], query.contiguous(), ids.to(torch.int64).contiguous(), layout["codes"],
        layout["codebook"], layout.get("scales", empty), layout.get("offsets", empty), layout["bits"],
        layout.get("width", 0))
