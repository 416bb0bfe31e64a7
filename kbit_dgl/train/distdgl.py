"""Training across machines with DistDGL: the KG partitioned by ``dgl.distributed.partition_graph``,
the entity table a ``dgl.distributed.DistEmbedding`` served by DGL's servers, updated by DGL's
distributed sparse optimizer.

The flow, DGL's own:

1. :func:`partition` (``kbit-dgl partition``) writes DGL's partition folder for the training triples:
   a graph over the entities with one edge per triple and its relation id in ``edata["relation"]``,
   split by ``partition_graph`` (``random`` or ``metis``; edges go with their tail's partition).
   Next to DGL's files, ``kbit_partition.pt`` keeps the dataset's fingerprint and the maps from
   DGL's shuffled node and edge ids back to entity ids and training-triple rows. (One edge type
   per relation was the first design: DGL 2.1's ``partition_graph`` fails an assertion when a
   partition holds no edge of some type, partition.py:1084, which random partitions of KGs with
   rare relations hit; DGL's own examples keep edge types as a feature of a homogeneous graph.)
2. DGL's launch tool (``tools/launch.py``) or :func:`launch_local` starts, per machine, one server
   (``DGL_ROLE=server``: :func:`serve`) and the trainers (``DGL_ROLE=client``) with DGL's documented
   environment variables, each running the same ``kbit-dgl train`` command.
3. Each trainer (:func:`join`) trains on the triples of its machine's partition. The entity table
   is a ``DistEmbedding`` (rows pulled from the server that owns them; a partition's own rows from
   shared memory), updated by ``dgl.distributed.optim.SparseAdam`` / ``SparseAdagrad`` (row-wise
   Adagrad as a subclass), which hands each row's gradients to the trainer of the machine that owns
   it. The small relation table and any other weights are replicated, their gradients averaged
   across trainers (gloo ``all_reduce``), as with ``train.num_procs``.
4. Rank 0 validates, checkpoints and writes the run folder with a local copy of the table pulled
   from the servers, in entity order: the run's ``model.pt`` is an ordinary model file, evaluated by
   the same filtered / OGB code as any run.

The training loop is :mod:`kbit_dgl.train.trainer`'s; this module supplies its :class:`DistDGLGroup`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from .. import compat, runtime
from ..errors import ConfigError, KbitError
from ..io import atomic_save, load_saved
from ..settings import env_flag, env_int
from . import distributed
from .distributed import DistributedOptimizer, DistributedTrainingError, Group
from .optim import rowwise_adagrad_rows

log = logging.getLogger("kbit_dgl")

MAPS = "kbit_partition.pt"
FORMAT = 2  # 1: one edge type per relation (abandoned, see above)
GRAPH_NAME = "kg"
_CHUNK = 1 << 20  # rows per pull / push of a whole table


class PartitionMismatchError(KbitError, ValueError):
    """A partition folder that was not written for this dataset."""


# --- partitioning ------------------------------------------------------------------------------------

def _train_hash(kg) -> str:
    digest = hashlib.sha256(kg.train.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def partition(kg, out_dir: str, num_parts: int, method: str = "random", overwrite: bool = False,
              seed: int = 0) -> Dict:
    """Partition ``kg``'s training triples into ``num_parts`` parts with DGL's ``partition_graph``;
    writes DGL's folder (``kg.json``, ``part0/`` ...) and ``kbit_partition.pt`` into ``out_dir``.
    The same ``seed`` gives the same random partitions (DGL's METIS call takes no seed). Returns the
    summary that ``kbit_partition.pt`` records."""
    import dgl
    import numpy as np

    from ..runs import kg_fingerprint

    if method not in ("random", "metis"):
        raise ConfigError(f"partition method must be random or metis, got {method!r}")
    if num_parts < 1:
        raise ConfigError(f"the number of partitions must be >= 1, got {num_parts}")
    if os.path.exists(os.path.join(out_dir, MAPS)) and not overwrite:
        raise ConfigError(f"{out_dir} already holds a partition; pass overwrite=True (--overwrite) to replace it")
    train = kg.train.to(torch.int64)
    graph = dgl.graph((train[:, 0], train[:, 2]), num_nodes=kg.num_entities)
    graph.edata["relation"] = train[:, 1]
    started = time.perf_counter()
    np.random.seed(seed)  # DGL's random partitioning draws from numpy's global generator
    dgl.seed(seed)
    with contextlib.redirect_stdout(sys.stderr):  # DGL reports its progress on stdout
        entity_of_node, train_of_edge = dgl.distributed.partition_graph(
            graph, GRAPH_NAME, num_parts, out_dir, part_method=method, return_mapping=True, balance_edges=True)
    book = dgl.distributed.load_partition_book(os.path.join(out_dir, GRAPH_NAME + ".json"), 0)[0]
    summary = {"format": FORMAT, "dataset": kg.name, "id_maps": kg_fingerprint(kg), "train_hash": _train_hash(kg),
               "num_entities": kg.num_entities, "num_relations": kg.num_relations, "num_train": len(train),
               "num_parts": num_parts, "method": method, "seed": seed,
               "seconds": round(time.perf_counter() - started, 2),
               "part_edges": [int(m["num_edges"]) for m in book.metadata()],
               "part_entities": [int(m["num_nodes"]) for m in book.metadata()]}
    atomic_save(os.path.join(out_dir, MAPS), {**summary, "entity_of_node": entity_of_node,
                                              "train_of_edge": train_of_edge})
    return summary


def load_maps(part_config: str, kg) -> Dict[str, Any]:
    """``kbit_partition.pt`` next to DGL's ``part_config``, checked against ``kg``."""
    from ..runs import kg_fingerprint

    folder = os.path.dirname(os.path.abspath(part_config))
    path = os.path.join(folder, MAPS)
    if not os.path.exists(path):
        raise PartitionMismatchError(f"{folder}: no {MAPS}; partition the dataset with `kbit-dgl partition`")
    maps = load_saved(path, ("format",), "partition map")
    if maps.get("format") != FORMAT:
        raise PartitionMismatchError(f"{folder} was written by another version of `kbit-dgl partition` (format "
                                     f"{maps.get('format')}, this one reads {FORMAT}); partition the dataset again")
    checks = [("id_maps", kg_fingerprint(kg), "entity and relation ids"), ("train_hash", _train_hash(kg),
                                                                            "training triples")]
    for key, wanted, what in checks:
        if maps.get(key) != wanted:
            raise PartitionMismatchError(
                f"{folder} was partitioned from {maps.get('dataset')!r} ({maps.get('num_entities')} entities, "
                f"{maps.get('num_train')} training triples), and its {what} differ from {kg.name!r} "
                f"({kg.num_entities} entities, {len(kg.train)} training triples); partition this dataset again")
    return maps


def check_config(config, trainers: int) -> None:
    """Refuse what DistDGL does not train, before any process starts (``trainers``: their number)."""
    if config.model.encoder:
        raise ConfigError("DistDGL trains shallow models (an entity table and a decoder); runs with "
                          "model.encoder scale out with train.num_procs and encoder.mode=sampled")
    if config.train.qat_bits not in (0, 32):
        raise ConfigError("DistDGL trains float tables: quantisation-aware training (train.qat_bits) runs in "
                          "one process")
    if config.train.num_procs not in (1, trainers):  # a DistDGL run's config records its trainers
        raise ConfigError(f"train.num_procs={config.train.num_procs}: DistDGL runs one trainer per partition "
                          f"({trainers} here)")


# --- processes: servers, trainers, and machines simulated on one host ------------------------------

def launched_by_dgl() -> bool:
    return runtime.launched_by_dgl()


def _machine_on_host():
    """With ``KBIT_DGL_MACHINE=m`` (set by :func:`launch_local`), a context within which this process acts
    as machine ``m`` of several on one host (:func:`kbit_dgl.compat.dgl_machine_on_host`); else a no-op."""
    machine = env_int("KBIT_DGL_MACHINE")
    return compat.dgl_machine_on_host(None if machine is None else str(machine))



def serve() -> None:
    """Run this process as DGL's server (``DGL_ROLE=server``); returns when the trainers are done."""
    import dgl

    with _machine_on_host():
        try:
            dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])  # serves, then exits the process
        except SystemExit:
            pass


