"""The training loop: config in, metrics out.

Positives in shuffled batches; uniform negatives shared within chunks of queries (DGL-KE style)
or per triple; heads and tails corrupted on alternate steps (as in the RotatE and DGL-KE code);
dense Adam or sparse row updates (``train.optimizer``, see optim.py); validation every few epochs
with early stopping on valid MRR; the best model kept; a resumable checkpoint written atomically,
so ``resume=True`` reproduces an uninterrupted run. With ``model.encoder`` set the steps come
from encoder_training.py (full-graph or sampled message passing) and the loop is the same.
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
from typing import Callable, Dict, Optional, Tuple

import torch
from tqdm import tqdm

from .. import settings, threads
from ..config import Config, allow_encoder_import, is_import_spec, resolve_device
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
from . import distdgl, distributed, steps
from .optim import make_optimizer, param_groups, scale_lr
from .sampling import epoch_permutation, subsampling_weights

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


def _check_checkpoint_state(saved, defaults: Dict, path: str) -> None:
    """Refuse a checkpoint whose ``state`` is not a dict whose counters have the kinds of ``defaults``."""
    if not isinstance(saved, dict):
        raise RunFileError(f"{path}: its 'state' entry is a {type(saved).__name__}, not the training state; "
                           f"a damaged or foreign checkpoint")
    for key, default in defaults.items():
        if key not in saved:
            continue
        value = saved[key]
        kinds = (bool,) if isinstance(default, bool) else (list,) if isinstance(default, list) else \
            (int,) if isinstance(default, int) else (int, float)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RunFileError(f"{path}: its training state's {key!r} is {value!r:.60}, expected a "
                               f"{kinds[-1].__name__}; a damaged or foreign checkpoint")


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
          progress: bool = True, on_validation: Optional[Callable[[int, float], None]] = None) -> Dict:
    """Train, validate, early-stop, then evaluate the best model; writes everything into ``run_dir``.

    Writes ``config.yaml`` (resolved), ``entities.dict`` / ``relations.dict`` (the id maps),
    ``checkpoint.pt`` (resumable), ``model.pt`` (best by valid MRR), ``metrics.json`` and
    ``train.log``. The config, the device and the estimated memory (:mod:`kbit_dgl.resources`) are
    checked before anything is written (the folder is not even created), the folder is locked while the
    run writes it, and ``resume`` refuses config changes the checkpoint cannot honour (see
    :data:`RESUME_CHANGEABLE`). ``on_validation(epoch, valid_mrr)`` is called after each validation
    (after the checkpoint of that epoch is written); an exception it raises ends the run there (a
    tuner's pruning). Returns the metrics dict.
    """
    check_config(config)  # the device too: a machine without the GPU asked for is refused here
    if is_import_spec(config.model.encoder):  # the caller's own config names it (a run folder's passed run_config)
        allow_encoder_import([config.model.encoder])  # so this process may reopen the run it writes
    check_memory_for(config, kg)  # before the folder, its lock, config.yaml or train.log exist
    if distributed.launched_by_torchrun() or distdgl.launched_by_dgl():  # one of N, started by torchrun / DGL
        return _train_as_torchrun_rank(config, kg, run_dir, resume, overwrite, progress)
    created = not os.path.isdir(run_dir)
    try:
        return _train_in_folder(config, kg, run_dir, resume, overwrite, progress, on_validation)
    except BaseException:
        if created and os.listdir(run_dir) == [".lock"]:  # refused before anything was written
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train_in_folder(config: Config, kg: KG, run_dir: str, resume: bool, overwrite: bool, progress: bool,
                     on_validation: Optional[Callable[[int, float], None]] = None,
                     announce: Optional[Callable[[Optional[Dict]], object]] = None) -> Optional[Dict]:
    """Lock and prepare ``run_dir``, attach its log, and train. ``announce`` (rank 0 under torchrun)
    gets the resume's config changes once the folder is ready, or None when preparing it failed."""
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
            return _train(config, kg, run_dir, resume, progress, changes, on_validation)
        finally:
            threads.stop()
            log.removeHandler(handler)
            handler.close()


def _train_as_torchrun_rank(config: Config, kg: KG, run_dir: str, resume: bool, overwrite: bool,
                            progress: bool) -> Optional[Dict]:
    """One of the N processes ``torchrun`` (or DGL's launch, a DistDGL trainer) started: rank 0 locks
    and prepares the run folder as :func:`train` does, every rank trains; rank 0 returns the
    metrics, the others None."""
    dgl_trainer = distdgl.launched_by_dgl()
    if dgl_trainer:
        group = distdgl.join(config.train.device, config.train.dist_timeout_minutes, kg)
    else:
        group = distributed.join_torchrun(config.train.device, config.train.dist_timeout_minutes)
    leave = distdgl.leave if dgl_trainer else distributed._leave
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, num_procs=group.world_size))
    try:
        if not group.is_main:
            changes = group.broadcast(None)  # rank 0 prepared the folder and read the resume's changes
            if changes is None:
                raise distributed.DistributedTrainingError(f"rank 0 could not prepare {run_dir}; see its error")
            metrics = _train(config, kg, run_dir, resume, False, changes, None)
        else:  # None announced: rank 0 failed, and says why
            metrics = _train_in_folder(config, kg, run_dir, resume, overwrite, progress, announce=group.broadcast)
    except BaseException:
        leave(together=False)  # torchrun (DGL's launch) ends the others
        raise
    run_name = group.run_name
    leave()
    if metrics is not None:
        distributed.remove_shared_memory(run_name)
    return metrics


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


