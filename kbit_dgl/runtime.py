"""The run-time settings of a training run, decided once, before anything is written.

A config says what to train; :class:`Runtime` says how this machine runs it: the device (``auto``
resolved, a missing GPU refused), whether the tables take sparse gradients, the encoder's mode
(``full`` or ``sampled``, ``auto`` resolved against the KG's size), the thread count, and the launch
mode (one process, N forked processes, one rank of ``torchrun``, one DistDGL trainer).
:func:`resolve_runtime` computes it from the config, the KG's size and the environment (through the
one switch parser, :mod:`kbit_dgl.settings`); the trainer, the launcher, the memory check and the model
builder read it from there instead of deciding again.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional

from .config import Config, encoder_mode, needs_sparse_tables, resolve_device, sparse_table_gradients
from .errors import ConfigError

#: the launch modes, in the order :func:`launch_mode` checks them
LAUNCHES = ("distdgl", "torchrun", "spawn", "one")


def launched_by_dgl(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether DGL's launcher (or ``kbit-dgl train --partitions``) started this process."""
    return environ.get("DGL_ROLE") in ("server", "client") and "DGL_IP_CONFIG" in environ


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is one rank of several that ``torchrun`` started (RANK, WORLD_SIZE > 1)."""
    return int(environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in environ


def launch_mode(config: Config, environ: Mapping[str, str] = os.environ) -> str:
    """``distdgl`` (a DistDGL trainer), ``torchrun`` (a rank of torchrun), ``spawn`` (fork
    ``train.num_procs`` processes here) or ``one``."""
    if launched_by_dgl(environ):
        return "distdgl"
    if launched_by_torchrun(environ):
        return "torchrun"
    return "spawn" if config.train.num_procs > 1 else "one"


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How this machine runs one training run (see the module docstring)."""

    device: "object"                 # torch.device; each rank of a GPU group takes its own index from it
    sparse_tables: bool              # nn.Embedding(sparse=True): the tables' gradients are row-sparse
    encoder_mode: Optional[str]      # "full" / "sampled" with model.encoder, else None
    num_threads: Optional[int]       # torch threads per process; None: torch's default (one process)
    adapt_threads: bool              # refit the thread count to the free cores while the run goes on
    launch: str                      # one of LAUNCHES
    num_procs: int                   # processes the launch trains in (torchrun / DistDGL: their WORLD_SIZE)

    @property
    def distributed(self) -> bool:
        return self.launch != "one"


def resolve_runtime(config: Config, num_entities: int, environ: Mapping[str, str] = os.environ) -> Runtime:
    """The :class:`Runtime` of ``config`` on a KG of ``num_entities``; refuses (``ConfigError``) a device
    this machine lacks, an unknown optimizer or encoder mode. Reads no data and writes nothing."""
    train = config.train
    if train.num_candidates >= num_entities:
        raise ConfigError(f"train.num_candidates={train.num_candidates} is not below the KG's {num_entities} "
                          f"entities: use 0 to score every entity")
    device = resolve_device(train.device, config.model.encoder)
    mode = encoder_mode(config, num_entities) if config.model.encoder else None
    sparse = needs_sparse_tables(train.optimizer) if mode else sparse_table_gradients(train, device)
    launch = launch_mode(config, environ)
    procs = int(environ.get("WORLD_SIZE", "1")) if launch in ("torchrun", "distdgl") else train.num_procs
    threads = train.num_threads or None
    return Runtime(device=device, sparse_tables=sparse, encoder_mode=mode, num_threads=threads,
                   adapt_threads=threads is None and launch == "one" and device.type == "cpu",
                   launch=launch, num_procs=max(1, procs))
