"""Storage of per-block scales (and min-max offsets) in fp32, fp16 or 8 bits (double quantisation).

``int8`` is QLoRA's "double quantisation" idea with min-max codes: the (rows, blocks) matrix of
scales is flattened row-major, cut into groups of ``SCALE_GROUP`` values, and each value is
stored as a uint8 code with one fp32 (min, step) pair per group: 8 + 64/256 = 8.25 bits per scale.

Rounding is directed so that quantising with the *stored* scale never clips: absmax scales and
min-max ranges are rounded up, min-max offsets down. The error bounds of the quantizers then
hold with the stored values (see ``tests/test_quant.py``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..errors import ConfigError

SCALE_DTYPES = ("fp32", "fp16", "int8")
SCALE_GROUP = 256


def _round_fp16(values: torch.Tensor, rounding: str) -> torch.Tensor:
    half = values.half()
    if rounding == "up":
        low = half.float() < values
        half = torch.where(low, torch.nextafter(half, torch.full_like(half, float("inf"))), half)
    elif rounding == "down":
        high = half.float() > values
        half = torch.where(high, torch.nextafter(half, torch.full_like(half, float("-inf"))), half)
    return half


def encode_scales(values: torch.Tensor, scale_dtype: str, rounding: str = "nearest") -> Dict[str, torch.Tensor]:
    """Store float32 values (rows, blocks) as ``scale_dtype``; ``rounding`` is up, down or nearest.

    Returns ``{"values": (rows, blocks)}`` (fp32 / fp16 / uint8) plus, for int8,
    ``{"groups": (ceil(rows*blocks/256), 2) fp32}`` holding each group's (min, step).
    """
    values = values.float()
    if scale_dtype == "fp32":
        return {"values": values.contiguous()}
    if scale_dtype == "fp16":
        if values.numel() and float(values.abs().max()) > 65504.0:
            raise ConfigError("block scales exceed the fp16 range; use scale_dtype fp32")
        return {"values": _round_fp16(values, rounding).contiguous()}
    if scale_dtype != "int8":
        raise ValueError(f"unknown scale dtype {scale_dtype!r}; expected one of {SCALE_DTYPES}")
    flat = values.reshape(-1)
    num_groups = -(-flat.numel() // SCALE_GROUP)
    padded = torch.nn.functional.pad(flat, (0, num_groups * SCALE_GROUP - flat.numel()), value=float(flat[-1]))
    grouped = padded.view(num_groups, SCALE_GROUP)
    low, high = grouped.amin(1), grouped.amax(1)
    step = (high - low) / 255.0
    safe = torch.where(step > 0, step, torch.ones_like(step))
    scaled = (grouped - low[:, None]) / safe[:, None]
    codes = {"up": torch.ceil, "down": torch.floor, "nearest": torch.round}[rounding](scaled).clamp_(0, 255)
    decoded = low[:, None] + codes * step[:, None]
    # Float rounding of low + code * step can land one ulp on the wrong side; move such codes.
    if rounding == "up":
        codes = torch.where((decoded < grouped) & (codes < 255), codes + 1, codes)
    elif rounding == "down":
        codes = torch.where((decoded > grouped) & (codes > 0), codes - 1, codes)
    codes = codes.reshape(-1)[: flat.numel()].view_as(values).to(torch.uint8)
    return {"values": codes.contiguous(), "groups": torch.stack([low, step], 1).contiguous()}


def decode_scales(stored: Dict[str, Optional[torch.Tensor]], rows: Optional[torch.Tensor] = None,
                  num_blocks: Optional[int] = None) -> torch.Tensor:
    """float32 scales of all rows, or of row ids ``rows`` (any shape) -> (*rows.shape, blocks).

    With int8 storage, ``stored["values"]`` must be the full (rows, blocks) matrix when ``rows``
    is given (the group of an entry depends on its flat position).
    """
    values, groups = stored["values"], stored.get("groups")
    if groups is None:
        return (values if rows is None else values[rows]).float()
    num_blocks = values.shape[-1] if num_blocks is None else num_blocks
    if rows is None:
        flat_index = torch.arange(values.numel(), device=values.device).view_as(values)
        codes = values
    else:
        flat_index = rows.unsqueeze(-1) * num_blocks + torch.arange(num_blocks, device=values.device)
        codes = values[rows]
    group = groups[flat_index // SCALE_GROUP]
    return group[..., 0] + codes.float() * group[..., 1]


def scale_nbytes(count: int, scale_dtype: str) -> int:
    """Bytes that ``count`` stored scales take (values plus int8's per-group fp32 min and step)."""
    if scale_dtype == "fp32":
        return 4 * count
    if scale_dtype == "fp16":
        return 2 * count
    if scale_dtype == "int8":
        return count + 8 * (-(-count // SCALE_GROUP))
    raise ValueError(f"unknown scale dtype {scale_dtype!r}; expected one of {SCALE_DTYPES}")