def _train(config: Config, kg: KG, run_dir: str, resume: bool, progress: bool,
           changes: Dict[str, Tuple[object, object]],
           on_validation: Optional[Callable[[int, float], None]] = None) -> Dict:
    cfg = config.train
    group = distributed.current()
    checkpoint_path = os.path.join(run_dir, CHECKPOINT)
    if group is None and cfg.num_procs > 1:  # fork the N processes; each runs _train in the group
        distributed.spawn(cfg.num_procs, cfg.device, cfg.dist_timeout_minutes,
                          lambda: _train(config, kg, run_dir, resume, progress, changes, None), checkpoint_path)
        with open(os.path.join(run_dir, METRICS), encoding="utf-8") as handle:
            return json.load(handle)
    main = group is None or group.is_main
    progress = progress and main
    if cfg.num_threads or group is not None:
        torch.set_num_threads(cfg.num_threads or group.threads())
    best_path = os.path.join(run_dir, BEST_MODEL)
    checkpoint = load_saved(checkpoint_path, ("model", "optimizer", "generator", "state"),
                            "checkpoint", folder=run_dir) if resume else None
    if resume:
        check_fingerprint(checkpoint_path, checkpoint, run_dir)
        saved_optimizer = checkpoint.get("optimizer_name", "adam")  # checkpoints before train.optimizer: adam
        if saved_optimizer != cfg.optimizer:
            raise ConfigError(f"{checkpoint_path} was written with train.optimizer={saved_optimizer}, "
                              f"the config asks for {cfg.optimizer}; resume with the same optimizer")
        saved_procs = checkpoint.get("num_procs", 1)
        if saved_procs != cfg.num_procs:
            raise ConfigError(f"{checkpoint_path} was written by {saved_procs} training process(es), the config asks "
                              f"for train.num_procs={cfg.num_procs}; resume with train.num_procs={saved_procs}")
    if main:
        atomic_write_text(os.path.join(run_dir, CONFIG), config.to_yaml())
        if not resume:
            write_id_maps(run_dir, kg)
    for warning in getattr(kg, "warnings", []):
        log.warning("data: %s", warning)
    fingerprint = kg_fingerprint(kg)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device, config.model.encoder)  # checked before the folder: see train()
    # one process at torch's default thread count: refit the count while the run goes on (kbit_dgl/threads.py)
    threads.adapt(not cfg.num_threads and group is None and device.type == "cpu")
    if group is not None and device.type == "cuda":
        device = group.device  # one GPU per process
    model = model_from_config(config, kg, device).to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    order_generator = generator  # draws each epoch's order of the training triples
    if group is None:
        optimizer = make_optimizer(model, cfg.optimizer, cfg.lr)
    else:  # the tables in shared memory, DGL's sparse optimizers; each rank draws its own negatives
        group.share_tables(model)
        optimizer = group.make_optimizer(model, cfg.optimizer, cfg.lr, cfg.dist_update == "hogwild")
        order_generator = torch.Generator().manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (group.rank + 1))
    state = {"epoch": 0, "step": 0, "best_valid_mrr": -1.0, "best_epoch": 0, "bad_validations": 0,
             "train_seconds": 0.0, "warmup_seconds": 0.0, "warmup_triples": 0, "history": [],
             "stopped_early": False}
    if resume:
        load_state(model, checkpoint["model"], checkpoint_path)
        _check_checkpoint_state(checkpoint["state"], state, checkpoint_path)
        try:  # a file of the right format holding values of the wrong kind: name it, no traceback
            optimizer.load_state_dict(checkpoint["optimizer"])
            if group is None:
                generator.set_state(checkpoint["generator"])
            else:
                generator.set_state(checkpoint["generators"][group.rank])
                order_generator.set_state(checkpoint["order_generator"])
            if "torch_rng" in checkpoint:  # encoder runs: dropout and DGL's shuffles draw from torch's generator
                torch.set_rng_state(checkpoint["torch_rng"])
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as error:
            raise RunFileError(f"{checkpoint_path}: its optimizer or random state cannot be restored "
                               f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                               f"a damaged or foreign checkpoint") from None
        state = {"warmup_seconds": 0.0, "warmup_triples": 0, **checkpoint["state"]}
        if model.encoder is not None and state.get("batch_in_epoch"):
            raise ConfigError(f"{checkpoint_path} was written inside an epoch ({state['batch_in_epoch']} batches in); "
                              f"runs with an encoder resume from epoch boundaries only")
        log.info("resumed from %s at epoch %d", checkpoint_path, state["epoch"])
        if changes:
            log.info("resume changes %s", ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items()))
            record = {key: [old, new] for key, (old, new) in changes.items()}
            state.setdefault("resume_changes", []).append({"epoch": state["epoch"], "step": state["step"], **record})
        if "train.lr" in changes:  # the optimizer state restored the old rate: set the asked one
            for param_group in param_groups(optimizer):
                param_group["lr"] = cfg.lr
            state.setdefault("lr_decays", []).append({"epoch": state["epoch"], "lr": cfg.lr, "reason": "resume"})
        del checkpoint

    def local_copy():
        """Rank 0 reads the tables within (DistDGL: a copy pulled from DGL's servers)."""
        return contextlib.nullcontext() if group is None else group.local_copy(model)

    def save_checkpoint(label: str):
        """Every rank calls this; rank 0 checks the weights are finite and writes (with every rank's
        negative generator)."""
        generators = None if group is None else group.gather(generator.get_state())
        if not main:
            return
        with local_copy():
            _check_finite(model, f"at {label}", checkpoint_path)
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "optimizer_name": cfg.optimizer, "generator": generator.get_state(), "state": state,
                          "id_maps": fingerprint}
        if group is not None:
            checkpoint.update(num_procs=group.world_size, generators=generators,
                              order_generator=order_generator.get_state())
        if model.encoder is not None:
            checkpoint["torch_rng"] = torch.get_rng_state()
        atomic_save(checkpoint_path, checkpoint)

    train_triples = kg.train.to(device)
    # DistDGL: the rows of this trainer's partition, each epoch in the same number of batches on every
    # trainer; otherwise every rank takes its share of each batch of the whole split
    own_rows = None if group is None else group.train_rows(kg)
    weights = subsampling_weights(kg.train, kg.num_entities, kg.num_relations) if cfg.subsampling else None
    weights = None if weights is None else weights.to(device)
    steps_per_epoch = math.ceil(len(train_triples) / cfg.batch_size)
    valid_kg = valid_sample(kg, config.eval.valid_sample, cfg.seed, resolve_protocol(kg, config.eval.protocol))

    def shallow_losses(skip: int = 0):
        """One epoch's (loss, batch size) steps; ``skip`` batches already ran (a mid-epoch resume):
        the epoch's order is drawn again from the generator state it was drawn from."""
        if own_rows is not None:  # DistDGL: this trainer's rows, in an order drawn from (seed, rank, epoch)
            epoch_generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (group.rank + 1)
                                                            + 7_919 * state["epoch"])
            batches = own_rows[epoch_permutation(len(own_rows), epoch_generator)].tensor_split(steps_per_epoch)
        else:
            if skip:
                current = order_generator.get_state()
                order_generator.set_state(state["epoch_generator"])
            else:
                state["epoch_generator"] = order_generator.get_state()
            batches = epoch_permutation(len(train_triples), order_generator).split(cfg.batch_size)
            if skip:
                order_generator.set_state(current)
        for batch_ids in batches[skip:]:
            size = len(batch_ids)
            if own_rows is not None:
                size *= group.world_size  # about the triples of the step on all trainers
                if not size:
                    yield None, 0
                    continue
            elif group is not None:  # this rank's share of the batch
                batch_ids = batch_ids.tensor_split(group.world_size)[group.rank]
                if not len(batch_ids):
                    yield None, size
                    continue
            batch_ids = batch_ids.to(device)
            direction = "tail" if state["step"] % 2 == 0 else "head"
            yield steps.train_step(model, train_triples[batch_ids], config, generator, direction,
                                   None if weights is None else weights[batch_ids]), size

    if model.encoder is None:
        epoch_losses = shallow_losses
    else:  # full-graph or sampled message passing: kbit_dgl/train/encoder_training.py
        from .encoder_training import encoder_epoch_losses

        encoder_losses = encoder_epoch_losses(model, kg, config, generator, state, weights)
        epoch_losses = lambda skip=0: encoder_losses()  # noqa: E731  (mid-epoch checkpoints are refused)
    total_steps = cfg.max_epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    log.info("training %s%s on %s %s for up to %d epochs (%d steps each)%s", config.model.name,
             f" with encoder {config.model.encoder}" if config.model.encoder else "", kg.name, kg.summary(),
             cfg.max_epochs, steps_per_epoch, f", at most {cfg.max_steps} steps" if cfg.max_steps else "")
    bar = tqdm(total=total_steps, initial=min(state["step"], total_steps), disable=not progress, unit="step",
               dynamic_ncols=True)
    state.setdefault("batch_in_epoch", 0)
    state.setdefault("epoch_loss", 0.0)
    state.setdefault("epoch_triples", 0)
    state.setdefault("epoch_seconds", 0.0)
    state.setdefault("stopped_at_max_steps", False)
    process_steps = 0  # steps this process ran: its first WARMUP_STEPS compile the kernels
    last_checkpoint_time = time.perf_counter()

    def validate(label: str) -> Dict:
        """Validate, keep the best model, count plateaus; returns the valid metrics. With N processes
        rank 0 validates and the others take its state and learning rates."""
        valid = None
        if main:
            with local_copy():
                valid = validate_here(label)
        if group is not None:
            synced, valid, rates = group.broadcast((state, valid, [g["lr"] for g in param_groups(optimizer)]))
            if not main:
                state.clear()
                state.update(synced)
                for param_group, rate in zip(param_groups(optimizer), rates):
                    param_group["lr"] = rate
        return valid

    def validate_here(label: str) -> Dict:
        _check_finite(model, f"at {label}", checkpoint_path)
        valid = evaluate_model(model, valid_kg, "valid", config)
        # mid-epoch: the epoch so far; at an epoch's end its sums are reset, so the epoch just finished
        # (None from a checkpoint written before last_epoch_loss was kept, where there is no such epoch yet)
        loss = (state["epoch_loss"] / state["epoch_triples"] if state["epoch_triples"]
                else state.get("last_epoch_loss"))
        state["history"].append({"epoch": state["epoch"], "step": state["step"], "loss": loss,
                                 "valid_mrr": valid["mrr"]})
        log.info("%s valid mrr %.4f hits@10 %.4f", label, valid["mrr"], valid["hits@10"])
        if progress:
            shown = "n/a" if loss is None else f"{loss:.4f}"
            bar.write(f"{label}: loss {shown}  valid MRR {valid['mrr']:.4f}", file=sys.stderr)
        if valid["mrr"] > state["best_valid_mrr"]:
            state.update(best_valid_mrr=valid["mrr"], best_epoch=state["epoch"], best_step=state["step"],
                         bad_validations=0, bad_at_decay=0, best_valid=valid if valid_kg is kg else None)
            atomic_save(best_path, {"model": model.state_dict(), "epoch": state["epoch"],
                                          "step": state["step"], "id_maps": fingerprint})
        else:
            state["bad_validations"] += 1
            _plateau(state, cfg, optimizer)
        return valid

    def checkpoint(label: str) -> None:
        nonlocal last_checkpoint_time
        save_checkpoint(label)
        last_checkpoint_time = time.perf_counter()

    def finished() -> bool:
        return (state["epoch"] >= cfg.max_epochs or state["stopped_early"]
                or bool(cfg.max_steps and state["step"] >= cfg.max_steps))

    model.train()
    while not finished():
        last = time.perf_counter()
        for loss, batch_size in epoch_losses(state["batch_in_epoch"]):
            if loss is None:  # this rank's share of a last batch smaller than the number of processes
                loss = torch.zeros(())
            elif not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss became {float(loss.detach())} at epoch {state['epoch'] + 1}, step {state['step']}; "
                    f"the last good checkpoint is {checkpoint_path} (try a smaller train.lr)")
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
            optimizer.step()
            threads.tick()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            process_steps += 1
            # float() of a tensor that requires grad warns in newer torch (2.15 here), once per process
            state["epoch_loss"] += float(loss.detach()) * batch_size
            state["epoch_triples"] += batch_size
            now = time.perf_counter()  # step time only: validation and checkpoints are not training
            state["train_seconds"] += now - last
            state["epoch_seconds"] += now - last
            if process_steps <= WARMUP_STEPS:
                state["warmup_seconds"] += now - last
                state["warmup_triples"] += batch_size
            last = now
            bar.update(1)
            if progress and state["step"] % 50 == 0:
                bar.set_postfix(epoch=state["epoch"] + 1, loss=f"{state['epoch_loss'] / state['epoch_triples']:.4f}",
                                triples_per_s=f"{state['epoch_triples'] / max(state['epoch_seconds'], 1e-9):,.0f}")
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                state["stopped_at_max_steps"] = True
                break
            label = f"step {state['step']} (epoch {state['epoch'] + 1})"
            if cfg.valid_every_steps and state["step"] % cfg.valid_every_steps == 0:
                valid = validate(label)
                if on_validation is not None and main:
                    on_validation(state["step"], valid["mrr"])
                if state["stopped_early"]:
                    break
            due = bool(cfg.checkpoint_every_minutes and now - last_checkpoint_time >= 60 * cfg.checkpoint_every_minutes)
            if group is not None and cfg.checkpoint_every_minutes:
                due = group.broadcast(due)  # rank 0's clock decides for all
            if due or (cfg.checkpoint_every_steps and state["step"] % cfg.checkpoint_every_steps == 0):
                checkpoint(label)
            last = time.perf_counter()
        else:  # the epoch ran to its end
            _end_epoch(state, bar, cfg)
            validate_now = not cfg.valid_every_steps and (state["epoch"] % cfg.valid_every == 0
                                                          or state["epoch"] == cfg.max_epochs)
            valid = validate(f"epoch {state['epoch']}") if validate_now else None
            if state["epoch"] in cfg.lr_decay_epochs and not state["stopped_early"]:
                _decay_lr(state, cfg, optimizer, "scheduled decay")
            if state["epoch"] % cfg.checkpoint_every == 0 or finished():
                checkpoint(f"epoch {state['epoch']}")
            if valid is not None and on_validation is not None and main:
                on_validation(state["epoch"], valid["mrr"])
            continue
        # stopped inside an epoch (max_steps, or early stopping at a step validation)
        log.info("stopped at step %d, %d batches into epoch %d", state["step"], state["batch_in_epoch"],
                 state["epoch"] + 1)
        validated_here = bool(state["history"]) and state["history"][-1]["step"] == state["step"]
        if not validated_here and not state["stopped_early"]:
            validate(f"step {state['step']} (the last)")
        checkpoint(f"step {state['step']}")
    bar.close()
    if not main:
        return None
    with local_copy():
        return _finish(model, kg, config, state, progress, run_dir, best_path, checkpoint_path, fingerprint)


