"""Every use of another library's private internals, each behind a check of the versions it was verified on.

kbit_dgl reaches into torch, DGL, numpy, pickle and ogb where their public API has no way to do what
it needs (a lock file torch's extension build leaves behind, a DGL layer's weights, the names DGL gives
shared memory, ...). Those reaches live here and nowhere else (``tests/test_compat.py`` greps the
package for them), each in a named function or context manager whose docstring says what it works
around, which versions it was verified on, and what the public alternative is.

Each piece names its entry of :data:`KNOWN_VERSIONS`. On a version outside that range a piece with a
fallback warns once and takes it (the public path, maybe slower); one without raises
:class:`CompatError`, naming the library, the installed version and what to do. To support a new
release: run the tests that cover the piece under it, then widen its range here.

This module sits at the bottom of the package (beside config and errors): it imports torch, DGL,
numpy and ogb inside its functions only, so ``import kbit_dgl`` keeps working without DGL.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pickle
import platform
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from .errors import KbitError


class CompatError(KbitError, RuntimeError):
    """A library version this workaround was not verified on, and no public fallback exists."""


@dataclasses.dataclass(frozen=True)
class Known:
    """Where a piece is verified: ``requires`` holds (library, lowest (major, minor), first (major, minor)
    past the range); ``verified``: the exact releases its tests passed on; ``fallback``: what happens
    outside the range (None: :class:`CompatError`)."""

    what: str
    requires: Tuple[Tuple[str, Tuple[int, int], Tuple[int, int]], ...]
    verified: str
    fallback: Optional[str] = None


_TORCH_SHALLOW = ("torch", (2, 2), (2, 16))  # the pin, through the newest that .ci/newest installs
_TORCH_PINNED = ("torch", (2, 2), (2, 3))
_DGL = ("dgl", (2, 1), (2, 2))

KNOWN_VERSIONS: Dict[str, Known] = {
    "cpp_extension_build_lock": Known(
        "torch.utils.cpp_extension's private build folder and lock file (_get_build_directory, FileBaton)",
        (_TORCH_SHALLOW,), "torch 2.2.1, 2.15.0",
        "torch's own waiting on its lock file (a build killed midway then blocks later builds)"),
    "dynamo_exception": Known(
        "torch._dynamo.exc.TorchDynamoException (what torch.compile raises when it fails)",
        (_TORCH_SHALLOW,), "torch 2.2.1, 2.15.0",
        "catch every Exception around the compiled call (the eager retry still tells bad inputs apart)"),
    "tensor_version_counter": Known(
        "Tensor._version (the in-place update counter)", (_TORCH_SHALLOW,), "torch 2.2.1, 2.15.0",
        "no cache of encoded entities for inference (recomputed each call: slower, same values)"),
    "sparse_coo_uncoalesced": Known(
        "Tensor._indices() / _values() of an uncoalesced sparse gradient", (_TORCH_SHALLOW,),
        "torch 2.2.1, 2.15.0", "coalesce() first, then the public indices() / values() (one more pass)"),
    "inductor_compile_threads": Known(
        "torch._inductor.config.compile_threads", (_TORCH_PINNED,), "torch 2.2.1",
        "torch's default compile pool (one worker per core: slow warm-up in forked trainers)"),
    "inductor_compile_pools": Known(
        "torch._inductor.codecache.AsyncCompile's worker pools", (_TORCH_PINNED,), "torch 2.2.1",
        "leave torch's pools running across the fork (a pool thread's lock may then hang a child)"),
    "dgl_embedding_store": Known(
        "dgl.nn.pytorch.sparse_emb._STORE and torch.distributed's _get_default_store()",
        (_TORCH_PINNED, _DGL), "torch 2.2.1 + dgl 2.1.0"),
    "dgl_sparse_optimizer_internals": Known(
        "DGL sparse optimizers' _params, _state and _lr", (_DGL,), "dgl 2.1.0"),
    "dgl_machine_on_host": Known(
        "DGL's shared-memory functions and local address list, wrapped to run several machines on one host",
        (_DGL,), "dgl 2.1.0"),
    "dgl_rel_graph_conv_fields": Known(
        "dgl.nn.RelGraphConv's and TypedLinear's undocumented fields (linear_r, coeff, W, loop_weight, ...)",
        (_DGL,), "dgl 2.1.0"),
    "pure_python_unpickler": Known(
        "pickle._Unpickler (the pure-Python unpickler: its dispatch table, frame reader and stack)",
        # the suite ran on 3.11.7; on 3.10.13, 3.12.1 and 3.13.0 (pyenv here) the frame reader's
        # current_frame / readinto and the dispatch entries it overrides were checked to exist and work
        (("python", (3, 10), (3, 14)),), "Python 3.11.7 (3.10, 3.12, 3.13: the internals checked)"),
    "numpy_reconstruct": Known(
        "numpy's private array constructor for pickles (numpy._core.multiarray._reconstruct)",
        (("numpy", (1, 26), (2, 5)),), "numpy 1.26.4, 2.4.6"),
    "ogb_input_prompt": Known(
        "the module-level name `input` inside ogb.linkproppred.dataset and ogb.utils.url", (("ogb", (1, 3), (1, 4)),),
        "ogb 1.3.6"),
}

_PINS = {"torch": "torch 2.2.x (constraints.txt)", "dgl": "dgl 2.1.x (constraints.txt)",
         "numpy": "numpy 1.26 (constraints.txt)", "python": "Python 3.11", "ogb": "ogb 1.3.x"}
_DISPLAY = {"python": "Python"}
_WARNED: set = set()


def installed_version(library: str) -> str:
    """The installed version string of ``library`` (``python``: the interpreter), read each call."""
    if library == "python":
        return platform.python_version()
    return str(importlib.import_module(library).__version__)


def _major_minor(version: str) -> Optional[Tuple[int, int]]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _range(low: Tuple[int, int], high: Tuple[int, int]) -> str:
    return f">={low[0]}.{low[1]}, <{high[0]}.{high[1]}"


def unknown_versions(piece: str) -> list:
    """The requirements of ``piece`` the installed libraries miss, as (library, installed, range)."""
    missed = []
    for library, low, high in KNOWN_VERSIONS[piece].requires:
        version = installed_version(library)
        parsed = _major_minor(version)
        if parsed is None or not low <= parsed < high:
            missed.append((library, version, _range(low, high)))
    return missed


def check(piece: str) -> bool:
    """True where ``piece`` runs on versions it was verified on. Otherwise a piece with a fallback warns
    (once per piece and version) and returns False, so its caller takes the fallback; one without
    raises :class:`CompatError`."""
    missed = unknown_versions(piece)
    if not missed:
        return True
    known = KNOWN_VERSIONS[piece]
    found = ", ".join(f"{_DISPLAY.get(library, library)} {version} (known: {span})"
                      for library, version, span in missed)
    pins = " and ".join(_PINS[library] for library, _, _ in missed)
    message = (f"kbit_dgl.compat.{piece}: this workaround uses {known.what}, verified on {known.verified}; "
               f"installed is {found}. Install {pins}, or run its tests under this version and widen "
               f"KNOWN_VERSIONS[{piece!r}] in kbit_dgl/{Path(__file__).name}")
    if known.fallback is None:
        raise CompatError(message)
    key = (piece, tuple(missed))
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{message}. Meanwhile: {known.fallback}", RuntimeWarning, stacklevel=3)
    return False


# --- torch: the shallow path (verified on the pinned torch and the newest) ---------------------------

def cpp_extension_build_directory(name: str) -> Optional[Path]:
    """The folder where ``torch.utils.cpp_extension.load(name, ...)`` builds, or None (unknown torch: warned
    once; or torch's layout changed).

    Works around: a ``lock`` file that a build killed midway leaves there, on which torch 2.2's ``load``
    waits for ever (:func:`kbit_dgl.models.native._one_builder` clears it). Uses the private
    ``cpp_extension._get_build_directory``. Verified: torch 2.2.1, 2.15.0. Public alternative: none
    (``load(build_directory=...)`` would move the cache, rebuilding every machine's kernels once)."""
    if not check("cpp_extension_build_lock"):
        return None
    try:
        from torch.utils.cpp_extension import _get_build_directory
        return Path(_get_build_directory(name, verbose=False))
    except (ImportError, AttributeError, OSError):
        return None


def cpp_extension_lock_file_blocks() -> bool:
    """Whether torch's ``load`` waits while the build folder's ``lock`` file exists (its private
    ``FileBaton``, torch 2.2). Newer releases (2.15 checked) hold an ``flock`` on that file instead, which
    the kernel releases when the holder dies, and leave the file in place: there it is no sign of a killed
    build. Verified: torch 2.2.1 (True), 2.15.0 (False). Public alternative: none."""
    from torch.utils import cpp_extension

    return hasattr(cpp_extension, "FileBaton")


def dynamo_exceptions() -> Tuple[type, ...]:
    """What to catch around a ``torch.compile``'d call to tell a failed compilation (or bad inputs, which
    dynamo wraps alike) from success: ``torch._dynamo.exc.TorchDynamoException``. Verified: torch 2.2.1,
    2.15.0. Public alternative: none; on an unknown torch (warned once) every ``Exception``, which the
    caller's eager retry still sorts into bad inputs (they fail again) and a broken toolchain."""
    if not check("dynamo_exception"):
        return (Exception,)
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:
        return (Exception,)
    return (TorchDynamoException,)


def tensor_version(tensor) -> Any:
    """A value that changes whenever ``tensor`` is updated in place (optimizer steps, ``load_state_dict``):
    its private version counter ``Tensor._version``. Verified: torch 2.2.1, 2.15.0. Public alternative:
    none; on an unknown torch (warned once) a fresh object each call, so a cache keyed on it never hits
    (recomputed every time: slower, never stale)."""
    if not check("tensor_version_counter"):
        return object()
    return tensor._version


def sparse_rows(grad) -> Tuple[Any, Any]:
    """(row ids (nnz,), values (nnz, ...)) of a sparse COO gradient with one sparse dimension, *without*
    coalescing (a repeated row stays repeated: the caller's kernel sums them): the private
    ``Tensor._indices()`` / ``_values()``. Verified: torch 2.2.1, 2.15.0. Public alternative:
    ``coalesce().indices()`` / ``.values()``, taken on an unknown torch (warned once): the same sums,
    one more pass."""
    if not check("sparse_coo_uncoalesced"):
        grad = grad.coalesce()
        return grad.indices()[0], grad.values()
    return grad._indices()[0], grad._values()


# --- torch: the processes of one machine (pinned torch only) -----------------------------------------

def set_inductor_compile_threads(threads: int) -> None:
    """Make ``torch.compile`` use ``threads`` compiler processes in this process, for its lifetime
    (``torch._inductor.config.compile_threads``): the default pool, one per core, forked inside a forked
    training process took 40 s to warm up on 2 cores, against 0.2 s with one. It stays set for the
    process: every compilation of the training process needs it, and the process is a trainer that ends
    with its training. Verified: torch 2.2.1. Public alternative: the environment variable
    ``TORCHINDUCTOR_COMPILE_THREADS``, which only counts before torch reads its config; on an unknown
    torch (warned once) nothing is set."""
    if not check("inductor_compile_threads"):
        return
    from torch._inductor import config as inductor_config

    inductor_config.compile_threads = threads


def stop_inductor_compile_pools() -> None:
    """Shut down ``torch.compile``'s worker pools (``torch._inductor.codecache.AsyncCompile``) before a fork:
    a lock a pool thread holds at the instant of the fork stays held for ever in the children. The pools
    are made again when needed. Verified: torch 2.2.1. Public alternative: none; on an unknown torch
    (warned once) the pools are left alone."""
    if not check("inductor_compile_pools"):
        return
    try:
        from torch._inductor.codecache import AsyncCompile

        for factory in (AsyncCompile.pool, AsyncCompile.process_pool):
            if factory.cache_info().currsize:
                factory().shutdown(wait=True)
                factory.cache_clear()
    except (ImportError, AttributeError):  # a torch built without inductor
        pass


# --- DGL 2.1 --------------------------------------------------------------------------------------

def share_process_group_store_with_dgl() -> None:
    """Point DGL's ``NodeEmbedding`` at the default process group's store (set for the process: every
    ``NodeEmbedding`` the trainer makes needs it, and the process group lives as long).

    Works around: ``NodeEmbedding`` opening its own TCPStore on the fixed port 12346 unless one is set, so
    that two runs on one machine collide there. Uses the private ``dgl.nn.pytorch.sparse_emb._STORE`` and
    ``torch.distributed.distributed_c10d._get_default_store``. Verified: torch 2.2.1 + dgl 2.1.0. Public
    alternative: none."""
    check("dgl_embedding_store")
    import torch.distributed as dist
    from dgl.nn.pytorch import sparse_emb

    sparse_emb._STORE = dist.distributed_c10d._get_default_store()


def sparse_optimizer_params(optimizer) -> list:
    """The embeddings (``NodeEmbedding`` / ``DistEmbedding``) a DGL sparse optimizer updates: its private
    ``_params``. Verified: dgl 2.1.0. Public alternative: none (``param_groups`` leaves them out)."""
    check("dgl_sparse_optimizer_internals")
    return optimizer._params


def sparse_optimizer_state(optimizer, embedding) -> Any:
    """A DGL distributed sparse optimizer's state of ``embedding`` (a tensor, or a tuple of them): its private
    ``_state[embedding.name]``. Verified: dgl 2.1.0. Public alternative: ``state_dict()``, which DistDGL's
    optimizers do not implement."""
    check("dgl_sparse_optimizer_internals")
    return optimizer._state[embedding.name]


def set_sparse_optimizer_lr(optimizer, lr: float) -> None:
    """Set a DGL sparse optimizer's learning rate (its private ``_lr``: ``param_groups`` is a copy there).
    Verified: dgl 2.1.0. Public alternative: none."""
    check("dgl_sparse_optimizer_internals")
    optimizer._lr = lr


def check_dgl_sparse_optimizer_subclass() -> None:
    """Check before subclassing DGL's sparse optimizers, whose subclasses use their private fields:
    ``kbit_dgl.train.distdgl``'s row-wise Adagrad (``DistSparseGradOptimizer``: sets ``_state``, ``_defaults``,
    reads ``_lr``), ``kbit_dgl.train.distributed``'s row-wise Adagrad (``SparseAdagrad``: ``_rank``,
    ``_world_size``, ``_eps``, ``_lr``) and Hogwild step (``_params``, ``_clean_grad``). Verified: dgl 2.1.0.
    Public alternative: none (DGL's update rules are not pluggable otherwise)."""
    check("dgl_sparse_optimizer_internals")


@contextlib.contextmanager
def dgl_machine_on_host(machine: Optional[str]) -> Iterator[None]:
    """Within: this process acts as machine ``machine`` of several on one host (None: does nothing). It
    answers to the loopback address 127.0.0.(machine+1), and prefixes the names of the shared-memory arrays
    it creates or opens, which DGL names by graph and table only (two machines' servers on one host would
    otherwise write the same arrays). Everything patched is put back on exit.

    Patches DGL's module functions ``rpc_client.local_ip4_addr_list``, ``empty_shared_mem`` /
    ``exist_shared_mem_array`` (in kvstore, dist_graph, graph_partition_book, shared_mem_utils),
    ``heterograph_index.create_heterograph_from_shared_memory`` and ``DGLGraph.shared_memory``. These
    must hold from ``dgl.distributed.initialize`` until the process leaves DistDGL (tables and optimizer
    state are made in shared memory throughout), so callers enter it at initialize and leave it at
    exit. Verified: dgl 2.1.0. Public alternative: none (one machine per host, or containers)."""
    if machine is None:
        yield
        return
    check("dgl_machine_on_host")
    from dgl import heterograph_index
    from dgl.distributed import dist_graph, graph_partition_book, kvstore, rpc_client, shared_mem_utils

    address = f"127.0.0.{int(machine) + 1}"
    prefix = f"kbitm{machine}_"

    def named(name: str) -> str:
        return "/" + prefix + name[1:] if name.startswith("/") else prefix + name

    def wrap(function):
        return lambda name, *args, **kwargs: function(named(name), *args, **kwargs)

    graph_class = importlib.import_module("dgl.heterograph").DGLGraph
    to_shared = graph_class.shared_memory
    patches = [(rpc_client, "local_ip4_addr_list", lambda: {address})]
    for module in (kvstore, dist_graph, graph_partition_book, shared_mem_utils):
        for attribute in ("empty_shared_mem", "exist_shared_mem_array"):
            if hasattr(module, attribute):
                patches.append((module, attribute, wrap(getattr(module, attribute))))
    patches.append((heterograph_index, "create_heterograph_from_shared_memory",
                    wrap(heterograph_index.create_heterograph_from_shared_memory)))
    patches.append((graph_class, "shared_memory",
                    lambda self, name, formats=("coo", "csr", "csc"): to_shared(self, named(name), formats)))
    saved = [(owner, attribute, owner.__dict__[attribute]) for owner, attribute, _ in patches]
    try:
        for owner, attribute, replacement in patches:
            setattr(owner, attribute, replacement)
        yield
    finally:
        for owner, attribute, original in reversed(saved):
            setattr(owner, attribute, original)


@dataclasses.dataclass(frozen=True)
class RelGraphConvParts:
    """The weights and settings of a ``dgl.nn.RelGraphConv`` (the layer's own tensors, not copies).

    ``regularizer``: "basis", "bdd" or None; ``weight``: TypedLinear's ``W`` (basis: (num_bases, in, out);
    bdd: (num_types, num_bases * submat_in * submat_out); none: (num_types, in, out)); ``coeff``: basis
    coefficients (num_types, num_bases) or None; ``relation_weights()``: (num_types, in, out) as TypedLinear
    composes them; ``layer_norm``, ``bias``, ``self_loop_weight``: None where the layer has none."""

    regularizer: Optional[str]
    num_types: int
    num_bases: Optional[int]
    in_size: int
    out_size: int
    submat_in: Optional[int]
    submat_out: Optional[int]
    weight: Any
    coeff: Any
    relation_weights: Callable[[], Any]
    layer_norm: Optional[Callable]
    bias: Any
    self_loop_weight: Any
    activation: Optional[Callable]
    dropout: Callable


def rel_graph_conv_parts(layer) -> RelGraphConvParts:
    """The weights of a ``dgl.nn.RelGraphConv`` layer, for a faster computation of the same layer
    (:class:`kbit_dgl.models.encoders.GroupedRelGraphConv`). Reads the layer's undocumented fields
    (``linear_r`` and its ``W``, ``coeff``, ``num_bases``, ``submat_in``...; ``layer_norm_weight``,
    ``h_bias``, ``loop_weight``). Verified: dgl 2.1.0. Public alternative: none (RelGraphConv's own
    forward, slower on the CPU: ``results/bench/rgcn_layer.json``)."""
    check("dgl_rel_graph_conv_fields")
    linear = layer.linear_r
    return RelGraphConvParts(
        regularizer=linear.regularizer, num_types=linear.num_types, num_bases=getattr(linear, "num_bases", None),
        in_size=linear.in_size, out_size=linear.out_size, submat_in=getattr(linear, "submat_in", None),
        submat_out=getattr(linear, "submat_out", None), weight=linear.W, coeff=getattr(linear, "coeff", None),
        relation_weights=linear.get_weight, layer_norm=layer.layer_norm_weight if layer.layer_norm else None,
        bias=layer.h_bias if layer.bias else None, self_loop_weight=layer.loop_weight if layer.self_loop else None,
        activation=layer.activation, dropout=layer.dropout)


# --- pickle and numpy (the torch-file reader of the shallow path) -----------------------------------

PurePythonUnpickler = pickle._Unpickler
"""Python's own pure-Python unpickler, the base of :mod:`kbit_dgl.data.torchfile`'s reader: its memo is a
plain dict and its ``dispatch`` table can be extended (the C unpickler has neither). The alias is made at
import (a class statement needs its base then); :func:`check_pure_python_unpickler` checks the version
before each use."""


def check_pure_python_unpickler() -> None:
    """Check before reading with a subclass of :data:`PurePythonUnpickler`, which uses its ``dispatch``,
    ``_unframer.current_frame``, ``stack``, ``append`` and ``read``. Verified: Python 3.11.x. Public
    alternative: ``pickle.Unpickler`` with ``find_class``, which cannot stream large arrays out of the
    memo."""
    check("pure_python_unpickler")


def unpickler_frame(unpickler) -> Any:
    """The current protocol-4+ frame (an ``io.BytesIO``, or None) of a :data:`PurePythonUnpickler`."""
    return unpickler._unframer.current_frame


def end_unpickler_frame(unpickler) -> None:
    """Mark the current frame of a :data:`PurePythonUnpickler` used up."""
    unpickler._unframer.current_frame = None


def numpy_reconstruct() -> Callable:
    """numpy's ``_reconstruct`` (what a pickled array calls first: an empty array, filled by BUILD), from
    ``numpy._core.multiarray`` (numpy 2, and 1.26's forward alias) or ``numpy.core.multiarray`` (older).
    Verified: numpy 1.26.4, 2.4.6. Public alternative: none."""
    check("numpy_reconstruct")
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# --- ogb ------------------------------------------------------------------------------------------

_ABSENT = object()


@contextlib.contextmanager
def ogb_without_prompts() -> Iterator[None]:
    """Within: ogb's modules can never block on a prompt (the name ``input`` is shadowed in
    ``ogb.linkproppred.dataset`` and ``ogb.utils.url``, restored on exit). The update prompt of
    ``LinkPropPredDataset`` (folder without RELEASE file) is refused; the ">1 GB download" confirmation is
    answered yes, since the caller asked for the download. Verified: ogb 1.3.6. Public alternative: none."""
    check("ogb_input_prompt")
    import ogb.linkproppred.dataset as dataset_module
    import ogb.utils.url as url_module

    def refuse(prompt: str = "") -> str:
        raise RuntimeError(f"ogb tried to ask interactively: {prompt.strip()!r}")

    patched = ((dataset_module, refuse), (url_module, lambda prompt="": "y"))
    saved = [(module, module.__dict__.get("input", _ABSENT)) for module, _ in patched]
    try:
        for module, replacement in patched:
            module.input = replacement
        yield
    finally:
        for module, old in saved:
            if old is _ABSENT:
                module.__dict__.pop("input", None)
            else:
                module.input = old