def num_parts(partitions: str) -> int:
    """The number of partitions (machines) in a folder written by :func:`partition`."""
    part_config = os.path.join(partitions, GRAPH_NAME + ".json")
    if not os.path.exists(part_config):
        raise ConfigError(f"{partitions}: no {GRAPH_NAME}.json; write it with `kbit-dgl partition --out {partitions}`")
    with open(part_config, encoding="utf-8") as handle:
        return int(json.load(handle)["num_parts"])


def launch_local(partitions: str, argv: Sequence[str], run_dir: str = "", trainers_per_machine: int = 1) -> None:
    """Start DistDGL on this host: one machine per partition, each with one server and
    ``trainers_per_machine`` trainers, all running ``kbit-dgl <argv>`` with DGL's documented
    environment variables (as DGL's ``launch.py`` sets them). Machines are told apart by loopback
    address (127.0.0.1, 127.0.0.2, ...). Waits for the trainers; a trainer that fails or dies stops
    the rest and raises :class:`DistributedTrainingError` naming it (and ``run_dir``'s checkpoint).
    The processes' standard output (DGL's server messages) is dropped unless ``KBIT_DGL_DEBUG`` is set."""
    machines = num_parts(partitions)
    part_config = os.path.join(partitions, GRAPH_NAME + ".json")
    workdir = tempfile.mkdtemp(prefix="kbit-distdgl-")
    ip_config = os.path.join(workdir, "ip_config.txt")
    with open(ip_config, "w", encoding="utf-8") as handle:
        handle.writelines(f"127.0.0.{m + 1} {distributed.free_port()}\n" for m in range(machines))
    trainers = machines * trainers_per_machine
    common = {"DGL_DIST_MODE": "distributed", "DGL_NUM_SAMPLER": "0", "DGL_NUM_CLIENT": str(trainers),
              "DGL_CONF_PATH": os.path.abspath(part_config), "DGL_IP_CONFIG": ip_config, "DGL_NUM_SERVER": "1",
              "DGL_GRAPH_FORMAT": "csc", "DGL_KEEP_ALIVE": "0", "KBIT_DGL_LOCAL_PROCS": str(2 * trainers)}
    command = [sys.executable, "-m", "kbit_dgl.cli", *argv]
    processes: List[subprocess.Popen] = []
    names: List[str] = []
    quiet = {} if env_flag("KBIT_DGL_DEBUG") else {"stdout": subprocess.DEVNULL}
    try:
        for m in range(machines):
            env = {**os.environ, **common, "DGL_ROLE": "server", "DGL_SERVER_ID": str(m), "KBIT_DGL_MACHINE": str(m),
                   "OMP_NUM_THREADS": "1"}
            processes.append(subprocess.Popen(command, env=env, **quiet))
            names.append(f"server of machine {m}")
        master_port = str(distributed.free_port())
        for rank in range(trainers):
            m = rank // trainers_per_machine
            env = {**os.environ, **common, "DGL_ROLE": "client", "DGL_GROUP_ID": "0", "KBIT_DGL_MACHINE": str(m),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": master_port, "RANK": str(rank),
                   "WORLD_SIZE": str(trainers), "LOCAL_RANK": str(rank % trainers_per_machine),
                   "LOCAL_WORLD_SIZE": str(trainers_per_machine)}
            processes.append(subprocess.Popen(command, env=env, **quiet))
            names.append(f"trainer {rank} (machine {m})")
        _wait(processes, names, os.path.join(run_dir, "checkpoint.pt") if run_dir else "")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for process in processes:
            process.wait()
        with contextlib.suppress(OSError):
            os.remove(ip_config)
            os.rmdir(workdir)
        for m in range(machines):
            distributed.remove_shared_memory(f"kbitm{m}_")


