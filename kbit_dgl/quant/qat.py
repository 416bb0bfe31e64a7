"""Quantisation-aware training: fake quantisation with a straight-through estimator (STE).

The forward pass sees the table exactly as its packed k-bit form decodes
(:func:`~kbit_dgl.quant.quantizers.quantize_dequantize`); the backward pass treats rounding as
the identity (Bengio et al. 2013), so the latent float table keeps learning from gradients that
rounding would zero out. :func:`attach_fake_quant` registers this on a model's tables with
``torch.nn.utils.parametrize``, so every use of ``model.entity.weight`` (the lookups in training,
``all_entities()`` in validation) goes through it; quantising the trained run afterwards with the
same spec gives a model that scores exactly as validated.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ConfigError
from .model import table_specs
from .quantizers import QuantSpec, quantize_dequantize


def fake_quantize(table: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Quantise-dequantise ``table`` (rows, cols) in the forward pass, identity gradient backward."""
    with torch.no_grad():
        decoded = quantize_dequantize(table, spec)
    return table + (decoded - table).detach()


class FakeQuantize(nn.Module):
    """A parametrization: weight -> fake_quantize(weight, spec)."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        if spec.dtype in ("quantile_empirical", "pq"):
            raise ConfigError(f"QAT needs a fixed codebook; {spec.dtype} learns its codebook from the trained "
                              f"table (use dtype quantile, NF-k, or int)")
        self.spec = spec

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize(weight, self.spec)

    def extra_repr(self) -> str:
        return f"bits={self.spec.bits}, dtype={self.spec.dtype}, block={self.spec.block}"


def attach_fake_quant(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Fake-quantise ``model.entity`` and ``model.relation`` (decoder-specific specs, see
    :func:`~kbit_dgl.quant.model.table_specs`) from now on; returns the model.

    The state dict then names the latent tables ``entity.parametrizations.weight.original``.
    Every access to a table quantises all of it, O(rows * cols) per access, like Adam's dense
    update of the same table.
    """
    entity_spec, relation_spec = table_specs(model.decoder, spec)
    parametrize.register_parametrization(model.entity, "weight", FakeQuantize(entity_spec))
    parametrize.register_parametrization(model.relation, "weight", FakeQuantize(relation_spec))
    return model


def qat_spec(bits: int, dtype: str = "int", block: int = 64, scale_dtype: str = "fp16") -> Optional[QuantSpec]:
    """The spec of the ``train.qat_*`` config keys, or None when QAT is off (bits 0 or 32)."""
    if bits in (0, 32):
        return None
    return QuantSpec(bits, dtype, block, scale_dtype)


def attach_qat(model: nn.Module, train_config) -> nn.Module:
    """Attach fake quantisation as ``train.qat_bits`` / ``qat_dtype`` / ``qat_block`` ask; a no-op when off."""
    spec = qat_spec(train_config.qat_bits, train_config.qat_dtype, train_config.qat_block)
    return model if spec is None else attach_fake_quant(model, spec)
