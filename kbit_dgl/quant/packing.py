"""Bit packing of k-bit codes (k = 1..8) into uint8 storage, along the last dimension.

Codes are written least-significant bit first into one continuous bit stream per row, so a row
of ``n`` codes takes exactly ``ceil(n * k / 8)`` bytes for every k, including the k = 3, 5, 6, 7
that do not divide a byte (a code may straddle two bytes); only the last byte of a row can hold
unused (zero) bits. Rows stay byte-aligned so that a table's rows can be gathered by id.
"""
from __future__ import annotations

import torch


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take once packed: ceil(count * bits / 8)."""
    _check_bits(bits)
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ValueError(f"bit packing supports 1..8 bits per code, got {bits}")


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes (..., n) with values in [0, 2**bits) into uint8 (..., ceil(n*bits/8)).

    Works on any integer dtype; values outside the range raise, since they would silently
    corrupt their neighbours in the stream.
    """
    _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"pack_bits expects integer codes, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes out of range for {bits} bits: [{int(codes.min())}, {int(codes.max())}]")
    *lead, count = codes.shape
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    shifts = torch.arange(bits, device=codes.device, dtype=torch.uint8)
    stream = ((codes.to(torch.uint8).unsqueeze(-1) >> shifts) & 1).reshape(*lead, count * bits)
    nbytes = packed_bytes(count, bits)
    stream = torch.nn.functional.pad(stream, (0, nbytes * 8 - count * bits))
    weights = torch.tensor([1 << i for i in range(8)], device=codes.device, dtype=torch.uint8)
    # Products fit in uint8 (one bit times a power of two) and so does the sum (distinct bits).
    return (stream.reshape(*lead, nbytes, 8) * weights).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: uint8 (..., ceil(count*bits/8)) -> uint8 codes (..., count)."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_bits expects uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_bytes(count, bits):
        raise ValueError(f"{count} codes of {bits} bits take {packed_bytes(count, bits)} bytes, "
                         f"got {packed.shape[-1]}")
    if bits == 8:
        return packed
    if 8 % bits == 0:  # 1, 2, 4 bits: codes never straddle bytes; stay in uint8
        shifts = torch.arange(0, 8, bits, device=packed.device, dtype=torch.uint8)
        codes = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(*packed.shape[:-1], -1)[..., :count]
    # Code i starts at bit i*k, i.e. in byte i*k // 8, and ends at most 7 + 8 bits later: the two
    # bytes from there, read as one 16-bit word, hold it whole, whatever k.
    start = torch.arange(count, device=packed.device) * bits
    first, shift = start // 8, (start % 8).to(torch.int32)
    words = torch.nn.functional.pad(packed, (0, 1)).to(torch.int32)
    low, high = words.index_select(-1, first), words.index_select(-1, first + 1)
    return (((high << 8) | low) >> shift & ((1 << bits) - 1)).to(torch.uint8)
