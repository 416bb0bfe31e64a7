"""Codebooks: the values a k-bit code stands for, before the block scale is applied.

Every data type is "value = offset + scale * codebook[code]" with a sorted float32 codebook:

* ``int`` (symmetric absmax): the 2**k - 1 integers -(2**(k-1)-1) .. 2**(k-1)-1 divided by the
  largest, i.e. evenly spaced in [-1, 1] with an exact zero (one code is unused, as in
  bitsandbytes' absmax int8 with -127..127). k = 1 has no such grid and is sign binarisation {-1, 1}.
* ``int_asym`` (min-max): 2**k evenly spaced values in [0, 1]; the block's min is the offset and
  max - min the scale.
* ``float``: a sign/exponent/mantissa minifloat (``FLOAT_FORMATS``: e2m1 at 4 bits, e2m5 at 8),
  IEEE-style bias 2**(e-1)-1 with subnormals and no inf/NaN codes, +0 and -0 merged, scaled so
  the largest magnitude is 1. k = 1 is sign binarisation.
* ``quantile`` (NF-k, normal float): QLoRA's construction (Dettmers et al. 2023) generalised to
  k bits: 2**(k-1) quantiles of N(0, 1) for the positive half, 2**(k-1)-1 for the negative half
  and an exact zero, normalised to [-1, 1]; NF-4 is QLoRA's NF4 table. Optimal (equal mass per
  code) when the block-normalised weights are normal.
* ``quantile_empirical``: 2**k equal-mass quantiles of the table's own block-normalised values
  (Dettmers et al.'s SRAM-quantile estimate; data dependent, so stored with the table).
* ``phase``: 2**k angles evenly spaced on the circle, -pi + 2*pi*c / 2**k; no scale (see
  :func:`kbit_dgl.quant.quantizers.quantize_phases`).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

# k -> (exponent bits, mantissa bits); 1 sign bit + e + m = k. Two exponent bits from k = 3 up
# (e2m1 at 4 bits): on absmax-normalised blocks of normal weights every extra exponent bit
# raised the squared error (e.g. at 8 bits e2m5 6e-6, e3m4 2e-5, e4m3 1e-4; at 4 bits e2m1
# 1.7e-3, e3m0 5.5e-3), since it spends codes on magnitudes far below the block's absmax.
# Other layouts are available through ``minifloat(e, m)``.
FLOAT_FORMATS: Dict[int, Tuple[int, int]] = {2: (1, 0), 3: (2, 0), 4: (2, 1), 5: (2, 2), 6: (2, 3), 7: (2, 4),
                                             8: (2, 5)}
SIGN_ONLY = torch.tensor([-1.0, 1.0])


def int_symmetric(bits: int) -> torch.Tensor:
    """(2**bits - 1,) evenly spaced values in [-1, 1] with an exact zero; {-1, 1} at 1 bit."""
    if bits == 1:
        return SIGN_ONLY.clone()
    top = (1 << (bits - 1)) - 1
    return torch.arange(-top, top + 1, dtype=torch.float64).div(top).float()


def int_asymmetric(bits: int) -> torch.Tensor:
    """(2**bits,) evenly spaced values in [0, 1] (offset = block min, scale = max - min)."""
    return torch.linspace(0.0, 1.0, 1 << bits, dtype=torch.float64).float()


def minifloat(exponent_bits: int, mantissa_bits: int) -> torch.Tensor:
    """Every value of a 1+e+m bit float (bias 2**(e-1)-1, subnormals, no inf/NaN), sorted, max 1."""
    bias = (1 << (exponent_bits - 1)) - 1
    magnitudes = set()
    for exponent in range(1 << exponent_bits):
        for mantissa in range(1 << mantissa_bits):
            fraction = mantissa / (1 << mantissa_bits)
            if exponent == 0:  # subnormal: no implicit leading one
                magnitudes.add(fraction * 2.0 ** (1 - bias))
            else:
                magnitudes.add((1.0 + fraction) * 2.0 ** (exponent - bias))
    positive = sorted(magnitudes)
    values = torch.tensor([-m for m in reversed(positive) if m > 0] + positive, dtype=torch.float64)
    return (values / values.abs().max()).float()


def float_codebook(bits: int) -> torch.Tensor:
    """The ``float`` data type at ``bits`` bits (``FLOAT_FORMATS``): 2**bits - 1 values (one 0)."""
    if bits == 1:
        return SIGN_ONLY.clone()
    exponent_bits, mantissa_bits = FLOAT_FORMATS[bits]
    return minifloat(exponent_bits, mantissa_bits)


def normal_float(bits: int) -> torch.Tensor:
    """NF-k: (2**bits,) normal quantiles in [-1, 1] with an exact zero (QLoRA's NF4 at 4 bits)."""
    if bits == 1:
        return SIGN_ONLY.clone()
    count = 1 << bits
    # QLoRA's offset 0.9677 = mean of 1 - 1/(2*16) and 1 - 1/(2*15): the outermost quantile of
    # 16 resp. 15 equal-mass bins, which keeps ppf finite at the ends.
    offset = 0.5 * ((1 - 1 / (2 * count)) + (1 - 1 / (2 * (count - 1))))
    ndtri = torch.special.ndtri
    positive = ndtri(torch.linspace(offset, 0.5, count // 2 + 1, dtype=torch.float64)[:-1])
    negative = -ndtri(torch.linspace(offset, 0.5, count // 2, dtype=torch.float64)[:-1])
    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).sort().values
    return (values / values.abs().max()).float()


def empirical_quantiles(normalized: torch.Tensor, bits: int, max_samples: int = 1 << 20,
                        seed: int = 0) -> torch.Tensor:
    """(2**bits,) equal-mass codes of block-normalised values (Dettmers et al.'s SRAM quantiles).

    Code i is the midpoint of the quantiles i / (n + 1) and (i + 1) / (n + 1), n = 2**bits, so
    the extremes are the table's own min and max. Equal mass makes every code equally frequent
    (maximum entropy), which is not the same as least squared error: on absmax-normalised normal
    data NF-k, which pins +-1, has the lower error. At most ``max_samples`` values (drawn with a
    fixed seed) are used, so the cost is bounded for tables of billions of numbers.
    """
    flat = normalized.reshape(-1).double()
    if flat.numel() > max_samples:
        generator = torch.Generator().manual_seed(seed)
        flat = flat[torch.randint(flat.numel(), (max_samples,), generator=generator).to(flat.device)]
    count = 1 << bits
    quantiles = torch.quantile(flat, torch.linspace(0.0, 1.0, count + 1, dtype=torch.float64, device=flat.device))
    return ((quantiles[1:] + quantiles[:-1]) / 2).float().cpu()


def phase_codebook(bits: int) -> torch.Tensor:
    """(2**bits,) angles -pi + 2*pi*c / 2**bits in radians: a uniform grid on the circle."""
    count = 1 << bits
    return (torch.arange(count, dtype=torch.float64) * (2 * math.pi / count) - math.pi).float()


def codebook(dtype: str, bits: int, normalized: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sorted float32 codebook of ``dtype`` at ``bits`` (``normalized`` only for quantile_empirical)."""
    if dtype == "int":
        return int_symmetric(bits)
    if dtype == "int_asym":
        return int_asymmetric(bits)
    if dtype == "float":
        return float_codebook(bits)
    if dtype == "quantile":
        return normal_float(bits)
    if dtype == "phase":
        return phase_codebook(bits)
    if dtype == "quantile_empirical":
        if normalized is None:
            raise ValueError("quantile_empirical needs the table's values to compute its codebook")
        return empirical_quantiles(normalized, bits)
    raise ValueError(f"unknown quantization data type {dtype!r}")


def codebook_size(dtype: str, bits: int) -> int:
    """Entries of the codebook of ``dtype`` at ``bits`` (what the stored codebook holds)."""
    if bits == 1 and dtype in ("int", "float", "quantile"):
        return 2
    if dtype in ("int", "float"):
        return (1 << bits) - 1
    return 1 << bits