def _finish(model: KGEModel, kg: KG, config: Config, state: Dict, progress: bool, run_dir: str, best_path: str,
            checkpoint_path: str, fingerprint: str) -> Dict:
    """Test the best model and write the run's metrics."""
    if not os.path.exists(best_path):  # e.g. max_epochs == 0
        _check_finite(model, "before the first validation", checkpoint_path)
        atomic_save(best_path, {"model": model.state_dict(), "epoch": state["epoch"], "id_maps": fingerprint})
    load_state(model, load_saved(best_path, ("model",), "model file")["model"], best_path)
    metrics = run_metrics(model, kg, config, state, progress)
    atomic_write_json(os.path.join(run_dir, METRICS), metrics)
    log.info("test mrr %.4f (best epoch %d)", metrics["test"]["mrr"], state["best_epoch"])
    return metrics


def _end_epoch(state: Dict, bar, cfg) -> None:
    """Count a finished epoch, log its loss and rate, keep the loss (``last_epoch_loss``, for the validation
    that follows) and reset the per-epoch sums."""
    state["epoch"] += 1
    loss = state["epoch_loss"] / max(state["epoch_triples"], 1)
    rate = state["epoch_triples"] / max(state["epoch_seconds"], 1e-9)
    bar.set_postfix(epoch=state["epoch"], loss=f"{loss:.4f}", triples_per_s=f"{rate:,.0f}")
    log.info("epoch %d loss %.5f %.0f triples/s", state["epoch"], loss, rate)
    state.update(batch_in_epoch=0, epoch_loss=0.0, epoch_triples=0, epoch_seconds=0.0, last_epoch_loss=loss)


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


