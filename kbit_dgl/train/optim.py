"""Optimizers by name (``train.optimizer``): dense Adam, or sparse row updates of the tables.

* ``adam``: Adam over every parameter (:class:`Adam`: torch's, with a one-pass CPU update); each
  step updates the whole of both tables and their moment estimates, O(num_entities * dim) per step.
* ``sparse_adam``: ``torch.optim.SparseAdam`` (lazy Adam) on the embedding tables, which then
  need ``nn.Embedding(sparse=True)``; only the rows a batch looked up (positives and negatives)
  and their moments move, with one global step count for the bias correction. Dense parameters
  (e.g. an encoder's) get ``torch.optim.Adam``.
* ``sparse_adagrad``: :class:`SparseAdagrad` over every parameter: Adagrad that adds the squared
  gradient into the touched rows of its state and updates those rows alone, with index ops. The
  untouched rows have zero gradient, so dense Adagrad leaves them (and their state) as they are
  too: given the same gradient, the result equals ``torch.optim.Adagrad`` bit for bit. (On large
  batches ``nn.Embedding``'s dense backward may sum a repeated row's gradient in another order
  than the sparse one, so the gradients themselves can differ in the last bit.)
  ``torch.optim.Adagrad`` has a sparse path as well, but it computes ``p - lr * (g / std)`` where
  its dense path computes ``addcdiv(p, g, std, value=-lr)``, which differs in the last bit.
  DGL-KE uses Adagrad too, with one accumulator per row (the mean of the squared gradient) to
  save memory; this one keeps one per number, as torch does. Adagrad usually wants a larger
  ``train.lr`` than Adam (DGL-KE uses 0.01 to 0.25).

* ``rowwise_adagrad``: :class:`RowwiseAdagrad`, DGL-KE's Adagrad: sparse row updates with one
  accumulator per table row (the mean over the row of the squared gradient) instead of one per
  number, so its state is ``num_entities`` floats rather than a second copy of the table: at
  wikikg2's size (2.5M x 500) 10 MB instead of 5 GB. Dense parameters (an encoder's) get
  :class:`SparseAdagrad`'s per-number state.

Every optimizer here has ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict``, so the
trainer's checkpoints and resume work the same for all.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from .. import compat
from ..config import OPTIMIZERS, needs_sparse_tables  # noqa: F401  (the names live with the config)


class _AdagradBase(torch.optim.Optimizer):
    """The loop the Adagrads here share: ``lr`` / ``eps`` checks, a ``sum`` and ``step`` state per
    parameter (``sum`` shaped by :meth:`_sum_shape`), and :meth:`_update` per parameter with a gradient."""

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10):
        if lr <= 0 or eps < 0:
            raise ValueError(f"{type(self).__name__} needs lr > 0 and eps >= 0, got lr={lr}, eps={eps}")
        super().__init__(params, {"lr": lr, "eps": eps})
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param] = {"step": torch.tensor(0.0), "sum": torch.zeros(
                    self._sum_shape(param), dtype=param.dtype, device=param.device)}

    def _sum_shape(self, param: torch.Tensor) -> torch.Size:
        return param.shape

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    state = self.state[param]
                    state["step"] += 1
                    self._update(param, param.grad, state["sum"], group["lr"], group["eps"])
        return loss


class SparseAdagrad(_AdagradBase):
    """Adagrad (Duchi et al. 2011) whose sparse-gradient update touches only the gradient's rows.

    For a row-sparse gradient (what ``nn.Embedding(sparse=True)`` produces: indices (1, nnz),
    values (nnz, dim)) a step costs O(nnz * dim), whatever the table's size; a dense gradient gets
    torch's dense Adagrad update. Both equal ``torch.optim.Adagrad(lr=lr, eps=eps)`` on the dense
    gradient exactly. State per parameter: ``sum`` (accumulated squared gradients) and ``step``.
    """

    def _update(self, param, grad, state_sum, lr, eps) -> None:
        if not grad.is_sparse:
            state_sum.addcmul_(grad, grad, value=1)
            param.addcdiv_(grad, state_sum.sqrt().add_(eps), value=-lr)
            return
        grad = grad.coalesce()  # a row looked up twice gets one summed gradient, as dense
        rows, values = grad.indices()[0], grad.values()
        if rows.numel() == 0:
            return
        # the dense update's own ops on the gathered rows, so the rounding is the same too
        row_sum = state_sum.index_select(0, rows).addcmul_(values, values, value=1)
        state_sum.index_copy_(0, rows, row_sum)
        std = row_sum.sqrt_().add_(eps)
        param.index_copy_(0, rows, param.index_select(0, rows).addcdiv_(values, std, value=-lr))


def rowwise_adagrad_rows(values: torch.Tensor, row_sums: torch.Tensor, lr: float,
                         eps: float) -> "tuple[torch.Tensor, torch.Tensor]":
    """One step of DGL-KE's row-wise Adagrad for n distinct rows, the one formula every mode uses
    (:class:`RowwiseAdagrad`, and the DGL subclasses of several processes and of DistDGL).

    ``values`` (n, d): each row's gradient; ``row_sums`` (n,): its accumulator. Returns the new
    accumulators ``row_sums + mean(values**2)`` (n,) and the rows' change
    ``-lr * values / (sqrt(new) + eps)`` (n, d), to be added to the rows.
    """
    row_sums = row_sums + values.pow(2).mean(1)
    return row_sums, values / (row_sums.sqrt() + eps).unsqueeze(1) * -lr


class RowwiseAdagrad(_AdagradBase):
    """Adagrad with one accumulator per row of each 2-D parameter (DGL-KE's ``row_sparse`` Adagrad).

    For a gradient ``g`` of row ``i``: ``state[i] += mean(g * g)``; ``row_i -= lr * g / (sqrt(state[i]) + eps)``.
    Row-sparse gradients (``nn.Embedding(sparse=True)``) touch only their rows; a row looked up
    twice in a step gets its summed gradient once. Parameters of other shapes keep one accumulator
    per number (plain Adagrad). State per parameter: ``sum`` and ``step``.
    """

    def _sum_shape(self, param: torch.Tensor) -> torch.Size:
        return param.shape[:1] if param.dim() == 2 else param.shape

    def _update(self, param, grad, state_sum, lr, eps) -> None:
        if param.dim() != 2:
            grad = grad.to_dense() if grad.is_sparse else grad
            state_sum.addcmul_(grad, grad, value=1)
            param.addcdiv_(grad, state_sum.sqrt().add_(eps), value=-lr)
            return
        if grad.is_sparse:
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
        else:
            rows, values = torch.arange(param.shape[0], device=param.device), grad
        if rows.numel() == 0:
            return
        row_sum, change = rowwise_adagrad_rows(values, state_sum.index_select(0, rows), lr, eps)
        state_sum.index_copy_(0, rows, row_sum)
        param.index_add_(0, rows, change)


class _NativeStep:
    """The step of the native Adams below: torch's own step where ``_native_ok`` finds the kernels do
    not apply, else the closure, then ``_update`` per parameter with a gradient, its state created and
    its step counted as torch does (so checkpoints load either way)."""

    @torch.no_grad()
    def step(self, closure=None):
        kernels = self._native_ok()
        if kernels is None:
            return self._torch_step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = self._first_step()
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                self._update(kernels, p, state, group)
        return loss

    def _torch_step(self, closure):
        return super().step(closure)  # the torch optimizer this one extends


class Adam(_NativeStep, torch.optim.Adam):
    """``torch.optim.Adam`` whose update of dense float32 CPU parameters is one pass of the native
    kernel (``models/csrc``: ``adam_step``) instead of torch's six; the same state (``step``,
    ``exp_avg``, ``exp_avg_sq``), so checkpoints load either way. Anything else (weight decay,
    amsgrad, maximize, a GPU, other dtypes, the kernels unavailable) takes torch's own step.
    The two agree to float32 rounding, not bit for bit (``tests/test_native_kernels.py``).

    A row-sparse gradient (``nn.Embedding(sparse=True)``, which the trainer builds for Adam on the
    CPU: :func:`kbit_dgl.config.sparse_table_gradients`) is the dense gradient that is zero outside
    its rows: every row and its moments still move, as with the dense gradient (this is Adam, not
    ``sparse_adam``'s lazy update), but the table-sized gradient is never made (``adam_step_rows``).
    Where the kernel does not apply, the gradient is made dense and torch's step runs.
    """

    def __init__(self, params, lr: float = 1e-3, **kwargs):
        kwargs.setdefault("foreach", True)  # torch's fallback: one multi-tensor op per term, not a loop
        super().__init__(params, lr=lr, **kwargs)

    def _torch_step(self, closure):
        for group in self.param_groups:  # torch's Adam refuses sparse gradients: make them dense
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    p.grad = p.grad.to_dense()
        return super()._torch_step(closure)

    def _native_ok(self):
        """The native kernels' module where this step can use it, else None (torch's step)."""
        from ..models import native
        for group in self.param_groups:
            if group["weight_decay"] or group["amsgrad"] or group["maximize"] or group.get("capturable") \
                    or group.get("differentiable") or torch.is_tensor(group["lr"]):
                return None
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.device.type != "cpu" or g.dtype != torch.float32 or p.dtype != torch.float32 \
                        or not p.is_contiguous():
                    return None
                if g.is_sparse:
                    if p.dim() != 2 or g.sparse_dim() != 1:
                        return None
                elif not g.is_contiguous():
                    return None
        return native.module()

    @staticmethod
    def _first_step():
        return torch.tensor(0.0, dtype=torch.float32)  # as torch.optim.Adam keeps it

    @staticmethod
    def _update(kernels, p, state, group) -> None:
        beta1, beta2 = group["betas"]
        args = (float(group["lr"]), beta1, beta2, group["eps"], int(state["step"].item()))
        if p.grad.is_sparse:  # uncoalesced is fine: the kernel sums a repeated row's values
            rows, values = compat.sparse_rows(p.grad)
            kernels.adam_step_rows(p, rows.contiguous(), values.contiguous(),
                                   state["exp_avg"], state["exp_avg_sq"], *args)
        else:
            kernels.adam_step(p, p.grad, state["exp_avg"], state["exp_avg_sq"], *args)


class SparseAdam(_NativeStep, torch.optim.SparseAdam):
    """``torch.optim.SparseAdam`` whose update of float32 CPU tables is one pass over each gradient row
    (the native kernel ``sparse_adam_rows``) instead of torch's sparse_mask / add / div passes: ~0.13 s
    -> ~0.04 s a step for 100k rows of 200 (a sampled R-GCN step at wikikg2 size). The same state
    (``step``, ``exp_avg``, ``exp_avg_sq``), so checkpoints load either way; anything else (a GPU,
    other dtypes, ``maximize``, the kernels unavailable) takes torch's own step. The two agree to
    float32 rounding (``tests/test_native_kernels.py``)."""

    def _native_ok(self):
        from ..models import native
        for group in self.param_groups:
            if group.get("maximize") or torch.is_tensor(group["lr"]):
                return None
            for p in group["params"]:
                g = p.grad
                if g is not None and (not g.is_sparse or g.device.type != "cpu" or g.dtype != torch.float32
                                      or p.dtype != torch.float32 or p.dim() != 2 or not p.is_contiguous()
                                      or g.sparse_dim() != 1):
                    return None
        return native.module()

    @staticmethod
    def _first_step():
        return 0  # as torch.optim.SparseAdam keeps it

    @staticmethod
    def _update(kernels, p, state, group) -> None:
        grad = p.grad.coalesce()  # the update is non-linear: each row id once
        if grad.values().shape[0]:  # coalesced: the public indices() / values() apply
            beta1, beta2 = group["betas"]
            kernels.sparse_adam_rows(p, grad.indices()[0].contiguous(), grad.values().contiguous(),
                                     state["exp_avg"], state["exp_avg_sq"], float(group["lr"]), beta1, beta2,
                                     group["eps"], int(state["step"]))


class OptimizerGroup:
    """Several optimizers stepped as one (sparse tables + dense rest), checkpointed together."""

    def __init__(self, optimizers: List[torch.optim.Optimizer]):
        self.optimizers = optimizers

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        states = state.get("optimizers") if isinstance(state, dict) else None
        if states is None or len(states) != len(self.optimizers):
            raise ValueError(f"optimizer state holds {len(states) if states is not None else 'no'} optimizers, "
                             f"expected {len(self.optimizers)}")
        for optimizer, optimizer_state in zip(self.optimizers, states):
            optimizer.load_state_dict(optimizer_state)


def param_groups(optimizer) -> List[Dict[str, Any]]:
    """Every parameter group of ``optimizer`` (a torch optimizer or an :class:`OptimizerGroup`)."""
    optimizers = optimizer.optimizers if isinstance(optimizer, OptimizerGroup) else [optimizer]
    return [group for inner in optimizers for group in inner.param_groups]


def scale_lr(optimizer, factor: float) -> float:
    """Multiply every group's learning rate by ``factor``; returns the new rate of the first group."""
    groups = param_groups(optimizer)
    for group in groups:
        group["lr"] *= factor
    return groups[0]["lr"]