def _wait(processes: List[subprocess.Popen], names: List[str], checkpoint: str) -> None:
    """Until the trainers ended well (servers stop once every trainer left); the first process to
    fail, or trainers still running long after a server stopped, is reported. (A trainer that waits
    on a dead peer fails by itself after ``train.dist_timeout_minutes``.)"""
    grace = 60.0
    last = f"; the last checkpoint is {checkpoint}" if checkpoint else ""
    server_done_at = None
    while True:
        codes = [process.poll() for process in processes]
        for name, code in zip(names, codes):
            if code not in (None, 0):
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise DistributedTrainingError(f"DistDGL {name} failed ({how}); the others were stopped{last}; "
                                               f"its error is above")
        trainers = [code for name, code in zip(names, codes) if name.startswith("trainer")]
        if all(code is not None for code in trainers):
            return  # servers still up are stopped by the caller
        if server_done_at is None and any(code is not None for name, code in zip(names, codes)
                                          if name.startswith("server")):
            server_done_at = time.monotonic()
        if server_done_at is not None and time.monotonic() - server_done_at > grace:
            raise DistributedTrainingError(f"a DistDGL server stopped and trainers were still running {grace:.0f} s "
                                           f"later{last}; their errors are above")
        time.sleep(0.2)


# --- the trainer's side ------------------------------------------------------------------------------

