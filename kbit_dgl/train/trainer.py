"""The training loop: config in, metrics out.

Positives in shuffled batches; uniform negatives shared within chunks of queries (DGL-KE style)
or per triple; heads and tails corrupted on alternate steps (as in the RotatE and DGL-KE code);
dense Adam or sparse row updates (``train.optimizer``, see optim.py); validation every few epochs
with early stopping on valid MRR; the best model kept; a resumable checkpoint written atomically,
so ``resume=True`` reproduces an uninterrupted run. With ``model.encoder`` set the steps come
from encoder_training.py (full-graph or sampled message passing) and the loop is the same.

Three pieces, top to bottom: :func:`train` checks everything and resolves the run-time settings
once (:func:`kbit_dgl.runtime.resolve_runtime`); :func:`launch` is the one place that branches on the
launch mode (one process, N forked processes, a torchrun rank, a DistDGL trainer) and hands each
process its group (:mod:`.distributed`); :class:`Trainer` is one process's loop, the same in every
mode, with its state in a :class:`~kbit_dgl.train.state.TrainState` (the checkpoint's format).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from tqdm import tqdm

from .. import settings, threads
from ..config import Config, allow_encoder_import, is_import_spec
from ..data.kg import KG
from ..errors import ConfigError, RunFileError, RunFolderError, TrainingDivergedError
from ..eval import evaluate, resolve_protocol
from ..io import atomic_save, atomic_write_json, atomic_write_text, load_saved
from ..models.model import KGEModel
from ..resources import check_memory_for
from ..runs import (
    BEST_MODEL,
    CHECKPOINT,
    CONFIG,
    LOG,
    METRICS,
    align_kg,
    check_config,
    check_fingerprint,
    kg_fingerprint,
    load_state,
    model_from_config,
    prepare_run_folder,
    run_config,
    run_lock,
    write_id_maps,
)
from ..runtime import Runtime, resolve_runtime
from . import distdgl, distributed
from .distributed import LocalGroup
from .objectives import make_objective
from .optim import param_groups, scale_lr
from .sampling import epoch_permutation, subsampling_weights
from .state import TrainState

LAST_CHECKPOINT = CHECKPOINT  # the names older code imported from here
log = logging.getLogger("kbit_dgl")

#: keys ``--resume --set`` may change: they steer the rest of the run without changing what the
#: checkpoint holds. ``train.lr`` sets the current learning rate (recorded in ``lr_decays``).
RESUME_CHANGEABLE = ("data.data_dir", "train.max_epochs", "train.max_steps", "train.patience", "train.valid_every",
                     "train.valid_every_steps", "train.checkpoint_every", "train.checkpoint_every_steps",
                     "train.checkpoint_every_minutes", "train.num_threads", "train.device", "train.lr",
                     "train.lr_decay_patience", "train.lr_decays", "train.check_memory", "eval.batch_size")
#: steps of each process excluded from the steady-state rate (torch.compile's warm-up lands there)
WARMUP_STEPS = 10


def evaluate_model(model: KGEModel, kg: KG, split: str, config: Config, per_relation: bool = False,
                   progress: bool = False) -> Dict:
    return evaluate(model, kg, split, config.eval.protocol, config.eval.batch_size, per_relation, progress)


def resume_changes(saved: Config, wanted: Config) -> Dict[str, Tuple[object, object]]:
    """``{key: (saved, wanted)}`` of every config key that differs; refuses keys that a resume cannot change."""
    before, after = saved.flat(), wanted.flat()
    changes = {key: (before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key)}
    fixed = [f"{key}={old} (asked: {new})" for key, (old, new) in changes.items() if key not in RESUME_CHANGEABLE]
    if fixed:
        raise ConfigError(f"--resume cannot change {', '.join(fixed)}: the checkpoint was trained with the "
                          f"saved values; a resume may change only {', '.join(RESUME_CHANGEABLE)} "
                          f"(start a new run folder for the rest)")
    return changes


def _attach_log(run_dir: str) -> logging.Handler:
    path = os.path.join(run_dir, LOG)
    if os.path.islink(path):  # a FileHandler appends through a link: to a file outside the folder
        raise RunFolderError(f"{path}: a symbolic link (to {os.readlink(path)}); a run folder's files must be "
                             f"files of its own; replace the link by the file, or start a new run folder")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def train(config: Config, kg: KG, run_dir: str, resume: bool = False, overwrite: bool = False,
          progress: bool = True, on_validation: Optional[Callable[[int, float], None]] = None) -> Optional[Dict]:
    """Train, validate, early-stop, then evaluate the best model; writes everything into ``run_dir``.

    Writes ``config.yaml`` (resolved), ``entities.dict`` / ``relations.dict`` (the id maps),
    ``checkpoint.pt`` (resumable), ``model.pt`` (best by valid MRR), ``metrics.json`` and
    ``train.log``. The config, the run-time settings (:func:`kbit_dgl.runtime.resolve_runtime`: the
    device, the launch mode...) and the estimated memory (:mod:`kbit_dgl.resources`) are checked before
    anything is written (the folder is not even created), the folder is locked while the run writes it,
    and ``resume`` refuses config changes the checkpoint cannot honour (see :data:`RESUME_CHANGEABLE`).
    ``on_validation(epoch, valid_mrr)`` is called after each validation (after the checkpoint of that
    epoch is written); an exception it raises ends the run there (a tuner's pruning): in one process
    and on rank 0 of a torchrun or DistDGL launch (the other ranks stop with it); refused with
    ``train.num_procs > 1``, whose processes are forked and cannot call back into this one. Returns the
    metrics dict (None on ranks other than 0).
    """
    check_config(config)  # the device too: a machine without the GPU asked for is refused here
    if is_import_spec(config.model.encoder):  # the caller's own config names it (a run folder's passed run_config)
        allow_encoder_import([config.model.encoder])  # so this process may reopen the run it writes
    runtime = resolve_runtime(config, kg.num_entities)  # decided once, here; passed on from here
    if on_validation is not None and runtime.launch == "spawn":
        raise ConfigError(f"train.num_procs={config.train.num_procs} forks its training processes, which cannot "
                          f"call back into this one: a validation hook (tune's pruning) needs train.num_procs=1, "
                          f"or a torchrun launch (its rank 0 calls the hook)")
    check_memory_for(config, kg, runtime.device)  # before the folder, its lock, config.yaml or train.log exist
    return launch(config, kg, run_dir, runtime, resume, overwrite, progress, on_validation)


def launch(config: Config, kg: KG, run_dir: str, runtime: Runtime, resume: bool = False, overwrite: bool = False,
           progress: bool = True, on_validation: Optional[Callable[[int, float], None]] = None) -> Optional[Dict]:
    """Run :class:`Trainer` in ``runtime.launch``'s mode, the one place that branches on it: in this
    process (``one``), in ``train.num_procs`` forked processes (``spawn``), or as this rank of a
    ``torchrun`` or DistDGL launch. Every mode gets its group explicitly (:mod:`.distributed`)."""
    if runtime.launch in ("torchrun", "distdgl"):
        return _train_as_rank(config, kg, run_dir, runtime, resume, overwrite, progress, on_validation)
    created = not os.path.isdir(run_dir)
    try:
        with _run_folder(run_dir, resume, overwrite, config, kg) as (kg, changes):
            if runtime.launch == "one":
                return run_trainer(config, kg, run_dir, runtime, LocalGroup(runtime.device), resume, changes,
                                   progress, on_validation).metrics

            def rank(group: distributed.Group) -> None:  # each forked process: its own Trainer in the group
                run_trainer(config, kg, run_dir, runtime, group, resume, changes, progress)

            distributed.spawn(runtime.num_procs, runtime.device, config.train.dist_timeout_minutes, rank,
                              os.path.join(run_dir, CHECKPOINT))
            with open(os.path.join(run_dir, METRICS), encoding="utf-8") as handle:
                return json.load(handle)
    except BaseException:
        if created and os.path.isdir(run_dir) and os.listdir(run_dir) == [".lock"]:  # refused before any write
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _run_folder(run_dir: str, resume: bool, overwrite: bool, config: Config, kg: KG,
                announce: Optional[Callable[[Optional[Dict]], object]] = None):
    """Within: ``run_dir`` locked, prepared (a resume's config changes read and its id maps aligned) and
    its log attached; yields ``(kg, changes)``. ``announce`` (rank 0 of a launch) gets the changes once
    the folder is ready, or None when preparing it failed."""
    with run_lock(run_dir):
        changes = None
        try:
            prepare_run_folder(run_dir, resume, overwrite)
            changes = resume_changes(run_config(run_dir), config) if resume else {}
            kg = align_kg(run_dir, kg) if resume else kg
        finally:
            if announce is not None:
                announce(changes)
        handler = _attach_log(run_dir)
        try:
            yield kg, changes
        finally:
            threads.stop()
            log.removeHandler(handler)
            handler.close()


def run_trainer(config: Config, kg: KG, run_dir: str, runtime: Runtime, group: distributed.Group, resume: bool,
                changes: Dict[str, Tuple[object, object]], progress: bool,
                on_validation: Optional[Callable[[int, float], None]] = None) -> "Trainer":
    """One process's whole run in a prepared folder: build the :class:`Trainer`, resume it, write the
    run's config and id maps (rank 0), train, and (rank 0) test the best model into ``trainer.metrics``."""
    trainer = Trainer(config, kg, runtime, group, run_dir=run_dir, progress=progress, on_validation=on_validation)
    if resume:
        trainer.resume(changes)
    trainer.write_run_files(resume)
    trainer.fit()
    trainer.metrics = trainer.finish()
    return trainer


def _train_as_rank(config: Config, kg: KG, run_dir: str, runtime: Runtime, resume: bool, overwrite: bool,
                   progress: bool, on_validation: Optional[Callable[[int, float], None]]) -> Optional[Dict]:
    """One of the N processes ``torchrun`` (or DGL's launch, a DistDGL trainer) started: rank 0 locks
    and prepares the run folder as :func:`launch` does, every rank trains; rank 0 returns the
    metrics, the others None."""
    timeout = config.train.dist_timeout_minutes
    if runtime.launch == "distdgl":
        group = distdgl.join(runtime.device, timeout, kg)
    else:
        group = distributed.join_torchrun(runtime.device, timeout)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, num_procs=group.world_size))
    runtime = dataclasses.replace(runtime, num_procs=group.world_size)
    try:
        if not group.is_main:
            changes = group.broadcast(None)  # rank 0 prepared the folder and read the resume's changes
            if changes is None:
                raise distributed.DistributedTrainingError(f"rank 0 could not prepare {run_dir}; see its error")
            trainer = run_trainer(config, kg, run_dir, runtime, group, resume, changes, False)
        else:  # None announced: rank 0 failed, and says why
            with _run_folder(run_dir, resume, overwrite, config, kg, announce=group.broadcast) as (kg, changes):
                trainer = run_trainer(config, kg, run_dir, runtime, group, resume, changes, progress, on_validation)
    except BaseException:
        group.leave(together=False)  # torchrun (DGL's launch) ends the others
        raise
    group.leave()
    if trainer.hook_error is not None:  # the hook stopped the run; every rank left together
        raise trainer.hook_error
    if trainer.metrics is not None:
        distributed.remove_shared_memory(group.run_name)
    return trainer.metrics


