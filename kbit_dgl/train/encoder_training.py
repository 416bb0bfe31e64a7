"""Training steps of models with a GNN encoder: full-graph or mini-batch over sampled blocks.

``encoder.mode``:

* ``full``: every step runs the encoder over the whole training graph (all entities), then
  scores the batch with :func:`~kbit_dgl.train.steps.train_step` on rows gathered from it.
  Exact, and fast for small KGs; memory grows with the number of edges times the width.
* ``sampled``: DGL's ``MultiLayerNeighborSampler(fanouts)`` wrapped in
  ``as_edge_prediction_sampler``: a batch of training edges, plus shared uniform negatives,
  gets blocks holding only the neighbourhoods its entities need, so memory is bounded by the
  batch and the fan-outs, not the graph. Each batch's own target edges *and their inverses*
  are removed from its blocks (``exclude="reverse_id"``: edge i and i + num_train are inverses
  in :func:`~kbit_dgl.data.graph.to_homogeneous`), so a triple is never predicted from itself.
* ``auto``: sampled above ``encoder.sampled_threshold_entities`` entities, else full.

Both yield ``(loss, batch size)`` per step, as the trainer's loop wants; heads and tails are
corrupted on alternate steps, as in the shallow path. Sampled runs resume from their
checkpoint but do not replay the uninterrupted run exactly (DGL's sampler has its own RNG).
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple

import dgl
import torch

from ..allocator import kept_freed_memory
from ..config import Config, encoder_mode
from ..data.kg import KG
from ..errors import ConfigError
from ..models.encoders import GraphEncoder
from ..models.model import KGEModel
from . import steps
from .sampling import chunk_layout, positive_batches, uniform_negatives

resolve_mode = encoder_mode  # ``full`` or ``sampled`` for ``encoder.mode`` (kbit_dgl.config)


def layer_fanouts(config: Config, num_layers: int) -> list:
    """``encoder.fanouts`` for ``num_layers`` layers: one value is used for every layer."""
    fanouts = list(config.encoder.fanouts)
    if len(fanouts) == 1:
        return fanouts * num_layers
    if len(fanouts) != num_layers:
        raise ConfigError(f"encoder.fanouts={fanouts}: give one value or one per layer ({num_layers})")
    return fanouts


class SharedUniformNegatives:
    """DGL negative sampler giving each chunk of a batch one shared set of uniform entities.

    Returns ``(ids, ids)`` pairs so the negatives' nodes join the batch's sampled computation;
    the trainer reads them back, in order, from the negative graph's destinations.
    """

    def __init__(self, num_entities: int, num_negatives: int, chunk_size: int, generator: torch.Generator):
        self.num_entities, self.num_negatives, self.chunk_size = num_entities, num_negatives, chunk_size
        self.generator = generator

    def __call__(self, graph, eids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        num_chunks, _ = chunk_layout(len(eids), self.chunk_size)
        ids = uniform_negatives(num_chunks, self.num_negatives, self.num_entities, self.generator).flatten()
        return ids, ids


def edge_loader(graph, num_train: int, fanouts, batch_size: int, negative_sampler=None, shuffle: bool = True,
                use_ddp: bool = False):
    """DGL DataLoader over training edges ``0 .. num_train - 1`` of ``graph`` (with inverse edges
    ``num_train ..``): yields ``(input_nodes, pair_graph, [negative_graph,] blocks)`` whose blocks
    exclude the batch's edges and their inverses. ``use_ddp``: this process's share of the edges
    (DGL's ``DataLoader(use_ddp=True)``, in a ``torch.distributed`` group)."""
    reverse_eids = torch.cat([torch.arange(num_train, 2 * num_train), torch.arange(num_train)])
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.MultiLayerNeighborSampler(fanouts), exclude="reverse_id", reverse_eids=reverse_eids,
        negative_sampler=negative_sampler)
    return dgl.dataloading.DataLoader(graph, torch.arange(num_train), sampler, batch_size=batch_size,
                                      shuffle=shuffle, drop_last=False, use_ddp=use_ddp)