class DistTable(nn.Module):
    """The entity table as a ``dgl.distributed.DistEmbedding``, indexed by entity id (the model's
    ids; DGL's shuffled ids stay inside). Lookups record their rows for DGL's optimizer."""

    def __init__(self, embedding, node_of_entity: torch.Tensor, group: "DistDGLGroup"):
        super().__init__()
        self.embedding, self.node_of_entity, self.group = embedding, node_of_entity, group
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.node_of_entity[ids.cpu()], ids.device)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.group.pull_entities(self.embedding.weight)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        weight = state_dict[key]
        if tuple(weight.shape) != (self.num_embeddings, self.embedding_dim):
            error_msgs.append(f"size mismatch for {key}: {tuple(weight.shape)} in the file, "
                              f"{(self.num_embeddings, self.embedding_dim)} in the model")
            return
        self.group.push_owned(self.embedding.weight, weight, entity_order=True)
        self.group.forget_copy()


def _rowwise_adagrad_class():
    from dgl.distributed import DistTensor
    from dgl.distributed.optim.pytorch.sparse_optim import DistSparseGradOptimizer, initializer

    compat.check_dgl_sparse_optimizer_subclass()  # its subclass sets _state and _defaults, reads _lr

    class RowwiseSparseAdagrad(DistSparseGradOptimizer):
        """DGL's distributed sparse Adagrad with one accumulator per row (DGL-KE's Adagrad; state is
        one float per entity, kept by DGL's servers beside the table)."""

        def __init__(self, params, lr, eps=1e-10):
            super().__init__(params, lr)
            self._eps = eps
            self._defaults = {"_lr": lr, "_eps": eps}
            for emb in params:
                self._state[emb.name] = DistTensor((emb.num_embeddings, 1), torch.float32, emb.name + "_rowsum",
                                                   init_func=initializer, part_policy=emb.part_policy,
                                                   is_gdata=False)

        def update(self, idx, grad, emb):
            rows, inverse, count = torch.unique(idx, return_inverse=True, return_counts=True)
            values = torch.zeros((len(rows), grad.shape[1]), dtype=grad.dtype, device=grad.device)
            values.index_add_(0, inverse, grad)
            values = values / count.unsqueeze(1)  # DGL's convention: a row's gradients averaged
            state = self._state[emb.name]  # (num_entities, 1) on DGL's servers
            row_sum, change = rowwise_adagrad_rows(values, state[rows].to(grad.device)[:, 0], self._lr, self._eps)
            state[rows] = row_sum.unsqueeze(1).cpu()
            emb.weight[rows] += change.cpu()

    return RowwiseSparseAdagrad


