"""Will a training run fit? Its memory, estimated from the config and the dataset's size, against what
the device has available; checked by :func:`kbit_dgl.train.trainer.train` before the run folder is
created, so a run that cannot fit leaves nothing on disk. (The device itself is checked by
:func:`kbit_dgl.config.resolve_device`, from :func:`kbit_dgl.runs.check_config`.)
"""
from __future__ import annotations

from typing import Dict, Optional

from .config import Config, encoder_mode, needs_sparse_tables, reciprocal_relations, resolve_device
from .errors import ConfigError
from .models.decoders import make_decoder

GIB = 1 << 30
FLOAT_BYTES = 4
MEMINFO = "/proc/meminfo"


def gib(num_bytes: int) -> str:
    """``num_bytes`` in GiB, with the digits that matter: ``2,477.7 GiB``, ``0.0036 GiB``."""
    value = num_bytes / GIB
    return f"{value:,.1f} GiB" if value >= 0.1 else f"{value:.2g} GiB"


def estimate_training_bytes(config: Config, num_entities: int, num_relations: int,
                            num_train_triples: int = 0, eval_candidates: Optional[int] = None,
                            device=None) -> Dict[str, int]:
    """Bytes a training run needs at its peak, by part: ``{"tables", "optimizer", "gradients", "qat",
    "workspace", "encoder", "triples", "total"}``. A simple, honest estimate, not a measurement.

    With fp32 numbers (4 bytes), E entities, R' relation rows (2R with reciprocal relations, else R),
    the decoder's row widths d_e (entity) and d_r (relation), d = max(d_e, d_r), B = train.batch_size,
    N = train.num_negatives, T training triples and P = E * d_e + R' * d_r (the tables' numbers):

    * tables: P numbers;
    * optimizer state: adam and sparse_adam 2P (first and second moments), sparse_adagrad P (the
      squared sums), rowwise_adagrad E + R' (one sum per row);
    * gradients: P for dense adam on a GPU (a table-sized gradient); elsewhere the rows of a step,
      counted in the workspace;
    * qat: P when train.qat_bits is set (the fake-quantized tables of each step);
    * workspace: the larger of a training step and an evaluation batch. A step gathers
      G = (3B + C * N) * d numbers, the heads, relations and tails of the batch and the N negatives
      that each of its C = ceil(B / train.negative_chunk_size) chunks shares; it keeps 3G (the rows,
      their gradients, one temporary of the scoring) and 4 * B * N for the negative scores (scores,
      weights, their gradients): 3G + 4BN numbers, times train.num_procs. An evaluation batch keeps
      3 * eval.batch_size * K numbers (the scores, the filter mask, the ranks) for K = ``eval_candidates``
      per query: every entity (E, the default) in filtered ranking, 1 + OGB's negatives under OGB's protocol;
    * encoder (full-graph mode): per layer 3 * E * d_e numbers (input, output and their gradient) and
      2 * T * d_e (a message per edge and inverse edge); sampled mode adds only its blocks, not
      estimated here;
    * triples: T * 3 int64 on the device.
    """
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    train = config.train
    relation_rows = num_relations * (2 if reciprocal_relations(config.model) else 1)
    table_numbers = num_entities * decoder.entity_dim + relation_rows * decoder.relation_dim
    optimizer = {"adam": 2 * table_numbers, "sparse_adam": 2 * table_numbers, "sparse_adagrad": table_numbers,
                 "rowwise_adagrad": num_entities + relation_rows, "adagrad": table_numbers}[train.optimizer]
    device = device if device is not None else resolve_device(train.device, config.model.encoder)
    scored_all = train.objective != "negative_sampling"
    dense_gradient = not needs_sparse_tables(train.optimizer) and (device.type != "cpu" or scored_all)
    width = max(decoder.entity_dim, decoder.relation_dim)
    chunks = -(-train.batch_size // min(train.negative_chunk_size, train.batch_size))
    gathered = (3 * train.batch_size + chunks * train.num_negatives) * width
    step = (3 * gathered + 4 * train.batch_size * train.num_negatives) * train.num_procs
    if scored_all:  # 2 B queries against every entity (or the shared sample): logits, their softmax, gradient
        candidates = train.num_candidates or num_entities
        step = 2 * train.batch_size * (4 * candidates + 6 * width) + candidates * width
    evaluation = 3 * config.eval.batch_size * (num_entities if eval_candidates is None else eval_candidates)
    encoder = 0
    if config.model.encoder and encoder_mode(config, num_entities) == "full":
        encoder = config.encoder.layers * (3 * num_entities + 2 * num_train_triples) * decoder.entity_dim
    parts = {"tables": table_numbers * FLOAT_BYTES, "optimizer": optimizer * FLOAT_BYTES,
             "gradients": (table_numbers if dense_gradient else 0) * FLOAT_BYTES,
             "qat": (table_numbers if train.qat_bits else 0) * FLOAT_BYTES,
             "workspace": max(step, evaluation) * FLOAT_BYTES, "encoder": encoder * FLOAT_BYTES,
             "triples": num_train_triples * 3 * 8}
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(device) -> Optional[int]:
    """Free memory of ``device`` (a ``torch.device``) in bytes: the GPU's free memory, or the CPU's
    ``MemAvailable`` (/proc/meminfo); None where it cannot be read."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open(MEMINFO, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(config: Config, num_entities: int, num_relations: int,
                 num_train_triples: int = 0, eval_candidates: Optional[int] = None,
                 device=None) -> Optional[Dict[str, int]]:
    """Refuse a run whose :func:`estimate_training_bytes` exceeds the device's :func:`available_bytes`,
    naming the estimate in GiB and the override (``train.check_memory=false``); returns the estimate
    (None when the check is off)."""
    if not config.train.check_memory:
        return None
    device = device if device is not None else resolve_device(config.train.device, config.model.encoder)
    parts = estimate_training_bytes(config, num_entities, num_relations, num_train_triples, eval_candidates, device)
    available = available_bytes(device)
    if available is not None and parts["total"] > available:
        where = "free GPU memory" if device.type == "cuda" else f"MemAvailable in {MEMINFO}"
        shown = ", ".join(f"{name} {gib(value)}" for name, value in parts.items()
                          if name != "total" and value >= parts["total"] / 10)
        raise ConfigError(f"the run needs about {gib(parts['total'])} ({shown}) for {num_entities} entities at "
                          f"model.dim={config.model.dim} with train.optimizer={config.train.optimizer}, but {device} "
                          f"has {gib(available)} available ({where}); make model.dim, train.batch_size or "
                          f"train.num_negatives smaller, or set train.check_memory=false to train anyway")
    return parts


def check_memory_for(config: Config, kg, device=None) -> Optional[Dict[str, int]]:
    """:func:`check_memory` for the dataset ``kg`` (evaluated against OGB's negatives where its protocol is
    OGB's), on ``device`` (the run-time settings' device; default: ``train.device`` resolved here)."""
    from .eval import resolve_protocol

    candidates = None
    if resolve_protocol(kg, config.eval.protocol) == "ogb":
        candidates = 1 + max((int(side.shape[-1]) for sides in kg.negatives.values() for side in sides.values()),
                             default=0)
    return check_memory(config, kg.num_entities, kg.num_relations, len(kg.train), candidates, device)