def encoder_epoch_losses(model: KGEModel, kg: KG, config: Config, generator: torch.Generator,
                         direction: Callable[[], str], weights: Optional[torch.Tensor], group=None,
                         mode: Optional[str] = None) -> Callable[[], Iterator[Tuple[torch.Tensor, int]]]:
    """A function giving one epoch's ``(loss, batch size)`` steps for ``model`` (with an encoder).

    ``direction()`` names the side the next step corrupts (the trainer's :meth:`Trainer.direction`);
    ``group`` is the trainer's process group (None or one process: the whole batch); ``mode`` the
    resolved ``encoder.mode`` (:class:`kbit_dgl.runtime.Runtime`; default: resolved here)."""
    mode = mode or resolve_mode(config, kg.num_entities)
    if mode == "full":
        return lambda: _full_graph_losses(model, kg, config, generator, direction, weights)
    if not isinstance(model.encoder, GraphEncoder):
        raise ConfigError(f"encoder.mode=sampled needs an encoder built on kbit_dgl.models.encoders.GraphEncoder "
                         f"(it runs layer by layer on sampled blocks); {type(model.encoder).__name__} is not")
    if model.encoder.graph.num_edges() != 2 * len(kg.train):
        raise ConfigError("encoder.mode=sampled needs the encoder's graph to be the training graph with inverse "
                         "edges (edge i + num_train the inverse of edge i), as build_encoder makes it")
    dgl.seed(config.train.seed)
    negatives = SharedUniformNegatives(kg.num_entities, config.train.num_negatives,
                                       config.train.negative_chunk_size, generator)
    share = 1 if group is None else group.world_size  # N processes: each its share of every epoch's batches
    loader = edge_loader(model.encoder.graph, len(kg.train), layer_fanouts(config, model.encoder.num_layers),
                         max(1, config.train.batch_size // share), negatives, use_ddp=share > 1)
    return lambda: _sampled_losses(model, loader, config, direction, weights, share)


def _full_graph_losses(model, kg, config, generator, direction, weights):
    for batch_ids in positive_batches(len(kg.train), config.train.batch_size, generator):
        all_rows = model.all_entities()  # one encoder pass over the whole graph per step
        yield steps.train_step(model, kg.train[batch_ids], config, generator, direction(),
                         None if weights is None else weights[batch_ids], all_rows=all_rows), len(batch_ids)


def sampled_batch_loss(model, batch, config: Config, direction: str,
                       weights: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, int]:
    """``(loss, batch size)`` of one batch ``(input_nodes, pair_graph, negative_graph, blocks)`` of
    :func:`edge_loader` with :class:`SharedUniformNegatives`: the encoder over the blocks, then the decoder."""
    input_nodes, pair_graph, negative_graph, blocks = batch
    encoder = model.encoder
    rows = encoder.forward_blocks(blocks, model.entity(input_nodes), model.relation.weight)
    rows = model.decoder.prepare_entities(rows)  # rows of the batch's nodes (pair graph's ids)
    edge_ids = pair_graph.edata[dgl.EID]
    heads, tails = pair_graph.edges()
    relations = encoder.graph.edata["etype"][edge_ids]
    num_chunks, _ = chunk_layout(len(edge_ids), config.train.negative_chunk_size)
    negatives = negative_graph.edges()[1].view(num_chunks, -1)
    loss = steps.batch_loss(model.decoder, rows[heads], model.relations(relations), rows[tails], rows[negatives],
                            config.train, direction, None if weights is None else weights[edge_ids])
    return loss, len(edge_ids)


def _sampled_losses(model, loader, config, direction, weights, share: int = 1):
    # the trainer's backward and optimizer step run while this generator is suspended, so inside this
    # scope too: the step's large block tensors reuse freed memory (kbit_dgl/allocator.py)
    with kept_freed_memory():
        for batch in loader:
            loss, size = sampled_batch_loss(model, batch, config, direction(), weights)
            yield loss, size * share  # counted for all processes, as the shallow path counts whole batches
