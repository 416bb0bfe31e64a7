"""GNN encoders: message passing over the training graph between the entity table and the decoder.

The encoder interface (what :class:`~kbit_dgl.models.model.KGEModel` calls)
--------------------------------------------------------------------------
An encoder is an ``nn.Module`` built by a factory

    factory(graph, num_relations, dim, config) -> nn.Module

* ``graph``: the homogeneous DGL graph of the *training* triples with inverse edges
  (:func:`kbit_dgl.data.graph.to_homogeneous`): one node per entity, edge ``i < num_train`` is
  triple ``i`` (head -> tail) and edge ``i + num_train`` its inverse (tail -> head);
  ``graph.edata["etype"]`` holds relation ids in ``[0, 2 * num_relations)`` (inverse = r + R).
* ``num_relations``: the KG's relation count R (the graph has 2R edge types).
* ``dim``: the width it must return, the decoder's ``entity_dim`` (what TransE, RotatE, DistMult
  ... score); its input rows have that width too.
* ``config``: the ``encoder`` section of the run config (:class:`kbit_dgl.config.EncoderConfig`).

It is called as ``encoder(entity_table, relation_table)`` with the learnable tables
``(num_entities, dim)`` and ``(num_relations, decoder.relation_dim)`` and returns every entity's
representation ``(num_entities, dim)``. That is all full-graph training and evaluation need.

Subclass :class:`GraphEncoder` (implement ``layer``) to also get mini-batch training on sampled
blocks (``encoder.mode: sampled``) and layer-wise chunked inference for evaluation.

Plug in your own encoder either by registering a factory under a name::

    from kbit_dgl.models.encoders import register_encoder

    @register_encoder("my_gat")
    class MyEncoder(GraphEncoder): ...

and setting ``model.encoder: my_gat`` (the module must be imported before training), or by a
dotted path ``model.encoder: mypkg.module:MyEncoder``, imported when the model is built. A run
folder's config.yaml naming a dotted path is refused unless this process asked for that path
(``--allow-import mypkg.module:MyEncoder``, the API's ``allow_import=``, or ``register_encoder``
under that path): importing it runs the module's code.

This is the only models module that imports ``dgl``; :func:`kbit_dgl.train.trainer.model_from_config`
imports it only when ``model.encoder`` is set, so shallow models run where DGL is missing.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional, Tuple

import dgl
import dgl.function as fn
import torch
from dgl.nn import RelGraphConv
from torch import nn

from .. import compat
from ..config import allow_encoder_import, is_import_spec
from ..errors import ConfigError

ENCODERS: Dict[str, Callable[..., nn.Module]] = {}
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "none": None}


def register_encoder(name: str, factory: Optional[Callable[..., nn.Module]] = None):
    """Make a factory ``(graph, num_relations, dim, config) -> nn.Module`` (a class with that
    constructor, typically) available as ``model.encoder: <name>``: ``register_encoder("my_gat", MyGAT)``,
    or as a decorator, ``@register_encoder("my_gat")``. Returns the factory (the decorator without one).

    A registered encoder is always allowed, in a run folder's config.yaml too; ``name`` may be a
    ``package.module:Class`` path, so that run folders naming that path use this factory without
    importing anything.
    """
    def decorate(factory):
        ENCODERS[name.lower()] = factory
        if is_import_spec(name):  # a run folder naming this path gets the factory, nothing is imported
            allow_encoder_import([name])
        return factory
    return decorate if factory is None else decorate(factory)


def resolve_encoder(spec: str) -> Callable[..., nn.Module]:
    """The factory of ``spec``: a registered name, or ``package.module:Attribute`` (imported here).

    A run folder's config.yaml reaches this only after :func:`kbit_dgl.runs.run_config` has refused a
    ``package.module:Attribute`` that this process did not allow (``--allow-import``)."""
    key = spec.lower()
    if key in ENCODERS:
        return ENCODERS[key]
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"model.encoder {spec!r}: cannot import {attribute} from {module_name}: "
                             f"{error}") from error
    raise ConfigError(f"unknown model.encoder {spec!r}; expected one of {sorted(ENCODERS)} "
                     f"or a dotted path package.module:Class")


def build_encoder(spec: str, kg, dim: int, config) -> nn.Module:
    """The encoder ``spec`` over ``kg``'s training graph (with inverse edges), ``dim`` wide."""
    from ..data.graph import to_homogeneous

    graph = to_homogeneous(kg, "train", add_inverse=True)
    return resolve_encoder(spec)(graph, kg.num_relations, dim, config)