def all_finite(tensor: torch.Tensor, chunk: int = 1 << 22) -> bool:
    """Whether every number of ``tensor`` is finite, checked in slices of ``chunk`` numbers:
    ``torch.isfinite`` on a whole 5 GB table allocates temporaries of its size (+8.5 GB measured)."""
    flat = tensor.detach().reshape(-1)
    return all(bool(torch.isfinite(flat[start:start + chunk]).all()) for start in range(0, flat.numel(), chunk))


def _check_finite(model: KGEModel, when: str, checkpoint_path: str) -> None:
    """Refuse non-finite weights before they are validated or saved as a good checkpoint."""
    for name, parameter in model.named_parameters():
        if not all_finite(parameter):
            raise TrainingDivergedError(f"the weights ({name}) became NaN or infinite {when}; nothing was saved "
                                        f"from them, the last good checkpoint is {checkpoint_path} "
                                        f"(try a smaller train.lr)")


class Trainer:
    """One process's training: the model, its optimizer, the generators and the :class:`TrainState`,
    in its process group (:class:`~kbit_dgl.train.distributed.LocalGroup` for one process).

    The loop reads top to bottom in :meth:`fit`; its parts are methods: :meth:`epoch_losses` (one
    epoch's ``(loss, batch size)`` steps), :meth:`update` (backward and the optimizer step),
    :meth:`step` (one step on given positives: what the benchmarks time), :meth:`validate` (keep the
    best model, decay or stop on plateaus), :meth:`checkpoint` and :meth:`resume`. Without ``run_dir``
    it trains without a run folder (benchmarks); :meth:`validate`, :meth:`checkpoint` and
    :meth:`finish` need one.
    """

    def __init__(self, config: Config, kg: KG, runtime: Optional[Runtime] = None,
                 group: Optional[distributed.Group] = None, run_dir: Optional[str] = None, progress: bool = False,
                 on_validation: Optional[Callable[[int, float], None]] = None):
        if runtime is None:  # built outside a run (a benchmark): no launch, and the thread count left alone
            runtime = dataclasses.replace(resolve_runtime(config, kg.num_entities, environ={}), adapt_threads=False)
        group = group or LocalGroup(runtime.device)
        self.config, self.cfg, self.kg, self.runtime, self.group = config, config.train, kg, runtime, group
        self.run_dir, self.on_validation = run_dir, on_validation
        self.main = group.is_main
        self.progress = progress and self.main
        self.checkpoint_path = os.path.join(run_dir or ".", CHECKPOINT)
        self.best_path = os.path.join(run_dir or ".", BEST_MODEL)
        self.hook_error: Optional[BaseException] = None  # a hook's exception, raised once every rank left
        self.metrics: Optional[Dict] = None  # rank 0's, once finished
        cfg = self.cfg
        count = runtime.num_threads or group.threads()
        if count:
            torch.set_num_threads(count)
        self.fingerprint = kg_fingerprint(kg)
        torch.manual_seed(cfg.seed)
        # one process at torch's default thread count: refit the count while the run goes on (kbit_dgl/threads.py)
        threads.adapt(runtime.adapt_threads and group.world_size == 1)
        self.device = group.device  # one GPU per process in a group
        self.model = model_from_config(config, kg, self.device, sparse=runtime.sparse_tables).to(self.device)
        # N processes: the tables in shared memory, DGL's sparse optimizers; each rank draws its own negatives
        self.order_generator, self.generator = group.generators(cfg.seed)
        group.share_tables(self.model)
        self.optimizer = group.make_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.dist_update == "hogwild")
        self.state = TrainState()
        self.objective = make_objective(config, kg)  # train.objective: what a step's loss is (objectives.py)
        self.examples = self.objective.examples.to(self.device)  # what an epoch goes through: triples, or queries
        # DistDGL: the rows of this trainer's partition, each epoch in the same number of batches on every
        # trainer; otherwise every rank takes its share of each batch of the whole split
        self.own_rows = group.train_rows(kg)
        weights = subsampling_weights(kg.train, kg.num_entities, kg.num_relations) if cfg.subsampling else None
        self.weights = None if weights is None else weights.to(self.device)
        self.steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        self.valid_kg = valid_sample(kg, config.eval.valid_sample, cfg.seed, resolve_protocol(kg, config.eval.protocol))
        self._encoder_losses = None
        self.process_steps = 0  # steps this process ran: its first WARMUP_STEPS compile the kernels
        self.last_checkpoint_time = time.perf_counter()
        self.bar = None

    # --- checkpoints -------------------------------------------------------------------------------

    def resume(self, changes: Optional[Dict[str, Tuple[object, object]]] = None) -> None:
        """Continue from ``run_dir``'s checkpoint (every rank calls this): the weights, optimizer,
        generators and :class:`TrainState`; ``changes`` (from :func:`resume_changes`) are recorded, and
        a changed ``train.lr`` set."""
        cfg, path, changes = self.cfg, self.checkpoint_path, changes or {}
        checkpoint = load_saved(path, ("model", "optimizer", "generator", "state"), "checkpoint", folder=self.run_dir)
        check_fingerprint(path, checkpoint, self.run_dir)
        saved_optimizer = checkpoint.get("optimizer_name", "adam")  # checkpoints before train.optimizer: adam
        if saved_optimizer != cfg.optimizer:
            raise ConfigError(f"{path} was written with train.optimizer={saved_optimizer}, "
                              f"the config asks for {cfg.optimizer}; resume with the same optimizer")
        saved_procs = checkpoint.get("num_procs", 1)
        if saved_procs != cfg.num_procs:
            raise ConfigError(f"{path} was written by {saved_procs} training process(es), the config asks "
                              f"for train.num_procs={cfg.num_procs}; resume with train.num_procs={saved_procs}")
        load_state(self.model, checkpoint["model"], path)
        state = TrainState.from_dict(checkpoint["state"], path)
        try:  # a file of the right format holding values of the wrong kind: name it, no traceback
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.group.restore_generators(checkpoint, self.order_generator, self.generator)
            if "torch_rng" in checkpoint:  # encoder runs: dropout and DGL's shuffles draw from torch's generator
                torch.set_rng_state(checkpoint["torch_rng"])
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as error:
            raise RunFileError(f"{path}: its optimizer or random state cannot be restored "
                               f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                               f"a damaged or foreign checkpoint") from None
        state.warmup_seconds, state.warmup_triples = 0.0, 0  # this process compiles its kernels again
        if self.model.encoder is not None and state.batch_in_epoch:
            raise ConfigError(f"{path} was written inside an epoch ({state.batch_in_epoch} batches in); "
                              f"runs with an encoder resume from epoch boundaries only")
        log.info("resumed from %s at epoch %d", path, state.epoch)
        if changes:
            log.info("resume changes %s", ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()))
            record = {key: [old, new] for key, (old, new) in changes.items()}
            state.resume_changes.append({"epoch": state.epoch, "step": state.step, **record})
        if "train.lr" in changes:  # the optimizer state restored the old rate: set the asked one
            for param_group in param_groups(self.optimizer):
                param_group["lr"] = cfg.lr
            state.lr_decays.append({"epoch": state.epoch, "lr": cfg.lr, "reason": "resume"})
        self.state = state

    def write_run_files(self, resume: bool) -> None:
        """Rank 0: the resolved ``config.yaml``, and (a new run) the id maps."""
        if self.main:
            atomic_write_text(os.path.join(self.run_dir, CONFIG), self.config.to_yaml())
            if not resume:
                write_id_maps(self.run_dir, self.kg)

    def local_copy(self):
        """Rank 0 reads the tables within (DistDGL: a copy pulled from DGL's servers)."""
        return self.group.local_copy(self.model)

    def checkpoint(self, label: str) -> None:
        """Every rank calls this; rank 0 checks the weights are finite and writes (with every rank's
        negative generator)."""
        generators = self.group.save_generators(self.order_generator, self.generator)
        if self.main:
            with self.local_copy():
                _check_finite(self.model, f"at {label}", self.checkpoint_path)
                checkpoint = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "optimizer_name": self.cfg.optimizer, **generators, "state": self.state.to_dict(),
                              "id_maps": self.fingerprint}
            if self.model.encoder is not None:
                checkpoint["torch_rng"] = torch.get_rng_state()
            atomic_save(self.checkpoint_path, checkpoint)
        self.last_checkpoint_time = time.perf_counter()

    # --- steps -------------------------------------------------------------------------------------

    def direction(self) -> str:
        """The side this step corrupts: tails and heads alternately."""
        return "tail" if self.state.step % 2 == 0 else "head"

    def loss(self, positives: torch.Tensor, direction: Optional[str] = None,
             weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The loss of a batch of examples (B, 3) (triples; KvsAll: queries) under ``train.objective``."""
        return self.objective.loss(self.model, positives, self.generator, direction or self.direction(), weights)

    def update(self, loss: torch.Tensor, times: Optional[Dict[str, float]] = None) -> None:
        """Backward and the optimizer step; refuses a non-finite loss. ``times``: the seconds of the
        backward and of the optimizer step are added to its ``backward`` and ``optimizer`` entries."""
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {float(loss.detach())} at epoch {self.state.epoch + 1}, step {self.state.step}; "
                f"the last good checkpoint is {self.checkpoint_path} (try a smaller train.lr)")
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        stepped = time.perf_counter()
        self.optimizer.step()
        threads.tick()
        if times is not None:
            times["backward"] = times.get("backward", 0.0) + stepped - started
            times["optimizer"] = times.get("optimizer", 0.0) + time.perf_counter() - stepped

    def step(self, positives: torch.Tensor, times: Optional[Dict[str, float]] = None) -> float:
        """One training step on the positives (B, 3), as :meth:`fit` takes it; returns its loss."""
        loss = self.loss(positives.to(self.device))
        self.update(loss, times)
        self.state.step += 1
        return float(loss.detach())

    def epoch_losses(self, skip: int = 0) -> Iterator[Tuple[Optional[torch.Tensor], int]]:
        """One epoch's ``(loss, batch size)`` steps (loss None: this rank's share of a last batch smaller
        than the number of processes); ``skip`` batches already ran (a mid-epoch resume)."""
        if self.model.encoder is not None:  # full-graph or sampled message passing: encoder_training.py
            if self._encoder_losses is None:
                from .encoder_training import encoder_epoch_losses

                self._encoder_losses = encoder_epoch_losses(self.model, self.kg, self.config, self.generator,
                                                            self.direction, self.weights, self.group,
                                                            self.runtime.encoder_mode)
            return self._encoder_losses()  # mid-epoch checkpoints are refused for these runs
        return self._shallow_losses(skip)

    def _shallow_losses(self, skip: int):
        """The epoch's order is drawn again from the generator state it was drawn from when ``skip``."""
        cfg, group, state, own_rows = self.cfg, self.group, self.state, self.own_rows
        if own_rows is not None:  # DistDGL: this trainer's rows, in an order drawn from (seed, rank, epoch)
            epoch_generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (group.rank + 1)
                                                            + 7_919 * state.epoch)
            batches = own_rows[epoch_permutation(len(own_rows), epoch_generator)].tensor_split(self.steps_per_epoch)
        else:
            if skip:
                current = self.order_generator.get_state()
                self.order_generator.set_state(state.epoch_generator)
            else:
                state.epoch_generator = self.order_generator.get_state()
            batches = epoch_permutation(len(self.examples), self.order_generator).split(cfg.batch_size)
            if skip:
                self.order_generator.set_state(current)
        for batch_ids in batches[skip:]:
            size = len(batch_ids)
            if own_rows is not None:
                size *= group.world_size  # about the triples of the step on all trainers
                if not size:
                    yield None, 0
                    continue
            else:
                batch_ids = group.batch_share(batch_ids)  # this rank's share of the batch
                if not len(batch_ids):
                    yield None, size
                    continue
            batch_ids = batch_ids.to(self.device)
            yield (self.loss(self.examples[batch_ids], weights=None if self.weights is None
                             else self.weights[batch_ids]), size)

    # --- validation --------------------------------------------------------------------------------

    def validate(self, label: str) -> Dict:
        """Validate, keep the best model, count plateaus; returns the valid metrics. With N processes
        rank 0 validates and the others take its state and learning rates."""
        valid = None
        if self.main:
            with self.local_copy():
                valid = self._validate_here(label)
        rates = [g["lr"] for g in param_groups(self.optimizer)]
        synced, valid, rates = self.group.broadcast((self.state, valid, rates))
        if not self.main:
            self.state = synced
            for param_group, rate in zip(param_groups(self.optimizer), rates):
                param_group["lr"] = rate
        return valid

    def _validate_here(self, label: str) -> Dict:
        state, cfg = self.state, self.cfg
        _check_finite(self.model, f"at {label}", self.checkpoint_path)
        valid = evaluate_model(self.model, self.valid_kg, "valid", self.config)
        # mid-epoch: the epoch so far; at an epoch's end its sums are reset, so the epoch just finished
        # (None from a checkpoint written before last_epoch_loss was kept, where there is no such epoch yet)
        loss = state.epoch_loss / state.epoch_triples if state.epoch_triples else state.last_epoch_loss
        state.history.append({"epoch": state.epoch, "step": state.step, "loss": loss, "valid_mrr": valid["mrr"]})
        log.info("%s valid mrr %.4f hits@10 %.4f", label, valid["mrr"], valid["hits@10"])
        if self.progress:
            shown = "n/a" if loss is None else f"{loss:.4f}"
            self.bar.write(f"{label}: loss {shown}  valid MRR {valid['mrr']:.4f}", file=sys.stderr)
        if valid["mrr"] > state.best_valid_mrr:
            state.best_valid_mrr, state.best_epoch, state.best_step = valid["mrr"], state.epoch, state.step
            state.bad_validations, state.bad_at_decay = 0, 0
            state.best_valid = valid if self.valid_kg is self.kg else None
            atomic_save(self.best_path, {"model": self.model.state_dict(), "epoch": state.epoch,
                                         "step": state.step, "id_maps": self.fingerprint})
        else:
            state.bad_validations += 1
            _plateau(state, cfg, self.optimizer)
        return valid

    def _after_validation(self, key: int, valid: Dict) -> bool:
        """Call the hook (rank 0) with ``key`` (the epoch, or the step) and the valid MRR; whether it
        stopped the run (its exception, kept in :attr:`hook_error`; every rank learns of it)."""
        stop = False
        if self.main and self.on_validation is not None:
            try:
                self.on_validation(key, valid["mrr"])
            except BaseException as error:  # noqa: B036  (a tuner's pruning: raised again by the launcher)
                self.hook_error, stop = error, True
        if self.group.world_size > 1:
            stop = self.group.broadcast(stop)
        elif stop:
            raise self.hook_error
        return stop

    # --- the loop ----------------------------------------------------------------------------------

    def finished(self) -> bool:
        state, cfg = self.state, self.cfg
        return (state.epoch >= cfg.max_epochs or state.stopped_early
                or bool(cfg.max_steps and state.step >= cfg.max_steps))

    def fit(self) -> None:
        """Train until ``train.max_epochs``, ``train.max_steps`` or early stopping, validating and
        checkpointing on the way."""
        cfg, kg = self.cfg, self.kg
        for warning in getattr(kg, "warnings", []):
            log.warning("data: %s", warning)
        total_steps = cfg.max_epochs * self.steps_per_epoch
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        log.info("training %s%s on %s %s for up to %d epochs (%d steps each)%s", self.config.model.name,
                 f" with encoder {self.config.model.encoder}" if self.config.model.encoder else "", kg.name,
                 kg.summary(), cfg.max_epochs, self.steps_per_epoch,
                 f", at most {cfg.max_steps} steps" if cfg.max_steps else "")
        self.bar = tqdm(total=total_steps, initial=min(self.state.step, total_steps), disable=not self.progress,
                        unit="step", dynamic_ncols=True)
        self.last_checkpoint_time = time.perf_counter()
        self.model.train()
        try:
            while not self.finished():
                if self._epoch():
                    return
        finally:
            self.bar.close()

    def _epoch(self) -> bool:
        """Run the rest of the current epoch; whether a hook stopped the run."""
        cfg, bar = self.cfg, self.bar
        last = time.perf_counter()
        for loss, batch_size in self.epoch_losses(self.state.batch_in_epoch):
            if loss is None:  # this rank's share of a last batch smaller than the number of processes
                loss = torch.zeros(())
            self.update(loss)
            state = self.state
            state.step += 1
            state.batch_in_epoch += 1
            self.process_steps += 1
            # float() of a tensor that requires grad warns in newer torch (2.15 here), once per process
            state.epoch_loss += float(loss.detach()) * batch_size
            state.epoch_triples += batch_size
            now = time.perf_counter()  # step time only: validation and checkpoints are not training
            state.train_seconds += now - last
            state.epoch_seconds += now - last
            if self.process_steps <= WARMUP_STEPS:
                state.warmup_seconds += now - last
                state.warmup_triples += batch_size
            bar.update(1)
            if self.progress and state.step % 50 == 0:
                bar.set_postfix(epoch=state.epoch + 1, loss=f"{state.epoch_loss / state.epoch_triples:.4f}",
                                triples_per_s=f"{state.epoch_triples / max(state.epoch_seconds, 1e-9):,.0f}")
            if cfg.max_steps and state.step >= cfg.max_steps:
                state.stopped_at_max_steps = True
                break
            label = f"step {state.step} (epoch {state.epoch + 1})"
            if cfg.valid_every_steps and state.step % cfg.valid_every_steps == 0:
                valid = self.validate(label)
                if self._after_validation(self.state.step, valid):
                    return True
                if self.state.stopped_early:
                    break
            due = bool(cfg.checkpoint_every_minutes
                       and now - self.last_checkpoint_time >= 60 * cfg.checkpoint_every_minutes)
            if cfg.checkpoint_every_minutes:
                due = self.group.broadcast(due)  # rank 0's clock decides for all
            if due or (cfg.checkpoint_every_steps and self.state.step % cfg.checkpoint_every_steps == 0):
                self.checkpoint(label)
            last = time.perf_counter()
        else:  # the epoch ran to its end
            _end_epoch(self.state, bar)
            state = self.state
            validate_now = not cfg.valid_every_steps and (state.epoch % cfg.valid_every == 0
                                                          or state.epoch == cfg.max_epochs)
            valid = self.validate(f"epoch {state.epoch}") if validate_now else None
            state = self.state
            if state.epoch in cfg.lr_decay_epochs and not state.stopped_early:
                _decay_lr(state, cfg, self.optimizer, "scheduled decay")
            if state.epoch % cfg.checkpoint_every == 0 or self.finished():
                self.checkpoint(f"epoch {state.epoch}")
            return valid is not None and self._after_validation(state.epoch, valid)
        # stopped inside an epoch (max_steps, or early stopping at a step validation)
        state = self.state
        log.info("stopped at step %d, %d batches into epoch %d", state.step, state.batch_in_epoch, state.epoch + 1)
        validated_here = bool(state.history) and state.history[-1]["step"] == state.step
        if not validated_here and not state.stopped_early:
            self.validate(f"step {state.step} (the last)")
        self.checkpoint(f"step {self.state.step}")
        return False

    def finish(self) -> Optional[Dict]:
        """Rank 0: test the best model and write the run's metrics (returned); None elsewhere, or when a
        hook stopped the run."""
        if not self.main or self.hook_error is not None:
            return None
        with self.local_copy():
            model, state = self.model, self.state
            if not os.path.exists(self.best_path):  # e.g. max_epochs == 0
                _check_finite(model, "before the first validation", self.checkpoint_path)
                atomic_save(self.best_path, {"model": model.state_dict(), "epoch": state.epoch,
                                             "id_maps": self.fingerprint})
            load_state(model, load_saved(self.best_path, ("model",), "model file")["model"], self.best_path)
            metrics = run_metrics(model, self.kg, self.config, state, self.progress, len(self.examples))
            atomic_write_json(os.path.join(self.run_dir, METRICS), metrics)
            log.info("test mrr %.4f (best epoch %d)", metrics["test"]["mrr"], state.best_epoch)
            return metrics


