"""The training loop: config in, metrics out.

Positives in shuffled batches; uniform negatives shared within chunks of queries (DGL-KE style)
or per triple; heads and tails corrupted on alternate steps (as in the RotatE and DGL-KE code);
dense Adam or sparse row updates (``train.optimizer``, see optim.py); validation every few epochs
with early stopping on valid MRR; the best model kept; a resumable checkpoint written atomically,
so ``resume=True`` reproduces an uninterrupted run. With ``model.encoder`` set the steps come
from encoder_training.py (full-graph or sampled message passing) and the loop is the same.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from ..config import Config, reciprocal_relations
from ..data.kg import KG
from ..eval import evaluate
from ..io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..models.model import KGEModel, build_model
from .losses import compute_loss
from .optim import make_optimizer, needs_sparse_tables, scale_lr
from .sampling import chunk_layout, positive_batches, subsampling_weights, uniform_negatives

LAST_CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "model.pt"
log = logging.getLogger("kbit_dgl")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunFolderExistsError(FileExistsError):
    """A run folder already holds a run and neither resume nor overwrite was asked for."""


def model_from_config(config: Config, kg: KG) -> KGEModel:
    if config.model.encoder:
        return _encoder_model(config, kg)
    model = build_model(config.model.name, kg.num_entities, kg.num_relations, config.model.dim, config.model.gamma,
                        reciprocal=reciprocal_relations(config.model),
                        sparse=needs_sparse_tables(config.train.optimizer))
    from ..quant.qat import attach_qat  # fake quantisation when train.qat_bits is set, else a no-op

    return attach_qat(model, config.train)


def _encoder_model(config: Config, kg: KG) -> KGEModel:
    """Tables -> GNN encoder (``model.encoder``, ``encoder.*``) -> decoder; imports DGL."""
    from ..models.decoders import make_decoder
    from ..models.encoders import build_encoder
    from ..quant.qat import attach_qat
    from .encoder_training import resolve_mode

    sparse = needs_sparse_tables(config.train.optimizer)
    if sparse and resolve_mode(config, kg.num_entities) != "sampled":
        raise ValueError(f"train.optimizer={config.train.optimizer}: full-graph encoder training reads every row of "
                         f"the entity table each step, so sparse row updates do not apply; use "
                         f"train.optimizer=adam, or encoder.mode=sampled (which reads only a batch's input nodes)")
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    encoder = build_encoder(config.model.encoder, kg, decoder.entity_dim, config.encoder)
    if sparse and getattr(encoder, "uses_relation_table", True):
        raise ValueError(f"train.optimizer={config.train.optimizer}: encoder {config.model.encoder!r} reads the "
                         f"whole relation table each step, so sparse row updates do not apply; "
                         f"use train.optimizer=adam")
    model = KGEModel(kg.num_entities, kg.num_relations, decoder, encoder, sparse=sparse,
                     reciprocal=reciprocal_relations(config.model))  # raises if set true: shallow models only
    return attach_qat(model, config.train)


def train_step(model: KGEModel, positives: torch.Tensor, config: Config, generator: torch.Generator,
               direction: str, weights: Optional[torch.Tensor] = None,
               all_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss of one batch of positive triples (B, 3): corrupt ``direction`` with shared negatives.

    ``weights`` (B,) optionally weighs each positive (``train.subsampling``); ``all_rows``
    (num_entities, d), when given, are the entity representations to gather from (an encoder's
    output, computed once per step).
    """
    train = config.train
    num_chunks, _ = chunk_layout(len(positives), train.negative_chunk_size)
    negative_ids = uniform_negatives(num_chunks, train.num_negatives, model.num_entities, generator)
    heads, relations, tails = positives[:, 0], positives[:, 1], positives[:, 2]
    if model.reciprocal and direction == "head":  # (?, r, t) as (t, r^-1, ?)
        heads, relations, tails, direction = tails, relations + model.num_relations, heads, "tail"
    head_rows, tail_rows = model.entities(heads, all_rows), model.entities(tails, all_rows)
    return batch_loss(model.decoder, head_rows, model.relations(relations), tail_rows,
                      model.entities(negative_ids, all_rows), train, direction, weights)