def edge_norm(graph) -> torch.Tensor:
    """(E, 1) R-GCN normalisation 1 / in-degree of each edge's destination in ``graph``.

    Computed on the graph given, so a block (sampled, or with the batch's edges excluded)
    normalises by the neighbours it actually has; with every neighbour it equals the full graph's.
    """
    in_degrees = graph.in_degrees().clamp(min=1).float()
    return (1.0 / in_degrees)[graph.edges()[1]].unsqueeze(1)


class GraphEncoder(nn.Module):
    """Base of layer-wise encoders: full graph, sampled blocks and chunked inference from one
    ``layer`` function.

    Subclasses set ``self.num_layers`` and implement
    ``layer(index, graph, h, relation_state) -> (h_dst, relation_state)``: one message-passing
    layer on ``graph`` (the full graph or a block; ``graph.edata["etype"]`` holds relation ids,
    the destination nodes are the first ``graph.num_dst_nodes()`` source nodes) from source
    features ``h`` (num_src, d) to destination features (num_dst, d'). ``relation_state`` starts
    as :meth:`initial_relations` and lets layers update relation embeddings (CompGCN).
    """

    #: whether ``layer`` reads the relation table (CompGCN does). Encoders that do not (R-GCN) can
    #: train with sparse row updates of the tables in ``encoder.mode: sampled``.
    uses_relation_table = True

    def __init__(self, graph, inference_batch_size: int = 4096):
        super().__init__()
        self.graph = graph  # structure, not state: not in state_dict, rebuilt from the KG
        self.inference_batch_size = inference_batch_size
        self.num_layers = 0

    def initial_relations(self, relation_table: torch.Tensor) -> Optional[torch.Tensor]:
        return relation_table

    def layer(self, index: int, graph, h: torch.Tensor, relation_state):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, entity_table: torch.Tensor, relation_table: torch.Tensor) -> torch.Tensor:
        """Full-graph forward: (num_entities, dim) -> (num_entities, dim)."""
        h, relations = entity_table, self.initial_relations(relation_table)
        for index in range(self.num_layers):
            h, relations = self.layer(index, self.graph, h, relations)
        return h

    def _with_etypes(self, block):
        block.edata["etype"] = self.graph.edata["etype"][block.edata[dgl.EID]]
        return block

    def forward_blocks(self, blocks: List, input_rows: torch.Tensor, relation_table: torch.Tensor) -> torch.Tensor:
        """Mini-batch forward on sampled blocks (one per layer, from DGL's samplers over
        ``self.graph``): rows of ``blocks[0].srcdata[dgl.NID]`` -> rows of the last block's
        destination nodes."""
        if len(blocks) != self.num_layers:
            raise ValueError(f"{len(blocks)} blocks for an encoder of {self.num_layers} layers")
        h, relations = input_rows, self.initial_relations(relation_table)
        for index, block in enumerate(blocks):
            h, relations = self.layer(index, self._with_etypes(block), h, relations)
        return h

    @torch.no_grad()
    def inference(self, entity_table: torch.Tensor, relation_table: torch.Tensor,
                  batch_size: Optional[int] = None) -> torch.Tensor:
        """Every entity's representation, layer by layer over the full graph in chunks of
        ``batch_size`` destination nodes (DGL's offline inference): memory holds two
        (num_entities, dim) layers plus one chunk's in-edges, not every layer's edge messages."""
        batch_size = batch_size or self.inference_batch_size
        nodes = torch.arange(self.graph.num_nodes())
        sampler = dgl.dataloading.MultiLayerFullNeighborSampler(1)
        loader = dgl.dataloading.DataLoader(self.graph, nodes, sampler, batch_size=batch_size, shuffle=False,
                                            drop_last=False)
        h, relations = entity_table, self.initial_relations(relation_table)
        for index in range(self.num_layers):
            chunks, next_relations = [], relations
            for input_nodes, output_nodes, blocks in loader:
                out, next_relations = self.layer(index, self._with_etypes(blocks[0]), h[input_nodes], relations)
                chunks.append((output_nodes, out))
            out_dim = chunks[0][1].shape[1]
            next_h = h.new_empty(self.graph.num_nodes(), out_dim)
            for output_nodes, out in chunks:
                next_h[output_nodes] = out
            h, relations = next_h, next_relations
        return h


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"encoder.{key}={value!r}; expected one of {', '.join(choices)}")