def _decay_lr(state: Dict, cfg, optimizer, reason: str) -> None:
    """Multiply the learning rate by ``lr_decay`` and record it in ``state["lr_decays"]``."""
    lr = scale_lr(optimizer, cfg.lr_decay)
    state.setdefault("lr_decays", []).append({"epoch": state["epoch"], "lr": lr})
    log.info("epoch %d: %s, learning rate now %.3g", state["epoch"], reason, lr)


def _plateau(state: Dict, cfg, optimizer) -> None:
    """After a validation without improvement: decay the learning rate or stop early.

    Every ``lr_decay_patience`` bad validations in a row the rate is multiplied by ``lr_decay``, at most
    ``lr_decays`` times; once those are spent, ``lr_decay_patience`` more bad validations end the run.
    ``patience`` bad validations in a row always end it. With ``lr_decay_epochs`` (a fixed schedule,
    applied in the epoch loop) there are no plateau decays and only ``patience`` stops the run.
    """
    decays = state.setdefault("lr_decays", [])
    bad, since_decay = state["bad_validations"], state["bad_validations"] - state.get("bad_at_decay", 0)
    stop = bad >= cfg.patience
    if cfg.lr_decay and cfg.lr_decays and not cfg.lr_decay_epochs and not stop:
        if len(decays) >= cfg.lr_decays:
            stop = since_decay >= cfg.lr_decay_patience
        elif since_decay >= cfg.lr_decay_patience:
            state["bad_at_decay"] = bad
            _decay_lr(state, cfg, optimizer, f"no improvement in {bad} validations")
    if stop:
        state["stopped_early"] = True
        log.info("early stop at epoch %d (best epoch %d)", state["epoch"], state["best_epoch"])