def batch_loss(decoder, head_rows: torch.Tensor, relation_rows: torch.Tensor, tail_rows: torch.Tensor,
               negative_rows: torch.Tensor, train, direction: str,
               weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Loss from the rows of a batch: (B, d) heads / relations / tails and (num_chunks, N, d)
    negatives, each chunk of B / num_chunks queries sharing one negative set; ``train`` is the
    ``train`` config section."""
    num_chunks = negative_rows.shape[0]
    chunk = len(head_rows) // num_chunks
    positive_scores = decoder.score(head_rows, relation_rows, tail_rows)
    anchor = head_rows if direction == "tail" else tail_rows
    negative_scores = decoder.score_candidates(
        anchor.view(num_chunks, chunk, -1), relation_rows.view(num_chunks, chunk, -1),
        negative_rows, direction).reshape(len(head_rows), -1)
    loss = compute_loss(train.loss, positive_scores, negative_scores, train.adversarial_temperature, train.margin,
                        weights)
    if train.regularization > 0:
        loss = loss + train.regularization * (head_rows.pow(2).mean() + tail_rows.pow(2).mean()
                                              + relation_rows.pow(2).mean())
    return loss


def evaluate_model(model: KGEModel, kg: KG, split: str, config: Config, per_relation: bool = False) -> Dict:
    return evaluate(model, kg, split, config.eval.protocol, config.eval.batch_size, per_relation)


def prepare_run_folder(run_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite an existing run silently."""
    if os.path.isdir(run_dir) and os.listdir(run_dir) and not resume:
        if not overwrite:
            raise RunFolderExistsError(f"{run_dir}: the run folder already exists and is not empty; "
                                       f"pass --resume to continue that run or --overwrite to replace it")
        for name in (LAST_CHECKPOINT, BEST_MODEL, "metrics.json", "config.yaml", "train.log"):
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                os.unlink(path)
    if resume and not os.path.exists(os.path.join(run_dir, LAST_CHECKPOINT)):
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no {LAST_CHECKPOINT})")
    os.makedirs(run_dir, exist_ok=True)


