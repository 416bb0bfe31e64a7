"""Blockwise k-bit quantisation of a 2-D float table, its inverse, and its exact byte count.

A table (rows, cols) is cut along each row into blocks of ``B`` numbers (the last block of a row
may be shorter; ``B = 0`` or ``B >= cols`` means one block per row). Each block stores one scale
(and, for ``int_asym``, one offset), and each number a k-bit code into the data type's codebook
(``codebooks.py``): ``value = offset + scale * codebook[code]``, the code being the nearest
codebook entry to the block-normalised number. Scales are absmax (the block's largest magnitude)
for the symmetric types and max - min for ``int_asym``; they are stored as ``QuantSpec.scale_dtype``.

``pq`` tables (product quantisation, Jegou et al. 2011, as FAISS's ``IndexPQ``) cut each row into
sub-vectors of ``B`` numbers and store, per sub-vector, one code of ``k * B`` bits (at most 8): the
index of the nearest of ``2**(k*B)`` centroids, learned by k-means on that sub-vector's column block
(:mod:`.kmeans`). ``k`` stays the bits per number (2-bit pq: one byte per 4 numbers), there are no
scales, and the codebook is (sub-vectors, centroids, ``B``). Data dependent like
``quantile_empirical``, so QAT cannot use it.

``phase`` tables (RotatE's relation rows, angles in radians) have no scale: an angle is rounded
to the nearest of 2**k points evenly spaced on the circle, wrapping at +-pi, so the angular error
is at most pi / 2**k whatever the angles' range. ``bits = 16`` / ``32`` store the table as
fp16 / fp32 without codes or scales (the upper end of a bits sweep).

The quantised form of a table is a dict of tensors (the state of
:class:`~kbit_dgl.quant.embedding.QuantizedEmbedding`): ``header`` int64 (7,), ``codes`` uint8
(rows, ceil(cols*k/8)) packed row by row (pq: ceil(sub-vectors*k*B/8)), ``codebook`` float32, and
where used ``scales`` /
``offsets`` (rows, blocks) with int8's ``scale_groups`` / ``offset_groups``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

from ..errors import ConfigError
from .codebooks import codebook as make_codebook
from .codebooks import codebook_size, phase_codebook
from .packing import pack_bits, packed_bytes
from .scales import SCALE_DTYPES, decode_scales, encode_scales, scale_nbytes

DTYPES = ("int", "int_asym", "float", "quantile", "quantile_empirical", "phase", "pq")  # append only: headers
PQ_MAX_CODE_BITS = 8  # pq codes are packed like the scalar codes (1..8 bits): at most 256 centroids
FLOAT_BITS = (16, 32)
HEADER_FIELDS = ("version", "rows", "cols", "bits", "block", "dtype", "scale_dtype")
HEADER_BYTES = 8 * len(HEADER_FIELDS)  # stored as an int64 tensor, so counted like any other tensor
FORMAT_VERSION = 1
ROW_CHUNK = 1 << 16  # rows quantised at once: bounds the temporaries for tables of millions of rows


@dataclass(frozen=True)
class QuantSpec:
    """How to quantise one table.

    ``bits``: 1..8 (k-bit codes), or 16 / 32 (plain fp16 / fp32 storage, ``dtype`` ignored).
    ``dtype``: one of ``DTYPES``. ``block``: numbers per scale along a row (0 = whole row); for
    ``pq`` the numbers per sub-vector (``bits * block`` <= 8; :func:`default_block`).
    ``scale_dtype``: ``fp32``, ``fp16`` or ``int8`` (double quantisation of the scales).
    """

    bits: int = 4
    dtype: str = "int"
    block: int = 64
    scale_dtype: str = "fp16"

    def __post_init__(self):
        if not (1 <= self.bits <= 8 or self.bits in FLOAT_BITS):
            raise ConfigError(f"bits must be 1..8, 16 or 32, got {self.bits}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown quantization dtype {self.dtype!r}; expected one of {DTYPES}")
        if self.block < 0:
            raise ConfigError(f"block must be >= 0 (0 = one block per row), got {self.block}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ConfigError(f"unknown scale dtype {self.scale_dtype!r}; expected one of {SCALE_DTYPES}")
        if self.is_pq and not 1 <= self.bits * self.block <= PQ_MAX_CODE_BITS:
            raise ConfigError(f"pq: a code holds bits x block = {self.bits} x {self.block} bits; it must be "
                              f"1..{PQ_MAX_CODE_BITS} (at most 256 centroids per sub-vector), e.g. "
                              f"block {default_block('pq', self.bits)} at {self.bits} bits")

    @property
    def is_pq(self) -> bool:
        """Product quantisation: one code per sub-vector of ``block`` numbers (not for fp16/fp32)."""
        return self.dtype == "pq" and not self.is_float

    def code_bits(self, cols: int) -> int:
        """Bits of one stored code: ``bits`` per number, ``bits * width`` per pq sub-vector."""
        return self.bits * self.block_width(cols) if self.is_pq else self.bits

    def num_codes(self, cols: int) -> int:
        """Codes per row: one per number, one per pq sub-vector."""
        return self.num_blocks(cols) if self.is_pq else cols

    @property
    def is_float(self) -> bool:
        """True for plain fp16/fp32 storage (no codes, no scales)."""
        return self.bits in FLOAT_BITS

    @property
    def has_scales(self) -> bool:
        return not self.is_float and self.dtype not in ("phase", "pq")

    def block_width(self, cols: int) -> int:
        """Numbers per block in a row of ``cols`` numbers."""
        return cols if self.block == 0 or self.block >= cols else self.block

    def num_blocks(self, cols: int) -> int:
        return -(-cols // self.block_width(cols))

    def replace(self, **changes) -> "QuantSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def default_block(dtype: str, bits: int) -> int:
    """``block`` when none is given: 64 numbers per scale, or for ``pq`` the widest sub-vector whose
    code fits a byte (8 // bits numbers: 2-bit pq has sub-vectors of 4 and 256 centroids each)."""
    return max(1, PQ_MAX_CODE_BITS // bits) if dtype == "pq" else 64


def header_tensor(rows: int, cols: int, spec: QuantSpec) -> torch.Tensor:
    """int64 (7,): version, rows, cols, bits, block width, dtype index, scale dtype index."""
    return torch.tensor([FORMAT_VERSION, rows, cols, spec.bits, spec.block_width(cols), DTYPES.index(spec.dtype),
                         SCALE_DTYPES.index(spec.scale_dtype)], dtype=torch.int64)


def spec_from_header(header: torch.Tensor) -> Tuple[int, int, QuantSpec]:
    """(rows, cols, spec) stored in a header tensor (the block comes back as the width used)."""
    version, rows, cols, bits, block, dtype, scale_dtype = (int(v) for v in header.tolist())
    if version != FORMAT_VERSION:
        raise ValueError(f"quantized table format version {version}; this code reads {FORMAT_VERSION}")
    return rows, cols, QuantSpec(bits, DTYPES[dtype], block, SCALE_DTYPES[scale_dtype])


# ---- byte accounting ---------------------------------------------------------------------------
def table_nbytes(rows: int, cols: int, spec: QuantSpec) -> Dict[str, int]:
    """Exact bytes of a quantised (rows, cols) table: codes, scales (+ offsets), metadata, total.

    ``metadata`` is the header plus the stored codebook (4 bytes per entry). The sum equals the
    bytes of the tensors :func:`quantize_table` returns, and of those in a saved model file.
    """
    if spec.is_float:
        codes = rows * cols * spec.bits // 8
    elif spec.is_pq:
        width, count = spec.block_width(cols), spec.num_blocks(cols)
        codes = rows * packed_bytes(count, spec.code_bits(cols))
        metadata = HEADER_BYTES + 4 * count * (1 << spec.code_bits(cols)) * width
        return {"codes": codes, "scales": 0, "metadata": metadata, "total": codes + metadata}
    else:
        codes = rows * packed_bytes(cols, spec.bits)
    scales = 0
    if spec.has_scales:
        per_table = scale_nbytes(rows * spec.num_blocks(cols), spec.scale_dtype)
        scales = per_table * (2 if spec.dtype == "int_asym" else 1)
    metadata = HEADER_BYTES + (0 if spec.is_float else 4 * codebook_size(spec.dtype, spec.bits))
    return {"codes": codes, "scales": scales, "metadata": metadata, "total": codes + scales + metadata}


# ---- quantisation ------------------------------------------------------------------------------
def _blocked(rows: torch.Tensor, width: int) -> torch.Tensor:
    """(n, cols) -> (n, blocks, width), the last block padded by repeating the row's last number
    (which changes neither its absmax nor its min or max)."""
    cols = rows.shape[-1]
    pad = -cols % width
    if pad:
        rows = torch.cat([rows, rows[:, -1:].expand(-1, pad)], dim=1)
    return rows.reshape(rows.shape[0], -1, width)


def _block_scales(table: torch.Tensor, spec: QuantSpec) -> Dict[str, torch.Tensor]:
    """Stored scales (and offsets) of every block, rounded so that nothing clips."""
    width = spec.block_width(table.shape[1])
    lows, highs = [], []
    for start in range(0, table.shape[0], ROW_CHUNK):
        blocks = _blocked(table[start:start + ROW_CHUNK], width)
        if spec.dtype == "int_asym":
            lows.append(blocks.amin(-1))
            highs.append(blocks.amax(-1))
        else:
            highs.append(blocks.abs().amax(-1))
    state: Dict[str, torch.Tensor] = {}
    high = torch.cat(highs)
    if spec.dtype == "int_asym":
        stored = encode_scales(torch.cat(lows), spec.scale_dtype, rounding="down")
        state["offsets"] = stored["values"]
        if "groups" in stored:
            state["offset_groups"] = stored["groups"]
        low = decode_scales(stored)
        high = high - low  # the range above the stored offset
    stored = encode_scales(high, spec.scale_dtype, rounding="up")
    state["scales"] = stored["values"]
    if "groups" in stored:
        state["scale_groups"] = stored["groups"]
    return state


def stored_scales(state: Dict[str, torch.Tensor], rows: Optional[torch.Tensor] = None,
                  num_blocks: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """float32 (scales, offsets or None) of all rows, or of the row ids ``rows`` (any shape)."""
    scales = decode_scales({"values": state["scales"], "groups": state.get("scale_groups")}, rows, num_blocks)
    offsets = None
    if state.get("offsets") is not None:
        offsets = decode_scales({"values": state["offsets"], "groups": state.get("offset_groups")}, rows,
                                num_blocks)
    return scales, offsets


def _normalize(rows: torch.Tensor, scales: torch.Tensor, offsets: Optional[torch.Tensor],
               width: int) -> torch.Tensor:
    """(n, cols) numbers -> (n, cols) in codebook units: (x - offset) / scale per block."""
    blocks = _blocked(rows, width)
    if offsets is not None:
        blocks = blocks - offsets.unsqueeze(-1)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))  # an all-zero block -> zeros
    return (blocks / safe.unsqueeze(-1)).reshape(rows.shape[0], -1)[:, : rows.shape[1]]


def nearest_codes(normalized: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (int64, same shape) of the nearest entry of a sorted ``codebook`` to each value."""
    midpoints = (codebook[1:] + codebook[:-1]) / 2
    return torch.bucketize(normalized.contiguous(), midpoints.to(normalized.device))


def quantize_phases(phases: torch.Tensor, bits: int) -> torch.Tensor:
    """Angles (radians, any range) -> int64 codes c of the nearest point -pi + 2*pi*c / 2**bits.

    The grid wraps (code 0 is both -pi and pi), so a phase's error is at most pi / 2**bits as an
    angle, and cos/sin of the decoded phase are what RotatE sees. No scale is needed.
    """
    count = 1 << bits
    steps = (phases.double() + math.pi) / (2 * math.pi / count)
    return torch.remainder(torch.floor(steps + 0.5), count).long()


def dequantize_pq(codes: torch.Tensor, codebook: torch.Tensor, cols: int) -> torch.Tensor:
    """pq codes (n, sub-vectors) -> float32 (n, cols): each sub-vector's centroid, the padding of a
    last, shorter sub-vector cut off. ``codebook``: (sub-vectors, centroids, width)."""
    count, _, width = codebook.shape
    subvector = torch.arange(count, device=codes.device)
    return codebook.to(codes.device)[subvector, codes.long()].reshape(codes.shape[0], count * width)[:, :cols]


def dequantize_codes(codes: torch.Tensor, codebook: torch.Tensor, scales: Optional[torch.Tensor],
                     offsets: Optional[torch.Tensor], width: int) -> torch.Tensor:
    """Codes (n, cols) -> float32 (n, cols): offset + scale * codebook[code], per block of ``width``.

    ``scales``/``offsets`` are (n, blocks) float32, or None (phases: the codebook is the value).
    """
    values = codebook.to(codes.device)[codes.long()]
    if scales is None:
        return values
    n, cols = values.shape
    pad = -cols % width
    blocks = torch.nn.functional.pad(values, (0, pad)).view(n, -1, width) * scales.unsqueeze(-1)
    if offsets is not None:
        blocks = blocks + offsets.unsqueeze(-1)
    return blocks.reshape(n, -1)[:, :cols]


def quantize_table(table: torch.Tensor, spec: QuantSpec,
                   codebook: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Quantise a float table (rows, cols) -> its packed state dict (see the module docstring).

    ``codebook`` overrides the data type's codebook (e.g. a shared empirical one).
    """
    if table.dim() != 2:
        raise ValueError(f"quantize_table expects a 2-D table, got shape {tuple(table.shape)}")
    table = table.detach().float()
    rows, cols = table.shape
    state: Dict[str, torch.Tensor] = {"header": header_tensor(rows, cols, spec)}
    if spec.is_float:
        state["codes"] = table.half().contiguous() if spec.bits == 16 else table.clone().contiguous()
        return {key: value.to(table.device) for key, value in state.items()}
    if spec.is_pq:
        from .kmeans import product_quantize

        state["codebook"], codes = product_quantize(table, spec.block_width(cols), 1 << spec.code_bits(cols),
                                                    row_chunk=ROW_CHUNK)
        state["codes"] = torch.cat([pack_bits(codes[start:start + ROW_CHUNK], spec.code_bits(cols))
                                    for start in range(0, rows, ROW_CHUNK)])
        return {key: value.to(table.device) for key, value in state.items()}
    if spec.dtype == "phase":
        state["codebook"] = phase_codebook(spec.bits)
        state["codes"] = torch.cat([pack_bits(quantize_phases(table[start:start + ROW_CHUNK], spec.bits), spec.bits)
                                    for start in range(0, rows, ROW_CHUNK)])
        return {key: value.to(table.device) for key, value in state.items()}
    state.update(_block_scales(table, spec))
    width = spec.block_width(cols)
    scales, offsets = stored_scales(state)
    if codebook is None:
        sample = None
        if spec.dtype == "quantile_empirical":
            sample_rows = torch.randperm(rows, generator=torch.Generator().manual_seed(0))[:ROW_CHUNK]
            sample_rows = sample_rows.to(table.device)
            sample = _normalize(table[sample_rows], scales[sample_rows],
                                None if offsets is None else offsets[sample_rows], width)
        codebook = make_codebook(spec.dtype, spec.bits, sample)
    if len(codebook) > 1 << spec.bits:
        raise ValueError(f"a codebook of {len(codebook)} entries does not fit {spec.bits}-bit codes")
    state["codebook"] = codebook.float().contiguous()
    packed = []
    for start in range(0, rows, ROW_CHUNK):
        stop = start + ROW_CHUNK
        normalized = _normalize(table[start:stop], scales[start:stop], None if offsets is None else offsets[start:stop],
                                width)
        packed.append(pack_bits(nearest_codes(normalized, state["codebook"]), spec.bits))
    state["codes"] = torch.cat(packed)
    return {key: value.to(table.device) for key, value in state.items()}


def quantize_dequantize(table: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """The float table (rows, cols) a quantised ``table`` decodes to, without packing.

    Bit-identical to quantising, packing, unpacking and dequantising (the same functions run in
    the same order), so a model trained through it (QAT) scores exactly like its packed form.
    The data-dependent ``quantile_empirical`` codebook is not supported here.
    """
    if spec.dtype in ("quantile_empirical", "pq") and not spec.is_float:
        raise ValueError(f"quantize_dequantize: {spec.dtype} depends on the whole table; use quantize_table")
    table = table.float()
    if spec.is_float:
        return table.half().float() if spec.bits == 16 else table
    if spec.dtype == "phase":
        return phase_codebook(spec.bits).to(table.device)[quantize_phases(table, spec.bits)]
    state = _block_scales(table, spec)
    scales, offsets = stored_scales(state)
    width = spec.block_width(table.shape[1])
    book = make_codebook(spec.dtype, spec.bits).to(table.device)
    codes = nearest_codes(_normalize(table, scales, offsets, width), book)
    return dequantize_codes(codes, book, scales, offsets, width)