class DistDGLOptimizer(DistributedOptimizer):
    """:class:`DistributedOptimizer` over DGL's distributed sparse optimizer: its state lives on
    DGL's servers; rank 0 pulls it into the checkpoint (in DGL's node order, which the checkpoint's
    partition fingerprint pins) and every trainer pushes its machine's rows back on resume."""

    @torch.no_grad()
    def step(self) -> None:
        super().step()
        self.group.forget_copy()  # the table changed

    def _states(self) -> List:
        states = []
        for emb in compat.sparse_optimizer_params(self.sparse):
            state = compat.sparse_optimizer_state(self.sparse, emb)
            states.extend(state if isinstance(state, (tuple, list)) else [state])
        return states

    def state_dict(self) -> Dict[str, Any]:
        states = [self.group.pull_entities(state, entity_order=False) for state in self._states()]
        return {"sparse": {"states": states, "lr": self.sparse_group["lr"],
                           "partition": self.group.partition_id},
                "dense": self.dense.state_dict() if self.dense is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        saved = state["sparse"].get("partition")
        if saved != self.group.partition_id:
            raise ConfigError(f"the checkpoint was written with partitions {saved}, this run trains on "
                              f"{self.group.partition_id}; resume with the same partition folder")
        for target, values in zip(self._states(), state["sparse"]["states"]):
            self.group.push_owned(target, values, entity_order=False)
        self.sparse_group["lr"] = state["sparse"]["lr"]
        if self.dense is not None:
            self.dense.load_state_dict(state["dense"])
        self.group.barrier()


class DistDGLGroup(Group):
    """A DistDGL trainer's place: its rank, its machine's partition and the maps between DGL's node
    ids and entity ids."""

    def __init__(self, rank: int, world_size: int, device: torch.device, run_name: str, graph, maps: Dict,
                 part_config: str):
        super().__init__(rank, world_size, device, run_name)
        self.graph, self.part_config = graph, part_config
        self.entity_of_node = maps["entity_of_node"]
        self.node_of_entity = torch.empty_like(self.entity_of_node)
        self.node_of_entity[self.entity_of_node] = torch.arange(len(self.entity_of_node))
        self.train_of_edge = maps["train_of_edge"]
        layout = hashlib.sha256(self.entity_of_node.numpy().tobytes()).hexdigest()[:12]  # DGL's node order
        self.partition_id = f"{maps['method']}:{maps['num_parts']}:{maps['train_hash']}:{layout}"
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        local = graph.local_partition
        inner = local.ndata["inner_node"].bool()
        owned = local.ndata["_ID"][inner]
        self.owned_nodes = owned.tensor_split(self.local_size)[self.local_rank]  # this trainer's share to push
        self._copy: Optional[torch.Tensor] = None  # rank 0's pulled table, until the next step changes it
        self.machine: Optional[contextlib.ExitStack] = None  # this trainer's machine_on_host, from join()

    def leave(self, together: bool = True, destroy: bool = True) -> None:
        """Leave the trainers' group and tell DGL's servers this trainer is done."""
        import dgl

        try:
            super().leave(together, destroy)
            if together:
                dgl.distributed.exit_client()
        finally:
            if self.machine is not None:
                self.machine.close()
                self.machine = None

    def processes_here(self) -> int:
        # this machine's trainers; machines simulated on one host share its cores (servers counted)
        return env_int("KBIT_DGL_LOCAL_PROCS", self.local_size)

    def train_rows(self, kg) -> torch.Tensor:
        """The rows of ``kg.train`` in this machine's partition (this trainer's share of them),
        checked triple by triple against the partition's graph."""
        import dgl

        local = self.graph.local_partition
        inner = local.edata["inner_edge"].bool()
        heads, tails = local.edges()
        nodes = local.ndata[dgl.NID]
        edges = local.edata[dgl.EID][inner]
        rows = self.train_of_edge[edges]
        found = torch.stack([self.entity_of_node[nodes[heads[inner]]], self.graph.edata["relation"][edges],
                             self.entity_of_node[nodes[tails[inner]]]], 1)
        if len(rows) and not torch.equal(found, kg.train[rows].to(torch.int64)):
            raise PartitionMismatchError(f"{os.path.dirname(self.part_config)}: partition {self.rank}'s triples "
                                         f"differ from {kg.name!r}'s; partition this dataset again")
        return rows.tensor_split(self.local_size)[self.local_rank]

    def share_tables(self, model: nn.Module) -> List[DistTable]:
        import dgl

        if model.encoder is not None or getattr(model, "qat", None) is not None \
                or not isinstance(model.entity, nn.Embedding):
            raise ConfigError("DistDGL trains shallow models with float tables (no model.encoder, no "
                              "train.qat_bits)")
        initial = model.entity.weight.detach().cpu()  # every rank built the same model from the seed
        if initial.shape[0] != len(self.entity_of_node):
            raise PartitionMismatchError(f"the partitions hold {len(self.entity_of_node)} entities, the model "
                                         f"{initial.shape[0]}")
        policy = self.graph.get_node_partition_policy(self.graph.ntypes[0])
        embedding = dgl.distributed.DistEmbedding(initial.shape[0], initial.shape[1], "entity",
                                                  init_func=_zeros, part_policy=policy)
        table = DistTable(embedding, self.node_of_entity, self)
        self.push_owned(embedding.weight, initial, entity_order=True)
        model.entity = table
        self.barrier()
        return [table]

    def make_optimizer(self, model: nn.Module, name: str, lr: float, hogwild: bool = False) -> DistDGLOptimizer:
        import dgl

        classes = {"adam": dgl.distributed.optim.SparseAdam, "sparse_adam": dgl.distributed.optim.SparseAdam,
                   "sparse_adagrad": dgl.distributed.optim.SparseAdagrad}
        optimizer_class = _rowwise_adagrad_class() if name == "rowwise_adagrad" else classes.get(name)
        if optimizer_class is None:
            raise ConfigError(f"train.optimizer={name!r} has no DistDGL form")
        sparse = optimizer_class([model.entity.embedding], lr=lr)
        dense_params = list(model.parameters())  # the entity table lives on DGL's servers
        return DistDGLOptimizer(sparse, distributed.dense_optimizer(name, dense_params, lr), dense_params, self, lr)

    @contextlib.contextmanager
    def local_copy(self, model: nn.Module) -> Iterator[None]:
        """Within: ``model.entity`` is a plain table pulled from the servers, in entity order (rank 0
        validates, checkpoints and tests with it); the distributed table is back afterwards."""
        table = model.entity
        if not isinstance(table, DistTable):
            yield
            return
        if self._copy is None:  # an epoch's validation and checkpoint share one pull
            self._copy = self.pull_entities(table.embedding.weight)
        model.entity = nn.Embedding.from_pretrained(self._copy, freeze=True, sparse=True)  # shares its memory
        version = compat.tensor_version(self._copy)
        try:
            yield
        finally:
            model.entity = table
            # written to within (a loaded model)?
            if self._copy is not None and compat.tensor_version(self._copy) != version:
                self.forget_copy()

    def forget_copy(self) -> None:
        self._copy = None

    def pull_entities(self, tensor, entity_order: bool = True) -> torch.Tensor:
        """A whole ``DistTensor`` from the servers, in chunks; rows in entity order, or DGL's."""
        rows = tensor.shape[0]
        pulled = torch.cat([tensor[start:min(start + _CHUNK, rows)] for start in range(0, rows, _CHUNK)])
        if not entity_order:
            return pulled
        ordered = torch.empty_like(pulled)
        ordered[self.entity_of_node] = pulled
        return ordered

    def push_owned(self, tensor, values: torch.Tensor, entity_order: bool) -> None:
        """Write this trainer's share of its machine's rows of ``tensor`` from ``values`` (rows in
        entity order, or DGL's); local to the machine, so done when it returns."""
        nodes = self.owned_nodes
        for piece in nodes.split(_CHUNK):
            source = self.entity_of_node[piece] if entity_order else piece
            tensor[piece] = values[source].reshape((len(piece),) + tuple(tensor.shape[1:])).to(torch.float32)


def _zeros(shape, dtype):
    return torch.zeros(shape, dtype=dtype)


def join(device, timeout_minutes: float, kg) -> DistDGLGroup:
    """Join DistDGL as the trainer DGL's environment describes: connect to the servers, join the
    trainers' process group, open the ``DistGraph`` and the partition maps (checked against ``kg``)."""
    import dgl

    if os.environ.get("DGL_ROLE") != "client":
        raise ConfigError("join() runs in a DistDGL trainer (DGL_ROLE=client)")
    part_config = os.environ.get("DGL_CONF_PATH")
    if not part_config or not os.path.exists(part_config):
        raise ConfigError(f"DGL_CONF_PATH={part_config!r} names no partition config")
    maps = load_maps(part_config, kg)  # before connecting: a wrong folder fails fast
    machine = contextlib.ExitStack()
    machine.enter_context(_machine_on_host())
    try:
        dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])
    except BaseException:
        machine.close()
        raise
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    run_name = f"kbitdist{os.environ.get('MASTER_PORT', '0')}"
    group = distributed._join(rank, world_size, "env://", device, timeout_minutes, run_name,
                              int(os.environ.get("LOCAL_RANK", 0)))
    graph = dgl.distributed.DistGraph(GRAPH_NAME, part_config=part_config)
    if graph.num_nodes() != kg.num_entities or graph.num_edges() != len(kg.train):
        raise PartitionMismatchError(f"{part_config}: {graph.num_nodes()} entities and {graph.num_edges()} triples, "
                                     f"{kg.name!r} has {kg.num_entities} and {len(kg.train)}")
    joined = DistDGLGroup(group.rank, group.world_size, group.device, run_name, graph, maps, part_config)
    joined.machine = machine  # closed by leave()
    return joined