def basis_sums(src: torch.Tensor, dst: torch.Tensor, num_dst: int, feat: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """(num_dst, B, d): ``out[v, b] = sum over edges e into v of weights[e, b] * feat[src[e]]``.

    Plain torch (any device, autograd through it): each destination's in-edges are laid out in K slots
    (K its group's largest in-degree; empty slots read source row 0 with weight 0) and summed with one
    batched product (B x K) @ (K x d) per destination. One group holds every destination when that pads
    the edges at most twice (a sampled block: in-degrees capped by the fan-out); otherwise destinations
    are grouped by in-degree in powers of two. Each source row is read once per edge, not once per
    (edge, b) as a broadcast SpMM would, and no (E, B, d) message tensor exists.
    """
    num_edges, num_bases, width = len(src), weights.shape[1], feat.shape[1]
    if num_edges == 0:
        return feat.new_zeros(num_dst, num_bases, width)
    device = dst.device
    dst = dst.long()
    order = torch.argsort(dst, stable=True)
    src_sorted, dst_sorted = src.long()[order], dst[order]
    counts = torch.bincount(dst, minlength=num_dst)
    slot = torch.arange(num_edges, device=device) - (torch.cumsum(counts, 0) - counts)[dst_sorted]
    if num_dst * int(counts.max()) <= 2 * num_edges:
        groups = [(torch.arange(num_dst, device=device), torch.arange(num_edges, device=device))]
    else:  # group k: in-degree in (2^(k-1), 2^k]; destinations without in-edges stay zero
        node_group = torch.ceil(torch.log2(counts.clamp(min=1).double())).long().masked_fill_(counts == 0, -1)
        edge_group = node_group[dst_sorted]
        groups = [(torch.nonzero(node_group == k).squeeze(1), torch.nonzero(edge_group == k).squeeze(1))
                  for k in torch.unique(node_group).tolist() if k >= 0]
    outputs = []
    for nodes, edges in groups:
        slots = max(int(counts[nodes].max()), 1)
        local = torch.empty(num_dst, dtype=torch.long, device=device)
        local[nodes] = torch.arange(len(nodes), device=device)
        position = local[dst_sorted[edges]] * slots + slot[edges]
        rows = len(nodes) * slots
        index = torch.zeros(rows, dtype=torch.long, device=device).index_copy_(0, position, src_sorted[edges])
        xs = feat[index]  # empty slots read row 0, weighted 0
        ws = weights.new_zeros(rows, num_bases).index_copy(0, position, weights[order[edges]])
        outputs.append(torch.bmm(ws.view(len(nodes), slots, num_bases).transpose(1, 2),
                                 xs.view(len(nodes), slots, width)))
    if len(groups) == 1 and len(groups[0][0]) == num_dst:
        return outputs[0]
    nodes = torch.cat([nodes for nodes, _ in groups])
    return feat.new_zeros(num_dst, num_bases, width).index_copy(0, nodes, torch.cat(outputs))


class GroupedRelGraphConv(RelGraphConv):
    """``dgl.nn.RelGraphConv`` (same parameters, same results) computed as: sum each destination's
    in-edges per relation first, then one dense matrix product per relation.

    A relation's weight is linear, so ``sum_e norm_e W_r x_src(e)`` over the edges of relation r
    into node v equals ``W_r (sum_e norm_e x_src(e))``. The inner sums are one fused DGL SpMM
    (``u_mul_e_sum``) from the source nodes to the (relation, destination) pairs present, which
    never materialises a message per edge; the products run on those pairs grouped by relation
    (FB15k-237 with inverses: 150k pairs for 544k edges), and one ``index_add_`` sums them per
    destination.

    Why not ``RelGraphConv`` itself: DGL 2.1's CPU path is slow at FB15k-237 scale: ``basis``
    goes through ``gather_mm`` and ``bdd`` gathers a weight block per edge for 2x2 ``bmm`` s
    (one layer side by side: ``pipelines/bench_rgcn_layer.py``, ``results/bench/rgcn_layer.json``).
    The per-relation weights are composed once
    (bases combined; ``bdd`` blocks laid out as a block-diagonal matrix). Tests check values and
    gradients against ``RelGraphConv``.

    With the ``basis`` regularizer the layer can run basis-first instead:
    ``sum_e norm_e W_r(e) x_src(e) = sum_b V_b^T (sum_e norm_e a_r(e),b x_src(e))``. The inner sums
    (num_dst, num_bases, in) are small batched products per destination (:func:`basis_sums`), and one
    (num_dst, num_bases * in) x (num_bases * in, out) product replaces the per-relation products and the
    composed (num_types, in, out) weights. It does when the edges barely merge into (relation,
    destination) pairs (at least half as many pairs as edges) and the destinations times the bases are
    at most 4x the edges: a sampled block of a large KG (the first block of a wikikg2 step: 105k
    edges, ~87k pairs, 12k destinations; 3.6x faster with the other changes of that benchmark,
    ``results/bench/rgcn_sampled.json``). A full graph whose edges merge into few pairs keeps the
    per-relation form: FB15k-237's 544k edges make 150k pairs, and basis-first measured 0.72x there
    (``pipelines/bench_rgcn_layer.py``). ``basis_first`` (None: by that rule) forces either form.
    """

    basis_first: Optional[bool] = None

    def _use_basis_first(self, pair_keys: torch.Tensor, num_dst: int, num_pairs: Optional[int] = None) -> bool:
        """``pair_keys``: each edge's relation * num_dst + destination; ``num_pairs``: how many distinct
        ones (counted here when not given)."""
        parts = compat.rel_graph_conv_parts(self)
        if parts.regularizer != "basis":
            return False
        if self.basis_first is not None:
            return self.basis_first
        num_edges = len(pair_keys)
        # its dense product has num_bases * num_dst rows against the per-relation products' (pairs) rows,
        # but runs as one large product instead of one small product per relation; its sums read every edge
        if parts.num_bases * num_dst > 4 * num_edges:
            return False
        if num_pairs is None:
            num_pairs = len(torch.unique(pair_keys))
        return 2 * num_pairs >= num_edges

    def _basis_first_messages(self, src, dst, num_dst, feat, etypes, norm):
        parts = compat.rel_graph_conv_parts(self)
        weights = parts.coeff[etypes.long()]  # (E, num_bases)
        if norm is not None:
            weights = weights * norm
        sums = basis_sums(src, dst, num_dst, feat, weights)  # (num_dst, num_bases, in)
        return sums.reshape(num_dst, -1) @ parts.weight.reshape(-1, parts.out_size)

    def relation_weights(self) -> torch.Tensor:
        """(num_types, in, out) weight of every relation, as ``TypedLinear`` applies it."""
        parts = compat.rel_graph_conv_parts(self)
        if parts.regularizer == "bdd":
            blocks = parts.weight.view(parts.num_types, parts.num_bases, parts.submat_in, parts.submat_out)
            eye = torch.eye(parts.num_bases, dtype=blocks.dtype, device=blocks.device)
            return torch.einsum("rbio,bc->rbico", blocks, eye).reshape(parts.num_types, parts.in_size,
                                                                        parts.out_size)
        return parts.relation_weights()

    def forward(self, g, feat, etypes, norm=None, *, presorted=False):
        parts = compat.rel_graph_conv_parts(self)
        src, dst = g.edges()
        num_dst = g.num_dst_nodes()
        pair_keys = etypes.long() * num_dst + dst.long()
        # pair id of each edge: pairs sorted by relation, then destination (one sort serves the choice of
        # form and the per-relation form; only a forced basis-first layer skips it)
        pairs, pair_of_edge = (None, None) if self.basis_first and parts.regularizer == "basis" else \
            torch.unique(pair_keys, return_inverse=True)
        if self._use_basis_first(pair_keys, num_dst, None if pairs is None else len(pairs)):
            return self._finish(g, feat, self._basis_first_messages(src, dst, num_dst, feat, etypes, norm))
        to_pairs = dgl.heterograph({("node", "edge", "pair"): (src, pair_of_edge)},
                                   {"node": g.num_src_nodes(), "pair": len(pairs)})
        sums = dgl.ops.copy_u_sum(to_pairs, feat) if norm is None else dgl.ops.u_mul_e_sum(to_pairs, feat, norm)
        counts = torch.bincount(pairs // num_dst, minlength=parts.num_types).tolist()
        products = [part @ weight for part, weight in zip(torch.split(sums, counts), self.relation_weights().unbind(0))
                    if part.shape[0]]
        messages = torch.cat(products) if products else sums.new_zeros(0, parts.out_size)
        h = feat.new_zeros(num_dst, messages.shape[1]).index_add_(0, pairs % num_dst, messages)
        return self._finish(g, feat, h)

    def _finish(self, g, feat, h):
        """RelGraphConv's steps after the relational sum: layer norm, bias, self-loop, activation, dropout."""
        parts = compat.rel_graph_conv_parts(self)
        if parts.layer_norm is not None:
            h = parts.layer_norm(h)
        if parts.bias is not None:
            h = h + parts.bias
        if parts.self_loop_weight is not None:
            h = h + feat[: g.num_dst_nodes()] @ parts.self_loop_weight
        if parts.activation:
            h = parts.activation(h)
        return parts.dropout(h)


@register_encoder("rgcn")
class RGCNEncoder(GraphEncoder):
    """R-GCN (Schlichtkrull et al. 2018): a stack of ``dgl.nn.RelGraphConv`` over 2R edge types
    (as :class:`GroupedRelGraphConv`, its faster computation of the same layer).

    ``config.regularizer``: ``basis`` (num_bases shared matrices), ``bdd`` (block-diagonal,
    num_bases blocks: dim must be divisible by num_bases) or ``none``. Every layer but the last
    applies ``config.activation`` and ``config.dropout``; the last is linear, so its output
    can take any value a decoder wants (TransE translations, RotatE's complex halves).
    """

    uses_relation_table = False

    def __init__(self, graph, num_relations: int, dim: int, config):
        super().__init__(graph, config.inference_batch_size)
        _check_choice("regularizer", config.regularizer, ("basis", "bdd", "none"))
        _check_choice("activation", config.activation, tuple(ACTIVATIONS))
        if config.layers < 1:
            raise ConfigError(f"encoder.layers must be >= 1, got {config.layers}")
        if config.regularizer == "bdd" and dim % config.num_bases:
            raise ConfigError(f"encoder.regularizer=bdd needs the width ({dim}) divisible by encoder.num_bases "
                             f"({config.num_bases})")
        self.num_layers = config.layers
        regularizer = None if config.regularizer == "none" else config.regularizer
        self.convs = nn.ModuleList()
        for index in range(config.layers):
            last = index == config.layers - 1
            self.convs.append(GroupedRelGraphConv(
                dim, dim, 2 * num_relations, regularizer=regularizer,
                num_bases=config.num_bases if regularizer else None, self_loop=config.self_loop,
                activation=None if last else ACTIVATIONS[config.activation],
                dropout=0.0 if last else config.dropout, layer_norm=config.layer_norm))

    def layer(self, index, graph, h, relation_state):
        return self.convs[index](graph, h, graph.edata["etype"], edge_norm(graph)), relation_state


def _compose(entity: torch.Tensor, relation: torch.Tensor, composition: str) -> torch.Tensor:
    if composition == "sub":
        return entity - relation
    return entity * relation  # mult


class CompGCNLayer(nn.Module):
    """One CompGCN layer (Vashishth et al. 2020): messages W_dir phi(h_u, r) with phi = sub | mult,
    W_in for original edges, W_out for inverse ones, W_loop for the self-loop; relations move by W_rel."""

    def __init__(self, dim: int, num_relations: int, composition: str, dropout: float, activation, layer_norm: bool):
        super().__init__()
        self.num_relations = num_relations
        self.composition = composition
        self.w_in, self.w_out, self.w_loop = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.w_rel = nn.Linear(dim, dim, bias=False)
        self.loop_relation = nn.Parameter(torch.empty(1, dim))
        nn.init.xavier_uniform_(self.loop_relation)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.norm = nn.LayerNorm(dim) if layer_norm else None
        self.activation = activation
        self.dropout = nn.Dropout(dropout)

    def forward(self, graph, h: torch.Tensor, relations: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        etypes = graph.edata["etype"]
        with graph.local_scope():
            graph.srcdata["h"] = h
            graph.edata["r"] = relations[etypes]
            graph.apply_edges(lambda edges: {"c": _compose(edges.src["h"], edges.data["r"], self.composition)})
            composed = graph.edata["c"]
            inverse = etypes >= self.num_relations
            messages = torch.empty_like(composed)
            messages[~inverse] = self.w_in(composed[~inverse])
            messages[inverse] = self.w_out(composed[inverse])
            graph.edata["m"] = messages * edge_norm(graph)
            graph.update_all(fn.copy_e("m", "m"), fn.sum("m", "agg"))
            h_dst = h[: graph.num_dst_nodes()]
            out = graph.dstdata["agg"] + self.w_loop(_compose(h_dst, self.loop_relation, self.composition)) + self.bias
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return self.dropout(out), self.w_rel(relations)


@register_encoder("compgcn")
class CompGCNEncoder(GraphEncoder):
    """CompGCN-style encoder: entity-relation composition (``encoder.composition``: sub | mult)
    instead of R-GCN's per-relation matrices, so its parameters do not grow with the relation
    count. It keeps its own (2R, dim) relation embeddings for the messages; the decoder scores
    with its own relation table (learned jointly), so any decoder fits."""

    def __init__(self, graph, num_relations: int, dim: int, config):
        super().__init__(graph, config.inference_batch_size)
        _check_choice("composition", config.composition, ("sub", "mult"))
        _check_choice("activation", config.activation, tuple(ACTIVATIONS))
        self.num_layers = config.layers
        self.relation_embedding = nn.Parameter(torch.empty(2 * num_relations, dim))
        nn.init.xavier_uniform_(self.relation_embedding)
        self.convs = nn.ModuleList(
            CompGCNLayer(dim, num_relations, config.composition,
                         0.0 if index == config.layers - 1 else config.dropout,
                         None if index == config.layers - 1 else ACTIVATIONS[config.activation], config.layer_norm)
            for index in range(config.layers))

    def initial_relations(self, relation_table):
        return self.relation_embedding

    def layer(self, index, graph, h, relation_state):
        return self.convs[index](graph, h, relation_state)
