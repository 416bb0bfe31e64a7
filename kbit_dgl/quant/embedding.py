"""``QuantizedEmbedding``: a packed k-bit table that gathers rows by id and dequantises on the fly."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import nn

from ..models.kernels import RowSource
from .packing import unpack_bits
from .quantizers import (
    QuantSpec,
    dequantize_codes,
    dequantize_pq,
    quantize_table,
    spec_from_header,
    stored_scales,
    table_nbytes,
)

STATE_KEYS = ("header", "codes", "codebook", "scales", "scale_groups", "offsets", "offset_groups")
SCALE_KEYS = ("scales", "scale_groups", "offsets", "offset_groups")


class QuantizedEmbedding(nn.Module):
    """A (num_embeddings, embedding_dim) table held as packed codes + block scales.

    ``forward(ids)`` -> float32 (*ids.shape, embedding_dim), decoding only the rows asked for;
    ``dequantize_all()`` decodes every row, ``row_chunk`` rows at a time. The buffers are the
    quantised state of :func:`~kbit_dgl.quant.quantizers.quantize_table`; ``nbytes`` is what
    they occupy (and what a saved model file stores for this table).
    """

    def __init__(self, state: Dict[str, torch.Tensor]):
        super().__init__()
        unknown = set(state) - set(STATE_KEYS)
        if unknown or "header" not in state or "codes" not in state:
            raise ValueError(f"not a quantized table state: keys {sorted(state)}")
        self.num_embeddings, self.embedding_dim, self.spec = spec_from_header(state["header"])
        for key in STATE_KEYS:
            self.register_buffer(key, state.get(key))

    @classmethod
    def from_float(cls, table: torch.Tensor, spec: QuantSpec,
                   codebook: Optional[torch.Tensor] = None) -> "QuantizedEmbedding":
        """Quantise a float table (rows, cols) with ``spec``."""
        return cls(quantize_table(table, spec, codebook))

    def quantized_state(self) -> Dict[str, torch.Tensor]:
        """The buffers that exist, by name (what gets saved)."""
        return {key: value for key, value in self._buffers.items() if value is not None}

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def _decode(self, codes: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
        """Packed rows (n, bytes) or float rows -> float32 (n, embedding_dim); ``rows`` are their ids."""
        spec = self.spec
        if spec.is_float:
            return codes.float()
        if spec.is_pq:
            cols = self.embedding_dim
            return dequantize_pq(unpack_bits(codes, spec.code_bits(cols), spec.num_codes(cols)), self.codebook, cols)
        values = unpack_bits(codes, spec.bits, self.embedding_dim)
        if not spec.has_scales:
            return dequantize_codes(values, self.codebook, None, None, 1)
        scales, offsets = stored_scales(self.quantized_state(), rows, spec.num_blocks(self.embedding_dim))
        return dequantize_codes(values, self.codebook, scales, offsets, spec.block_width(self.embedding_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``ids`` (any shape, int64) -> float32 (*ids.shape, embedding_dim)."""
        flat = ids.reshape(-1).to(self.device)
        return self._decode(self.codes[flat], flat).view(*ids.shape, self.embedding_dim)

    def dequantize_all(self, row_chunk: int = 1 << 16) -> torch.Tensor:
        """Every row, float32 (num_embeddings, embedding_dim), decoded ``row_chunk`` rows at a time."""
        parts = []
        for start in range(0, self.num_embeddings, row_chunk):
            rows = torch.arange(start, min(start + row_chunk, self.num_embeddings), device=self.device)
            parts.append(self._decode(self.codes[start:start + row_chunk], rows))
        return torch.cat(parts) if parts else torch.empty(0, self.embedding_dim, device=self.device)

    @property
    def nbytes(self) -> int:
        """Bytes of every stored tensor (codes, scales, offsets, codebook, header)."""
        return sum(value.numel() * value.element_size() for value in self.quantized_state().values())

    def nbytes_breakdown(self) -> Dict[str, int]:
        """Measured bytes as codes / scales / metadata / total (same keys as ``table_nbytes``)."""
        state = self.quantized_state()
        size = {key: value.numel() * value.element_size() for key, value in state.items()}
        codes = size["codes"]
        scales = sum(size.get(key, 0) for key in SCALE_KEYS)
        return {"codes": codes, "scales": scales, "metadata": self.nbytes - codes - scales, "total": self.nbytes}

    def expected_nbytes(self) -> Dict[str, int]:
        """The byte accounting from shape and spec alone (:func:`table_nbytes`)."""
        return table_nbytes(self.num_embeddings, self.embedding_dim, self.spec)

    def extra_repr(self) -> str:
        spec = self.spec
        kind = f"fp{spec.bits}" if spec.is_float else f"{spec.bits}-bit {spec.dtype}"
        return f"{self.num_embeddings}, {self.embedding_dim}, {kind}, block={spec.block}, nbytes={self.nbytes}"