def run_metrics(model: KGEModel, kg: KG, config: Config, state: Dict, progress: bool = False) -> Dict:
    # the best model's full-split validation is already known unless validation used a sample
    valid = state.get("best_valid") or evaluate_model(model, kg, "valid", config, progress=progress)
    test = evaluate_model(model, kg, "test", config, per_relation=True, progress=progress)
    per_relation = test.pop("per_relation", None)
    positives_seen = state["step"] and state["epoch"] * len(kg.train) + state.get("epoch_triples", 0)
    steady_seconds = state["train_seconds"] - state.get("warmup_seconds", 0.0)
    steady_triples = positives_seen - state.get("warmup_triples", 0)
    return {
        "dataset": kg.name, "model": config.model.name, "encoder": config.model.encoder, "valid": valid, "test": test,
        "protocol": valid["protocol"], "train_seconds": round(state["train_seconds"], 3),
        "train_triples_per_second": round(positives_seen / max(state["train_seconds"], 1e-9), 1),
        # without each process's first WARMUP_STEPS steps (torch.compile's warm-up): the rate a longer run keeps
        "train_triples_per_second_steady": (round(steady_triples / steady_seconds, 1)
                                            if steady_triples > 0 and steady_seconds > 0 else None),
        "warmup_seconds": round(state.get("warmup_seconds", 0.0), 3),
        "epochs": state["epoch"], "steps": state["step"], "best_epoch": state["best_epoch"],
        "best_step": state.get("best_step"), "stopped_early": state["stopped_early"],
        "stopped_at_max_steps": state.get("stopped_at_max_steps", False), "lr_decays": state.get("lr_decays", []),
        "history": state["history"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "test_per_relation": per_relation, "kg": kg.summary(),
        "omp_wait_policy": settings.omp_wait_policy_choice(),
        "thread_changes": threads.changes(),
        "data_warnings": list(getattr(kg, "warnings", [])), "resume_changes": state.get("resume_changes", []),
    }