def table_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The float parameters of the entity and relation tables (the latent tables under QAT)."""
    params = []
    for table in (model.entity, model.relation):
        if not getattr(table, "sparse", False):
            raise ValueError("a sparse optimizer needs the tables built with sparse=True "
                             "(build_model(..., sparse=True))")
        params.extend(table.parameters())
    return params


def make_optimizer(model: nn.Module, name: str, lr: float):
    """The optimizer ``name`` (see :data:`OPTIMIZERS`) over ``model``'s parameters at learning rate ``lr``.

    Sparse names require ``model`` built with ``sparse=True``. Returns a ``torch.optim`` optimizer,
    or an :class:`OptimizerGroup` when tables and dense parameters need different ones.
    """
    needs_sparse_tables(name)  # refuses unknown names
    if name == "adam":
        return Adam(model.parameters(), lr=lr)
    if name == "adagrad":  # dense, torch's (kbc's optimizer)
        return torch.optim.Adagrad(model.parameters(), lr=lr)
    if name == "sparse_adagrad":
        table_parameters(model)  # fails clearly on dense tables
        return SparseAdagrad(model.parameters(), lr=lr)
    if name == "rowwise_adagrad":
        tables = table_parameters(model)
        table_ids = {id(p) for p in tables}
        dense = [p for p in model.parameters() if id(p) not in table_ids]
        rowwise = RowwiseAdagrad(tables, lr=lr)
        return OptimizerGroup([rowwise, SparseAdagrad(dense, lr=lr)]) if dense else rowwise
    tables = table_parameters(model)
    table_ids = {id(p) for p in tables}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    sparse_adam = SparseAdam(tables, lr=lr)
    if not dense:
        return sparse_adam
    return OptimizerGroup([sparse_adam, Adam(dense, lr=lr)])