def _attach_log(run_dir: str) -> logging.Handler:
    handler = logging.FileHandler(os.path.join(run_dir, "train.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def train(config: Config, kg: KG, run_dir: str, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> Dict:
    """Train, validate, early-stop, then evaluate the best model; writes everything into ``run_dir``.

    Writes ``config.yaml`` (resolved), ``checkpoint.pt`` (resumable), ``model.pt`` (best by valid
    MRR), ``metrics.json`` and ``train.log``. Returns the metrics dict.
    """
    prepare_run_folder(run_dir, resume, overwrite)
    handler = _attach_log(run_dir)
    try:
        return _train(config, kg, run_dir, resume, progress)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(config: Config, kg: KG, run_dir: str, resume: bool, progress: bool) -> Dict:
    cfg = config.train
    if not 0.0 <= cfg.lr_decay < 1.0 or cfg.lr_decay_patience < 1 or cfg.lr_decays < 0:
        raise ValueError(f"train.lr_decay must be in [0, 1) (0 = off), train.lr_decay_patience >= 1 and "
                         f"train.lr_decays >= 0, got {cfg.lr_decay}, {cfg.lr_decay_patience}, {cfg.lr_decays}")
    if cfg.lr_decay_epochs and (not cfg.lr_decay or min(cfg.lr_decay_epochs) < 1):
        raise ValueError(f"train.lr_decay_epochs {cfg.lr_decay_epochs} needs train.lr_decay in (0, 1) and "
                         f"epochs >= 1, got lr_decay {cfg.lr_decay}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    atomic_write_text(os.path.join(run_dir, "config.yaml"), config.to_yaml())
    torch.manual_seed(cfg.seed)
    model = model_from_config(config, kg)
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "best_valid_mrr": -1.0, "best_epoch": 0, "bad_validations": 0,
             "train_seconds": 0.0, "history": [], "stopped_early": False}
    checkpoint_path = os.path.join(run_dir, LAST_CHECKPOINT)
    best_path = os.path.join(run_dir, BEST_MODEL)
    if resume:
        checkpoint = torch.load(checkpoint_path, map_location="cpu")
        model.load_state_dict(checkpoint["model"])
        saved_optimizer = checkpoint.get("optimizer_name", "adam")  # checkpoints before train.optimizer: adam
        if saved_optimizer != cfg.optimizer:
            raise ValueError(f"{checkpoint_path} was written with train.optimizer={saved_optimizer}, "
                             f"the config asks for {cfg.optimizer}; resume with the same optimizer")
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["generator"])
        if "torch_rng" in checkpoint:  # encoder runs: dropout and DGL's shuffles draw from torch's generator
            torch.set_rng_state(checkpoint["torch_rng"])
        state = checkpoint["state"]
        log.info("resumed from %s at epoch %d", checkpoint_path, state["epoch"])

    def save_checkpoint():
        checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "optimizer_name": cfg.optimizer, "generator": generator.get_state(), "state": state}
        if model.encoder is not None:
            checkpoint["torch_rng"] = torch.get_rng_state()
        atomic_torch_save(checkpoint_path, checkpoint)

    train_triples = kg.train
    weights = subsampling_weights(train_triples, kg.num_entities, kg.num_relations) if cfg.subsampling else None
    steps_per_epoch = math.ceil(len(train_triples) / cfg.batch_size)

    def shallow_losses():
        for batch_ids in positive_batches(len(train_triples), cfg.batch_size, generator):
            direction = "tail" if state["step"] % 2 == 0 else "head"
            yield train_step(model, train_triples[batch_ids], config, generator, direction,
                             None if weights is None else weights[batch_ids]), len(batch_ids)

    if model.encoder is None:
        epoch_losses = shallow_losses
    else:  # full-graph or sampled message passing: kbit_dgl/train/encoder_training.py
        from .encoder_training import encoder_epoch_losses

        epoch_losses = encoder_epoch_losses(model, kg, config, generator, state, weights)
    log.info("training %s%s on %s %s for up to %d epochs (%d steps each)", config.model.name,
             f" with encoder {config.model.encoder}" if config.model.encoder else "", kg.name, kg.summary(),
             cfg.max_epochs, steps_per_epoch)
    bar = tqdm(total=cfg.max_epochs * steps_per_epoch, initial=state["epoch"] * steps_per_epoch,
               disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    while state["epoch"] < cfg.max_epochs and not state["stopped_early"]:
        epoch_start = time.perf_counter()
        epoch_loss, epoch_triples = 0.0, 0
        for loss, batch_size in epoch_losses():
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss became {float(loss)} at epoch {state['epoch'] + 1}, step {state['step']}; "
                    f"the last good checkpoint is {checkpoint_path} (try a smaller train.lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["step"] += 1
            epoch_loss += float(loss) * batch_size
            epoch_triples += batch_size
            bar.update(1)
            if progress and state["step"] % 50 == 0:
                bar.set_postfix(epoch=state["epoch"] + 1, loss=f"{epoch_loss / epoch_triples:.4f}",
                                triples_per_s=f"{epoch_triples / (time.perf_counter() - epoch_start):,.0f}")
        seconds = time.perf_counter() - epoch_start
        state["train_seconds"] += seconds
        state["epoch"] += 1
        rate = epoch_triples / max(seconds, 1e-9)
        bar.set_postfix(epoch=state["epoch"], loss=f"{epoch_loss / epoch_triples:.4f}", triples_per_s=f"{rate:,.0f}")
        log.info("epoch %d loss %.5f %.0f triples/s", state["epoch"], epoch_loss / epoch_triples, rate)
        if state["epoch"] % cfg.valid_every == 0 or state["epoch"] == cfg.max_epochs:
            valid = evaluate_model(model, kg, "valid", config)
            state["history"].append({"epoch": state["epoch"], "step": state["step"],
                                     "loss": epoch_loss / epoch_triples, "valid_mrr": valid["mrr"]})
            log.info("epoch %d valid mrr %.4f hits@10 %.4f", state["epoch"], valid["mrr"], valid["hits@10"])
            if progress:
                bar.write(f"epoch {state['epoch']}: loss {epoch_loss / epoch_triples:.4f}  "
                          f"valid MRR {valid['mrr']:.4f}", file=sys.stderr)
            if valid["mrr"] > state["best_valid_mrr"]:
                state.update(best_valid_mrr=valid["mrr"], best_epoch=state["epoch"], bad_validations=0,
                             bad_at_decay=0)
                atomic_torch_save(best_path, {"model": model.state_dict(), "epoch": state["epoch"]})
            else:
                state["bad_validations"] += 1
                _plateau(state, cfg, optimizer)
        if state["epoch"] in cfg.lr_decay_epochs and not state["stopped_early"]:
            _decay_lr(state, cfg, optimizer, "scheduled decay")
        if state["epoch"] % cfg.checkpoint_every == 0 or state["stopped_early"] or state["epoch"] == cfg.max_epochs:
            save_checkpoint()
    bar.close()
    if not os.path.exists(best_path):  # e.g. max_epochs == 0
        atomic_torch_save(best_path, {"model": model.state_dict(), "epoch": state["epoch"]})
    model.load_state_dict(torch.load(best_path, map_location="cpu")["model"])
    metrics = run_metrics(model, kg, config, state)
    atomic_write_json(os.path.join(run_dir, "metrics.json"), metrics)
    log.info("test mrr %.4f (best epoch %d)", metrics["test"]["mrr"], state["best_epoch"])
    return metrics


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


def run_metrics(model: KGEModel, kg: KG, config: Config, state: Dict) -> Dict:
    valid = evaluate_model(model, kg, "valid", config)
    test = evaluate_model(model, kg, "test", config, per_relation=True)
    per_relation = test.pop("per_relation", None)
    positives_seen = state["step"] and state["epoch"] * len(kg.train)
    return {
        "dataset": kg.name, "model": config.model.name, "encoder": config.model.encoder, "valid": valid, "test": test,
        "protocol": valid["protocol"], "train_seconds": round(state["train_seconds"], 3),
        "train_triples_per_second": round(positives_seen / max(state["train_seconds"], 1e-9), 1),
        "epochs": state["epoch"], "steps": state["step"], "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"], "lr_decays": state.get("lr_decays", []),
        "history": state["history"],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "test_per_relation": per_relation, "kg": kg.summary(),
    }


def load_run(run_dir: str, kg: Optional[KG] = None):
    """(config, kg, model) of a finished or interrupted run, with the best model's weights."""
    from ..data import load_dataset

    config = Config.from_yaml(os.path.join(run_dir, "config.yaml"), run=True)
    kg = kg or load_dataset(config.data.dataset, config.data.data_dir, config.data.seed)
    model = model_from_config(config, kg)
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no {BEST_MODEL}; the run has not validated yet")
    model.load_state_dict(torch.load(path, map_location="cpu")["model"])
    model.eval()
    return config, kg, model
