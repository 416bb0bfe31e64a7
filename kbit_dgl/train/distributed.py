"""Training in N processes on one machine (``train.num_procs``, or launched by ``torchrun``).

DGL's engine, not one of our own: the entity and relation tables are ``dgl.nn.NodeEmbedding`` s in
shared memory, updated by DGL's sparse optimizer (``dgl.optim.SparseAdam`` for ``adam`` /
``sparse_adam``, ``dgl.optim.SparseAdagrad`` for ``sparse_adagrad``, and row-wise Adagrad as a
subclass of it for ``rowwise_adagrad``). In DGL's CPU path each process owns the rows ``id % N``:
after a step it hands every other process the gradients of that process's rows through shared
memory, and updates its own rows with everything it received. The rest of the model (decoder and
encoder weights, and the relation table when an encoder reads it whole) is replicated, and its
gradients are averaged with one ``all_reduce`` per step, which is what ``DistributedDataParallel``
does (the training step does not run through one module's ``forward``, so the reduction is called
directly on the flattened gradients).

Each process trains on its 1/N share of every batch of ``train.batch_size`` (the batches of the
single-process run, split; with an encoder, DGL's ``DataLoader(use_ddp=True)`` deals the sampled
batches), with its own negatives. Rank 0 validates, checkpoints and writes the run folder; the
others wait for it and take its decisions (early stop, learning-rate decay). Checkpoints hold every
rank's generator, so a resume needs the same ``train.num_procs``.

``train.dist_update=hogwild`` (the default, DGL-KE's way) skips the exchange: each process applies
its own gradients to the rows it touched, with DGL's update rule and shared optimizer state
(:class:`_HogwildStep`); ``sync`` keeps DGL's exchange and is reproducible bit for bit.

Differences from one process, by design: DGL's sparse optimizers update only the rows a step
looked up (lazy Adam where one process runs dense Adam), and average a row's gradients over its
occurrences in a step.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .. import compat
from ..errors import ConfigError, KbitError
from .optim import rowwise_adagrad_rows

log = logging.getLogger("kbit_dgl")


class DistributedTrainingError(KbitError, RuntimeError):
    """A training process failed or died; the message names it and the last checkpoint."""


class Group:
    """This process's place among the N: rank, world size, device, and what the trainer asks of its
    group. The trainer holds one in every mode: :class:`LocalGroup` (one process, the collectives are
    identities), this class (N processes on one machine, forked or started by ``torchrun``) and
    DistDGL's (:class:`kbit_dgl.train.distdgl.DistDGLGroup`), so the loop has no branch on the mode."""

    def __init__(self, rank: int, world_size: int, device: torch.device, run_name: str):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.run_name = run_name  # unique per run: names the shared-memory arrays

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj``, on every rank."""
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        boxes: List[Any] = [None] * self.world_size
        dist.all_gather_object(boxes, obj)
        return boxes

    def threads(self) -> Optional[int]:
        """Threads per process when ``train.num_threads`` is 0: the cores this process may use, shared
        out (None: torch's default, refitted while the run goes on, see kbit_dgl/threads.py)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.processes_here())

    def processes_here(self) -> int:
        """The training processes sharing this machine's cores."""
        return self.world_size

    def generators(self, seed: int):
        """``(order, negatives)``: the generator of each epoch's order of the training triples (the same
        on every rank) and this rank's generator of negatives (its own)."""
        order = torch.Generator().manual_seed(seed)
        return order, torch.Generator().manual_seed(seed + 1_000_003 * (self.rank + 1))

    def save_generators(self, order: torch.Generator, negatives: torch.Generator) -> Dict[str, Any]:
        """The checkpoint's entries for the generators (every rank calls this: it gathers); with the
        number of processes, which a resume must match."""
        return {"generator": negatives.get_state(), "generators": self.gather(negatives.get_state()),
                "order_generator": order.get_state(), "num_procs": self.world_size}

    def restore_generators(self, checkpoint: Dict[str, Any], order: torch.Generator,
                           negatives: torch.Generator) -> None:
        negatives.set_state(checkpoint["generators"][self.rank])
        order.set_state(checkpoint["order_generator"])

    def batch_share(self, batch_ids: torch.Tensor) -> torch.Tensor:
        """This rank's share of a batch of the whole split."""
        return batch_ids.tensor_split(self.world_size)[self.rank]

    def train_rows(self, kg) -> Optional[torch.Tensor]:
        """The rows of ``kg.train`` this process trains on, or None: all, each batch split N ways."""
        return None

    def share_tables(self, model: nn.Module) -> List[nn.Module]:
        return share_tables(model, self)

    def make_optimizer(self, model: nn.Module, name: str, lr: float, hogwild: bool = False) -> "DistributedOptimizer":
        return make_optimizer(model, name, lr, self, hogwild)

    def local_copy(self, model: nn.Module):
        """Within: rank 0 reads ``model``'s tables in place (shared memory here)."""
        return contextlib.nullcontext()

    def leave(self, together: bool = True, destroy: bool = True) -> None:
        """Leave the group: with ``together``, once every rank got here (rank 0 may still be testing the
        model; a rank tearing down alone leaves the others' gloo teardown waiting for it); ``destroy``:
        tear the process group down too."""
        if dist.is_initialized():
            if together:
                dist.barrier()
            if destroy:
                # let gloo's threads finish releasing the last collective's tensors (which takes the GIL)
                # before the group's destructor holds the GIL and joins them: a torchrun rank hung there
                # once under load (py-spy: destroy_process_group after the barrier); see _worker
                time.sleep(0.1)
                dist.destroy_process_group()


class LocalGroup(Group):
    """One process: rank 0 of 1 on ``device``; the collectives are identities, the tables stay where the
    model put them, and the optimizer is :func:`kbit_dgl.train.optim.make_optimizer`'s."""

    def __init__(self, device):
        super().__init__(0, 1, torch.device(device), "")

    def barrier(self) -> None:
        pass

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> List[Any]:
        return [obj]

    def threads(self) -> Optional[int]:
        return None

    def generators(self, seed: int):
        generator = torch.Generator().manual_seed(seed)  # one generator draws orders and negatives alike
        return generator, generator

    def save_generators(self, order: torch.Generator, negatives: torch.Generator) -> Dict[str, Any]:
        return {"generator": negatives.get_state()}

    def restore_generators(self, checkpoint: Dict[str, Any], order: torch.Generator,
                           negatives: torch.Generator) -> None:
        negatives.set_state(checkpoint["generator"])

    def batch_share(self, batch_ids: torch.Tensor) -> torch.Tensor:
        return batch_ids

    def share_tables(self, model: nn.Module) -> List[nn.Module]:
        return []

    def make_optimizer(self, model: nn.Module, name: str, lr: float, hogwild: bool = False):
        from . import optim

        return optim.make_optimizer(model, name, lr)

    def leave(self, together: bool = True, destroy: bool = True) -> None:
        pass


def _device_for(device: torch.device, local_rank: int) -> torch.device:
    """This rank's device: a GPU without an index becomes GPU ``local_rank`` (of those visible)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def _join(rank: int, world_size: int, init_method: str, device: torch.device, timeout_minutes: float,
          run_name: str, local_rank: int) -> Group:
    """Join the process group (gloo: DGL's CPU path exchanges the sparse gradients in shared memory,
    and gloo reduces CPU and CUDA tensors alike) and point DGL's embedding store at its store."""
    try:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    except (RuntimeError, ValueError) as error:
        raise DistributedTrainingError(f"rank {rank} of {world_size} could not join the process group at "
                                       f"{init_method}: {error} (a port in use? choose another MASTER_PORT)") from None
    # DGL's NodeEmbedding opens its own TCPStore on the fixed port 12346 unless one is set: two runs on
    # one machine would collide there; the process group's store serves the same purpose
    compat.share_process_group_store_with_dgl()
    device = _device_for(device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # one compiler process per training process: torch.compile's default pool (one per core) forked
    # inside a forked process took 40 s to warm up on 2 cores, against 0.2 s with one
    compat.set_inductor_compile_threads(1)
    if rank:
        log.setLevel(logging.WARNING)  # rank 0 reports
    return Group(rank, world_size, device, run_name)


def remove_shared_memory(run_name: str) -> None:
    """Unlink the shared-memory arrays of a run (DGL's: the table, optimizer state, gradient buffers),
    which outlive processes that exit without tearing them down."""
    import glob

    for path in glob.glob(f"/dev/shm/*{glob.escape(run_name)}*"):
        try:
            os.unlink(path)
        except OSError:
            pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, device: torch.device, timeout_minutes: float, run_name: str,
            target: Callable[[Group], Any]) -> None:
    group = _join(rank, world_size, f"tcp://127.0.0.1:{port}", device, timeout_minutes, run_name, rank)
    target(group)
    group.leave(destroy=False)  # a failure skips the goodbye: torch.multiprocessing ends the other processes
    # End here, without tearing the process group down: its gloo threads may still be releasing the last
    # collective's tensors, which takes the GIL, while the group's destructor (destroy_process_group, or
    # the interpreter's exit) holds the GIL and joins those threads. A rank hung so once in the test suite
    # (gdb: ~ProcessGroupGloo in std::thread::join, a gloo thread in PyObjectSlot's decref). The parent
    # unlinks the shared memory; logs are flushed here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_helper_threads() -> None:
    """Stop the helper threads this process may run before it forks: torch.compile's worker pools and
    tqdm's monitor. A lock such a thread holds at the instant of the fork stays held for ever in the
    children (they inherit the lock, not the thread), and a child that then takes it hangs; both are
    made again when needed."""
    compat.stop_inductor_compile_pools()
    from tqdm import tqdm

    monitor, tqdm.monitor = tqdm.monitor, None
    if monitor is not None:
        monitor.exit()


def spawn(num_procs: int, device: torch.device, timeout_minutes: float, target: Callable[[Group], Any],
          checkpoint_path: str) -> None:
    """Run ``target(group)`` in ``num_procs`` forked processes joined in a process group (``group``: the
    process's :class:`Group`, on ``device``, each GPU rank on its own index); returns when all
    finished. A process that fails or dies ends the others (``torch.multiprocessing``'s watch) and
    raises :class:`DistributedTrainingError` naming it and the last checkpoint."""
    import torch.multiprocessing as mp

    port = int(os.environ.get("MASTER_PORT") or free_port())
    run_name = f"kbit{os.getpid()}p{port}"
    _stop_helper_threads()
    try:
        mp.start_processes(_worker, args=(num_procs, port, device, timeout_minutes, run_name, target),
                           nprocs=num_procs, join=True, start_method="fork")
    except mp.ProcessRaisedException as error:
        message = str(error).strip().splitlines()
        last = message[-1] if message else str(error)
        raise DistributedTrainingError(f"training process {error.error_index} of {num_procs} failed: {last}; "
                                       f"the others were stopped; the last checkpoint is {checkpoint_path}\n"
                                       f"{error}") from None
    except mp.ProcessExitedException as error:
        raise DistributedTrainingError(f"training process {error.error_index} of {num_procs} died ({error}); "
                                       f"the others were stopped; the last checkpoint is {checkpoint_path}") from None
    finally:
        remove_shared_memory(run_name)


def join_torchrun(device: torch.device, timeout_minutes: float) -> Group:
    """Join the group ``torchrun`` set up in the environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    run_name = f"kbit{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}p{os.environ.get('MASTER_PORT', '0')}"
    return _join(rank, world_size, "env://", device, timeout_minutes, run_name,
                 int(os.environ.get("LOCAL_RANK", rank)))


# --- the tables in shared memory --------------------------------------------------------------------

class SharedTable(nn.Module):
    """An embedding table as a ``dgl.nn.NodeEmbedding``: lookups record their rows for DGL's optimizer,
    and ``weight`` is the shared tensor itself, so evaluation and checkpoints read it in place."""

    def __init__(self, embedding):
        super().__init__()
        self.embedding = embedding
        self.weight = nn.Parameter(embedding.weight, requires_grad=False)  # the same memory, no copy
        self.num_embeddings, self.embedding_dim = embedding.weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # the rows live in CPU shared memory; they (and, in the backward, their gradients) travel to the
        # device of the batch (DGL's "embeddings on the CPU, compute on the GPU" mode)
        return self.embedding(ids.to(self.weight.device), ids.device)


def share_tables(model: nn.Module, group: Group) -> List[SharedTable]:
    """Move ``model``'s entity and relation tables into ``NodeEmbedding`` s in shared memory (rank 0's
    initial rows), replacing ``model.entity`` and ``model.relation``; every rank calls this. An
    encoder that reads the whole relation table each step keeps that table replicated (its gradient
    is dense, and averaged like the encoder's weights)."""
    import dgl

    if getattr(model, "qat", None) is not None or not all(
            isinstance(table, nn.Embedding) for table in (model.entity, model.relation)):
        raise ConfigError("train.num_procs > 1 trains plain float tables: quantisation-aware training "
                          "(train.qat_bits) runs in one process")
    names = ["entity", "relation"]
    if model.encoder is not None and getattr(model.encoder, "uses_relation_table", True):
        names = ["entity"]
    shared = []
    for name in names:
        initial = getattr(model, name).weight.detach()

        def init(table: torch.Tensor, initial=initial) -> torch.Tensor:
            table.copy_(initial)
            return table

        embedding = dgl.nn.NodeEmbedding(initial.shape[0], initial.shape[1], f"{group.run_name}_{name}",
                                         init_func=init)
        setattr(model, name, SharedTable(embedding))
        shared.append(getattr(model, name))
    group.barrier()  # every rank attached before any update
    return shared


# --- optimizers --------------------------------------------------------------------------------------

def _rowwise_adagrad_class():
    import dgl

    compat.check_dgl_sparse_optimizer_subclass()  # reads _rank, _world_size, _eps, _lr of DGL's SparseAdagrad

    class RowwiseSparseAdagrad(dgl.optim.SparseAdagrad):
        """DGL's SparseAdagrad (shared state, DGL's gradient exchange) with one accumulator per row,
        as :class:`~kbit_dgl.train.optim.RowwiseAdagrad` (DGL-KE's Adagrad): state is num_entities floats."""

        def setup(self, params):
            from dgl.utils import create_shared_mem_array, get_shared_mem_array

            for emb in params:
                name, rows = emb.name, emb.weight.shape[0]
                if self._rank < 0:
                    state = torch.zeros(rows)
                elif self._rank == 0:
                    state = create_shared_mem_array(name + "_state", (rows,), torch.float32).zero_()
                    if self._world_size > 1:
                        emb.store.set(name + "_opt", name)
                else:
                    emb.store.wait([name + "_opt"])
                    state = get_shared_mem_array(name + "_state", (rows,), torch.float32)
                emb.set_optm_state((state,))

        def update(self, idx, grad, emb):
            rows, inverse = torch.unique(idx, return_inverse=True)
            values = torch.zeros((len(rows), grad.shape[1]), dtype=grad.dtype, device=grad.device)
            values.index_add_(0, inverse, grad)  # a row's gradients summed, as one process does
            (state,) = emb.optm_state
            state_rows = rows.to(state.device)
            row_sum, change = rowwise_adagrad_rows(values, state[state_rows].to(grad.device), self._lr, self._eps)
            state[state_rows] = row_sum.to(state.device)
            emb.weight.index_add_(0, state_rows, change.to(emb.weight.device))

    return RowwiseSparseAdagrad


class _HogwildStep:
    """DGL-KE's multi-process update (Hogwild): each process applies its own gradients to the shared
    rows at once, with DGL's update rule and shared optimizer state, and no exchange or barrier. Two
    processes touching one row in the same instant may lose part of one update, as in DGL-KE; runs
    are then not reproducible bit for bit."""

    @torch.no_grad()
    def step(self):
        for emb in self._params:
            if emb.trace:
                rows = torch.cat([ids for ids, _ in emb.trace])
                grads = torch.cat([rows_.grad for _, rows_ in emb.trace])
                self.update(rows, grads, emb)
            emb.reset_trace()
        self._clean_grad = False


def _hogwild(optimizer_class):
    compat.check_dgl_sparse_optimizer_subclass()  # _HogwildStep reads _params and sets _clean_grad
    return type(f"Hogwild{optimizer_class.__name__}", (_HogwildStep, optimizer_class), {})


class DistributedOptimizer:
    """DGL's sparse optimizer for the shared tables, and a replicated optimizer for the rest,
    whose gradients are averaged across processes before each step. The learning rate lives in
    :attr:`param_groups` (the trainer's decays change it there) and reaches DGL's optimizer at each step."""

    def __init__(self, sparse, dense: Optional[torch.optim.Optimizer], dense_params: List[nn.Parameter],
                 group: Group, lr: float):
        self.sparse, self.dense, self.dense_params, self.group = sparse, dense, dense_params, group
        self.sparse_group = {"lr": lr}

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return [self.sparse_group] + (self.dense.param_groups if self.dense is not None else [])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sparse.zero_grad()
        if self.dense is not None:
            self.dense.zero_grad(set_to_none=set_to_none)

    def _average_dense_gradients(self) -> None:
        if not self.dense_params:
            return
        grads = []
        for param in self.dense_params:
            grad = param.grad
            if grad is None:
                grad = torch.zeros_like(param)
            elif grad.is_sparse:
                grad = grad.to_dense()
            grads.append(grad.reshape(-1))
        flat = torch.cat(grads)
        dist.all_reduce(flat)
        flat /= self.group.world_size
        for param, piece in zip(self.dense_params, flat.split([p.numel() for p in self.dense_params])):
            param.grad = piece.view_as(param)

    @torch.no_grad()
    def step(self) -> None:
        self._average_dense_gradients()
        if self.dense is not None:
            self.dense.step()
        compat.set_sparse_optimizer_lr(self.sparse, self.sparse_group["lr"])
        self.sparse.step()

    def state_dict(self) -> Dict[str, Any]:
        sparse = self.sparse.state_dict()  # the shared tensors themselves (on the CPU); rank 0 saves them
        tables = compat.sparse_optimizer_params(self.sparse)
        states = [sparse["state"][emb.name] for emb in tables]  # by table: names differ per run
        return {"sparse": {"states": states, "lr": self.sparse_group["lr"]},
                "dense": self.dense.state_dict() if self.dense is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Every rank calls this (DGL's load ends in a barrier)."""
        tables = compat.sparse_optimizer_params(self.sparse)
        sparse_state = {"state": {emb.name: tuple(saved) for emb, saved in zip(tables, state["sparse"]["states"])},
                        "param_groups": self.sparse.param_groups}
        self.sparse.load_state_dict(sparse_state)
        self.sparse_group["lr"] = state["sparse"]["lr"]
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])


def make_optimizer(model: nn.Module, name: str, lr: float, group: Group, hogwild: bool = False) -> DistributedOptimizer:
    """The optimizer for ``train.optimizer`` ``name`` in a process group: the shared tables
    (:class:`SharedTable`) through DGL's sparse optimizer, the rest replicated. ``hogwild``: each
    process updates the rows it touched itself, without DGL's exchange (``train.dist_update=hogwild``)."""
    import dgl

    tables = [table for table in (model.entity, model.relation) if isinstance(table, SharedTable)]
    if not isinstance(model.entity, SharedTable):
        raise ValueError("make_optimizer needs the tables shared first (share_tables)")
    embeddings = [table.embedding for table in tables]
    classes = {"adam": dgl.optim.SparseAdam, "sparse_adam": dgl.optim.SparseAdam,
               "sparse_adagrad": dgl.optim.SparseAdagrad}
    optimizer_class = _rowwise_adagrad_class() if name == "rowwise_adagrad" else classes.get(name)
    if optimizer_class is None:
        raise ConfigError(f"train.optimizer={name!r} has no multi-process form")
    sparse = (_hogwild(optimizer_class) if hogwild else optimizer_class)(embeddings, lr=lr)
    # every rank attached to rank 0's optimizer state before any goes on: a rank that fails in its first
    # step would otherwise unlink that state under a slower rank, which then reports that instead
    group.barrier()
    dense_params = [p for p in model.parameters() if all(p is not table.weight for table in tables)]
    return DistributedOptimizer(sparse, dense_optimizer(name, dense_params, lr), dense_params, group, lr)


def dense_optimizer(name: str, params: List[nn.Parameter], lr: float) -> Optional[torch.optim.Optimizer]:
    """The replicated weights' optimizer (decoder, encoder, a replicated relation table) for
    ``train.optimizer`` ``name``: Adam for the Adam variants, Adagrad for the others; None without any."""
    from .optim import Adam, SparseAdagrad

    if not params:
        return None
    return Adam(params, lr=lr) if name in ("adam", "sparse_adam") else SparseAdagrad(params, lr=lr)