class PackedRows(RowSource):
    """The rows of a :class:`QuantizedEmbedding`, decoded by id inside the scoring kernels.

    ``rows(ids, codes, codebook[, scales[, offsets]])`` gathers the packed codes of ``ids``, unpacks
    them, looks them up in the codebook and applies the block scales (and offsets), then
    ``prepare`` (the decoder's ``prepare_entities``): the same arithmetic as ``dequantize_all``, so
    a kernel reading k-bit codes scores as the dequantized float table does, while only the packed
    table (and its scales as float32, ``4 * rows * blocks`` bytes) stays resident.
    """

    def __init__(self, table: QuantizedEmbedding, prepare: Optional[Callable] = None, prepare_key: str = ""):
        spec = table.spec
        self.num_rows, self.dim, self.spec = table.num_embeddings, table.embedding_dim, spec
        self.prepare = prepare
        self.width = spec.block_width(self.dim) if spec.has_scales else 0
        tensors = [table.codes]
        if not spec.is_float:
            tensors.append(table.codebook)
            if spec.has_scales:
                scales, offsets = stored_scales(table.quantized_state(), None, spec.num_blocks(self.dim))
                tensors += [scales.contiguous()] + ([offsets.contiguous()] if offsets is not None else [])
        self.tensors = tuple(tensors)
        self.key = ("packed", spec.bits, spec.dtype if spec.is_pq else spec.is_float, self.width, self.dim,
                    len(tensors), prepare_key)

    def native_layout(self) -> Optional[dict]:
        """The stored tensors for ``models.native.packed_ids`` (CPU, 1/2/4/8-bit codes, no ``prepare``), else None.

        Built once: scoring asks for it per batch and per block of rows."""
        if not hasattr(self, "_native_layout"):
            self._native_layout = self._build_native_layout()
        return self._native_layout

    def _build_native_layout(self) -> Optional[dict]:
        from ..models.decoders import Decoder

        identity = self.prepare is None or getattr(self.prepare, "__func__", None) is Decoder.prepare_entities
        if self.spec.is_float or self.spec.is_pq or 8 % self.spec.bits or not identity:
            return None
        codes, codebook, *rest = self.tensors
        if codes.dtype != torch.uint8 or codes.device.type != "cpu":
            return None
        # a codebook may have fewer entries than 2**bits (symmetric int: 2**bits - 1); codes beyond it
        # (a damaged table) decode to NaN, which evaluation refuses, where the compiled path raises
        missing = codebook.new_full((2 ** self.spec.bits - len(codebook),), float("nan"))
        codebook = torch.cat([codebook.float(), missing])
        layout = {"codes": codes.contiguous(), "codebook": codebook.contiguous(), "bits": self.spec.bits}
        if rest:
            layout.update(scales=rest[0].float().contiguous(), width=self.width)
            if len(rest) > 1:
                layout["offsets"] = rest[1].float().contiguous()
        return layout

    def rows(self, ids: torch.Tensor, codes: torch.Tensor, codebook: Optional[torch.Tensor] = None,
             scales: Optional[torch.Tensor] = None, offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
        flat = ids.reshape(-1)
        if self.spec.is_float:
            values = codes[flat].float()
        elif self.spec.is_pq:  # each sub-vector's code, then its centroid: dequantize_pq's arithmetic
            code = self._codes(codes[flat], self.spec.code_bits(self.dim), self.spec.num_codes(self.dim))
            values = dequantize_pq(code, codebook, self.dim)
        else:
            # Each number as one gather expression (its byte(s), shift, codebook entry, block scale), so
            # that a compiled kernel reads the packed bytes and never writes the decoded rows out. The
            # arithmetic is dequantize_codes': codebook[code] * scale (+ offset), in float32.
            code = self._codes(codes[flat], self.spec.bits, self.dim)
            values = codebook[code.long()]
            if scales is not None:
                block = torch.arange(self.dim, device=codes.device) // self.width
                values = values * scales[flat][:, block]
                if offsets is not None:
                    values = values + offsets[flat][:, block]
        values = values.view(*ids.shape, self.dim)
        return self.prepare(values) if self.prepare is not None else values

    @staticmethod
    def _codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
        """The ``count`` codes of ``bits`` bits in each packed row (n, bytes) -> int32 (n, count), one
        gather expression per code (its byte(s) and shift), so that a compiled kernel fuses it."""
        start = torch.arange(count, device=packed.device) * bits
        first = start // 8
        word = packed[:, first].to(torch.int32)
        if 8 % bits:  # 3, 5, 6, 7 bits: a code may straddle two bytes (the last byte never needs a next)
            word = word | (packed[:, (first + 1).clamp(max=packed.shape[1] - 1)].to(torch.int32) << 8)
        return (word >> (start % 8).to(torch.int32)) & ((1 << bits) - 1)