def _end_epoch(state: TrainState, bar) -> None:
    """Count a finished epoch, log its loss and rate, keep the loss (``last_epoch_loss``, for the validation
    that follows) and reset the per-epoch sums."""
    state.epoch += 1
    loss = state.epoch_loss / max(state.epoch_triples, 1)
    rate = state.epoch_triples / max(state.epoch_seconds, 1e-9)
    bar.set_postfix(epoch=state.epoch, loss=f"{loss:.4f}", triples_per_s=f"{rate:,.0f}")
    log.info("epoch %d loss %.5f %.0f triples/s", state.epoch, loss, rate)
    state.batch_in_epoch, state.epoch_loss, state.epoch_triples, state.epoch_seconds = 0, 0.0, 0, 0.0
    state.last_epoch_loss = loss


def valid_sample(kg: KG, size: int, seed: int, protocol: str = "filtered") -> KG:
    """``kg`` with a fixed random sample of ``size`` valid triples (0 or more than there are: ``kg``
    itself) for validation during training; under the filtered protocol the filter index stays the
    full KG's (OGB's protocol needs none, and building one for 17M triples takes a minute)."""
    return split_sample(kg, "valid", size, seed, protocol)


def split_sample(kg: KG, split: str, size: int, seed: int, protocol: str = "filtered") -> KG:
    """``kg`` with a fixed random sample of ``size`` triples of ``split`` (valid or test) and their OGB
    negatives; the filter index stays the full KG's (none under OGB's protocol)."""
    triples = kg.split(split)
    if not size or size >= len(triples):
        return kg
    ids = torch.randperm(len(triples), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    negatives = dict(kg.negatives)
    if split in negatives:
        negatives[split] = {key: value[ids] for key, value in negatives[split].items()}
    return dataclasses.replace(kg, **{split: triples[ids]}, negatives=negatives,
                               _filter=None if protocol == "ogb" else kg.filter_index)


def _decay_lr(state: TrainState, cfg, optimizer, reason: str) -> None:
    """Multiply the learning rate by ``lr_decay`` and record it in ``state.lr_decays``."""
    lr = scale_lr(optimizer, cfg.lr_decay)
    state.lr_decays.append({"epoch": state.epoch, "lr": lr})
    log.info("epoch %d: %s, learning rate now %.3g", state.epoch, reason, lr)


def _plateau(state: TrainState, cfg, optimizer) -> None:
    """After a validation without improvement: decay the learning rate or stop early.

    Every ``lr_decay_patience`` bad validations in a row the rate is multiplied by ``lr_decay``, at most
    ``lr_decays`` times; once those are spent, ``lr_decay_patience`` more bad validations end the run.
    ``patience`` bad validations in a row always end it. With ``lr_decay_epochs`` (a fixed schedule,
    applied in the epoch loop) there are no plateau decays and only ``patience`` stops the run.
    """
    decays = state.lr_decays
    bad, since_decay = state.bad_validations, state.bad_validations - state.bad_at_decay
    stop = bad >= cfg.patience
    if cfg.lr_decay and cfg.lr_decays and not cfg.lr_decay_epochs and not stop:
        if len(decays) >= cfg.lr_decays:
            stop = since_decay >= cfg.lr_decay_patience
        elif since_decay >= cfg.lr_decay_patience:
            state.bad_at_decay = bad
            _decay_lr(state, cfg, optimizer, f"no improvement in {bad} validations")
    if stop:
        state.stopped_early = True
        log.info("early stop at epoch %d (best epoch %d)", state.epoch, state.best_epoch)


def run_metrics(model: KGEModel, kg: KG, config: Config, state: TrainState, progress: bool = False,
                examples: Optional[int] = None) -> Dict:
    """The run's ``metrics.json``: valid and test metrics of the best model, rates, history. ``examples``:
    an epoch's examples (default: the training triples; ``train.objective=kvsall``: its queries)."""
    # the best model's full-split validation is already known unless validation used a sample
    valid = state.best_valid or evaluate_model(model, kg, "valid", config, progress=progress)
    test = evaluate_model(model, kg, "test", config, per_relation=True, progress=progress)
    per_relation = test.pop("per_relation", None)
    examples = len(kg.train) if examples is None else examples
    positives_seen = state.step and state.epoch * examples + state.epoch_triples
    steady_seconds = state.train_seconds - state.warmup_seconds
    steady_triples = positives_seen - state.warmup_triples
    return {
        "dataset": kg.name, "model": config.model.name, "encoder": config.model.encoder,
        "objective": config.train.objective, "valid": valid, "test": test,
        "protocol": valid["protocol"], "train_seconds": round(state.train_seconds, 3),
        "train_triples_per_second": round(positives_seen / max(state.train_seconds, 1e-9), 1),
        # without each process's first WARMUP_STEPS steps (torch.compile's warm-up): the rate a longer run keeps
        "train_triples_per_second_steady": (round(steady_triples / steady_seconds, 1)
                                            if steady_triples > 0 and steady_seconds > 0 else None),
        "warmup_seconds": round(state.warmup_seconds, 3),
        "epochs": state.epoch, "steps": state.step, "best_epoch": state.best_epoch,
        "best_step": state.best_step, "stopped_early": state.stopped_early,
        "stopped_at_max_steps": state.stopped_at_max_steps, "lr_decays": state.lr_decays,
        "history": state.history,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "test_per_relation": per_relation, "kg": kg.summary(),
        "omp_wait_policy": settings.omp_wait_policy_choice(),
        "thread_changes": threads.changes(),
        "data_warnings": list(getattr(kg, "warnings", [])), "resume_changes": state.resume_changes,
    }
