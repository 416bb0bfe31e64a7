"""Post-training quantisation sweeps of one trained model: a point per spec, with exact bytes.

Each point quantises the model's entity and relation tables in memory
(:func:`kbit_dgl.quant.quantize_model`), ranks the test split against all entities
(:func:`.metrics.rank_metrics`) and records the bytes of both tables as stored (codes + scales +
metadata, :meth:`QuantizedKGEModel.byte_report`). 16 and 32 bits are plain fp16 / fp32 tables
(data type ``fp``). Points of a run are cached in its folder, keyed by the model file's hash,
so a resumed sweep does not evaluate them again.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..io import atomic_write_json
from ..quant import QuantSpec, quantize_model
from ..quant.model import table_specs
from ..quant.quantizers import default_block
from .metrics import rank_metrics

FLOAT_DTYPE = "fp"  # the data type column of 16 / 32-bit points
CACHE_FILE = "kbit_points.json"
METRIC_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10", "mean_log_rank", "num_queries", "eval_seconds")


def sweep_specs(bits: Iterable[int], dtypes: Sequence[str], block: int,
                scale_dtype: str = "fp16") -> List[Tuple[str, QuantSpec]]:
    """(data type label, spec) for every k x data type; 16 / 32 bits once, as ``fp``. ``block`` is the
    scalar types' block; ``pq`` takes its default sub-vector (8 // k numbers) and skips k = 8 (one-number
    sub-vectors: per-column k-means, no better than the scalar 8-bit codes)."""
    specs = []
    for k in bits:
        if k in (16, 32):
            specs.append((FLOAT_DTYPE, QuantSpec(k, "int", block, scale_dtype)))
        else:
            specs.extend((dtype, QuantSpec(k, dtype, default_block(dtype, k) if dtype == "pq" else block,
                                           scale_dtype))
                         for dtype in dtypes if not (dtype == "pq" and default_block(dtype, k) == 1))
    return specs


def block_sweep_specs(bits: int, dtypes: Sequence[str], blocks: Iterable[int], row_width: int,
                      skip_blocks: Iterable[int] = (), scale_dtype: str = "fp16") -> List[Tuple[str, QuantSpec]]:
    """Specs at ``bits`` for each block size, one per distinct effective width: blocks at or above
    the row width all mean one scale per row, so only the first of them is kept; ``skip_blocks``
    (e.g. the main sweep's block, already measured) are left out along with their widths."""
    seen = {QuantSpec(bits, "int", block).block_width(row_width) for block in skip_blocks}
    specs = []
    for block in sorted(blocks):
        width = QuantSpec(bits, "int", block).block_width(row_width)
        if width in seen:
            continue
        seen.add(width)
        specs.extend((dtype, QuantSpec(bits, dtype, block, scale_dtype)) for dtype in dtypes)
    return specs


def spec_key(spec: QuantSpec) -> str:
    return f"{spec.bits}|{spec.dtype}|{spec.block}|{spec.scale_dtype}"


def relation_spec_for(model, spec: QuantSpec, relation_min_bits: int = 0) -> Optional[QuantSpec]:
    """The relation table's spec when it is kept at ``relation_min_bits`` or more (0: None, the
    decoder's default for ``spec``: the same k). RotatE's phases stay phases below 16 bits."""
    if not relation_min_bits or spec.bits >= relation_min_bits:
        return None
    return table_specs(model.decoder, spec, relation_min_bits)[1]


def quantized_point(model, kg, spec: QuantSpec, dtype_label: str, batch_size: int = 256,
                    relation_spec: Optional[QuantSpec] = None) -> Dict[str, object]:
    """Quantise ``model`` with ``spec`` (the relation table with ``relation_spec`` if given), rank
    the test split, and count the bytes of both tables."""
    quantized = quantize_model(model, spec, relation_spec)
    metrics = rank_metrics(quantized, kg, "test", batch_size)
    report = quantized.byte_report()
    totals = report["all"]
    return {"bits": spec.bits, "dtype": dtype_label, "block": spec.block,
            "block_width": spec.block_width(quantized.entity.embedding_dim), "scale_dtype": spec.scale_dtype,
            "total_bits": 8 * totals["total"], "total_bytes": totals["total"], "codes_bytes": totals["codes"],
            "scales_bytes": totals["scales"], "metadata_bytes": totals["metadata"], "fp32_bytes": totals["fp32"],
            "bits_per_number": totals["bits_per_number"], "entity_bytes": report["entity"]["total"],
            "entity_fp32_bytes": report["entity"]["fp32"], "relation_bytes": report["relation"]["total"],
            "relation_bits": spec.bits if relation_spec is None else relation_spec.bits,
            **{key: metrics[key] for key in METRIC_KEYS}}


def file_sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_specs(model, kg, specs: Sequence[Tuple[str, QuantSpec]], base: Dict[str, object],
                   run_dir: Optional[str] = None, batch_size: int = 256,
                   relation_min_bits: int = 0) -> List[Dict[str, object]]:
    """A point (``base`` + :func:`quantized_point`) per spec. With ``run_dir``, points are cached in
    its ``kbit_points.json`` under the hash of its ``model.pt``, and cached ones are not recomputed."""
    cache: Dict[str, Dict] = {}
    cache_path = model_hash = None
    if run_dir is not None:
        cache_path = os.path.join(run_dir, CACHE_FILE)
        model_hash = file_sha1(os.path.join(run_dir, "model.pt"))
        if os.path.exists(cache_path):
            with open(cache_path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if stored.get("model_sha1") == model_hash:
                cache = stored["points"]
    points = []
    for label, spec in specs:
        key = spec_key(spec)
        relation_spec = relation_spec_for(model, spec, relation_min_bits)
        if relation_spec is not None:
            key += f"|relations>={relation_min_bits}"
        if key not in cache:
            cache[key] = quantized_point(model, kg, spec, label, batch_size, relation_spec)
            if cache_path is not None:
                atomic_write_json(cache_path, {"model_sha1": model_hash, "points": cache})
        points.append({**base, **cache[key]})
    return points


def eval_timing(model, kg, spec: QuantSpec, repeats: int = 3, batch_size: int = 256) -> Dict[str, object]:
    """Test-split ranking time of the fp32 model and of its ``spec`` quantisation, measured
    alternately (after one warm-up each) so both see the same machine load; medians and their ratio."""
    quantized = quantize_model(model, spec)
    models = {"fp32": model, "quantized": quantized}
    for candidate in models.values():
        rank_metrics(candidate, kg, "test", batch_size)
    seconds: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, candidate in models.items():
            seconds[name].append(rank_metrics(candidate, kg, "test", batch_size)["eval_seconds"])
    fp32, quant = statistics.median(seconds["fp32"]), statistics.median(seconds["quantized"])
    return {"spec": spec.to_dict(), "repeats": repeats, "fp32_seconds": fp32, "quantized_seconds": quant,
            "ratio_quantized_to_fp32": quant / fp32, "seconds": seconds,
            "fp32_table_bytes": quantized.byte_report()["all"]["fp32"],
            "quantized_table_bytes": quantized.nbytes, "num_queries": 2 * len(kg.test)}
