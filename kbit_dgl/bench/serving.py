"""Speed and memory of inference from k-bit tables against fp32 (``pipelines/bench_kbit_serving.py``).

Each measurement runs in a fresh process (:func:`measure`), so its peak resident memory (VmHWM) is
that of one model and one task: ``topk`` (the serving path: the best ``top`` entities of every
query against all entities, batched, plus single-query latencies) or ``ogb`` (OGB's protocol: each
query against its own 1 + 1,000 candidates). The fp32 model is a random table of the given shape
(only speed and memory are measured), built in the measuring process from a seed; the k-bit models
are that table quantized by :func:`prepare` in a separate process and loaded packed, so the fp32
table never enters a k-bit measurement.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List

import torch

from ..models.model import build_model
from ..quant import QuantSpec, quantize_model
from ..quant.model import default_relation_bits, table_specs
from ..quant.storage import load_quantized_model, save_quantized_model
from .memory import peak_rss_mib

NUM_RELATIONS = 535  # wikikg2's


def random_model(name: str, entities: int, dim: int, seed: int = 0):
    """A float model of the decoder ``name`` with its own initialisation (seeded), in eval mode."""
    torch.manual_seed(seed)
    return build_model(name, entities, NUM_RELATIONS, dim, 6.0).eval()


def packed_path(work: str, name: str, entities: int, dim: int, bits: int) -> str:
    return os.path.join(work, f"{name}-{entities}x{dim}-{bits}bit.pt")


def prepare(work: str, name: str, entities: int, dim: int, bits_list: List[int], seed: int = 0,
            dtype: str = "int", block: int = 64) -> None:
    """Quantize the seeded random model at each of ``bits_list`` (< 32) into ``work`` (skips files that exist)."""
    todo = [bits for bits in bits_list
            if bits < 32 and not os.path.exists(packed_path(work, name, entities, dim, bits))]
    if not todo:
        return
    os.makedirs(work, exist_ok=True)
    model = random_model(name, entities, dim, seed)
    for bits in todo:
        relation_bits = default_relation_bits(bits)
        spec = QuantSpec(bits, dtype, block)
        relation_spec = table_specs(model.decoder, spec, relation_bits)[1] if relation_bits else None
        quantized = quantize_model(model, spec, relation_spec)
        save_quantized_model(packed_path(work, name, entities, dim, bits), quantized, name, dim, 6.0)
        del quantized


def _percentiles(values: List[float]) -> Dict[str, float]:
    ordered = torch.tensor(sorted(values), dtype=torch.float64)
    return {f"p{q}": round(float(torch.quantile(ordered, q / 100)) * 1000, 2) for q in (50, 95, 99)}


@torch.no_grad()
def measure(task: str, work: str, name: str, entities: int, dim: int, bits: int, queries: int, top: int = 10,
            batch_size: int = 256, singles: int = 10, candidates: int = 1000, seed: int = 0) -> Dict:
    """One measurement in this process (call it in a fresh one): rate, latencies and peak memory."""
    from ..eval.ranking import top_k

    started = time.perf_counter()
    if bits >= 32:
        model = random_model(name, entities, dim, seed)
        table_bytes = 4 * entities * model.decoder.entity_dim
    else:
        model = load_quantized_model(packed_path(work, name, entities, dim, bits))
        table_bytes = model.entity.nbytes
    load_seconds = time.perf_counter() - started
    rows = model.candidate_rows()
    generator = torch.Generator().manual_seed(seed + 1)
    anchors = torch.randint(entities, (queries,), generator=generator)
    relations = torch.randint(NUM_RELATIONS, (queries,), generator=generator)
    record: Dict = {"task": task, "model": name, "entities": entities, "dim": dim, "bits": bits,
                    "entity_table_bytes": int(table_bytes), "load_seconds": round(load_seconds, 2),
                    "queries": queries, "batch_size": batch_size, "threads": torch.get_num_threads()}
    if task == "topk":
        def run(lo: int, hi: int):
            return top_k(model, rows[anchors[lo:hi]], relations[lo:hi], rows, "tail", top)
        run(0, min(batch_size, queries))  # compile warm-up, outside the rate
        run(0, 1)
        timed = time.perf_counter()
        ids = [run(lo, min(lo + batch_size, queries))[1] for lo in range(0, queries, batch_size)]
        seconds = time.perf_counter() - timed
        latencies = []
        for i in range(singles):
            one = time.perf_counter()
            run(i, i + 1)
            latencies.append(time.perf_counter() - one)
        record.update(queries_per_second=round(queries / seconds, 2), seconds=round(seconds, 2), top=top,
                      single_query_latency_ms=_percentiles(latencies), singles=singles,
                      top_ids_checksum=int(torch.cat(ids).sum()))
    elif task == "ogb":
        ids = torch.randint(entities, (queries, 1 + candidates), generator=generator)

        def run(lo: int, hi: int):
            return model.score_candidate_ids(rows[anchors[lo:hi]], relations[lo:hi], rows, ids[lo:hi], "tail")
        run(0, min(batch_size, queries))
        run(0, min(batch_size, queries) - 1)  # the second shape: automatic dynamic recompiles once, here
        timed = time.perf_counter()
        total = 0.0
        for lo in range(0, queries, batch_size):
            total += float(run(lo, min(lo + batch_size, queries))[:, 0].sum())
        seconds = time.perf_counter() - timed
        record.update(queries_per_second=round(queries / seconds, 1), seconds=round(seconds, 2),
                      candidates_per_query=1 + candidates)
    else:
        raise ValueError(f"unknown task {task!r}; expected topk or ogb")
    record["peak_rss_mib"] = peak_rss_mib()
    return record


def measure_in_child(task: str, work: str, name: str, entities: int, dim: int, bits: int, queries: int,
                     **options) -> Dict:
    """:func:`measure` in a fresh Python process; its record (with the process's own peak RSS)."""
    arguments = dict(task=task, work=work, name=name, entities=entities, dim=dim, bits=bits, queries=queries,
                     **options)
    code = ("import json, sys; from kbit_dgl.bench.serving import measure; "
            "print(json.dumps(measure(**json.loads(sys.argv[1]))))")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {task} at {bits} bits failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare_in_child(work: str, name: str, entities: int, dim: int, bits_list: List[int], **options) -> None:
    code = ("import json, sys; from kbit_dgl.bench.serving import prepare; prepare(**json.loads(sys.argv[1]))")
    arguments = dict(work=work, name=name, entities=entities, dim=dim, bits_list=bits_list, **options)
    result = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"quantizing the random {name} model failed:\n{result.stderr[-3000:]}")


def serving_table(records: List[Dict]) -> str:
    """Markdown: per size and task, each bit width's rate, latency and peak memory beside fp32's."""
    lines = ["| entities | dim | task | bits | queries/s | vs fp32 | p50 / p95 / p99 ms (1 query) | entity table | "
             "peak RSS | vs fp32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    fp32 = {(r["entities"], r["dim"], r["task"]): r for r in records if r["bits"] >= 32}
    for record in sorted(records, key=lambda r: (r["entities"], r["task"], -r["bits"])):
        base = fp32.get((record["entities"], record["dim"], record["task"]))
        speed = f"{record['queries_per_second'] / base['queries_per_second']:.2f}x" if base else "n/a"
        memory = f"{record['peak_rss_mib'] / base['peak_rss_mib']:.3f}" if base else "n/a"
        latency = record.get("single_query_latency_ms")
        latency = " / ".join(f"{latency[p]:.1f}" for p in ("p50", "p95", "p99")) if latency else "n/a"
        lines.append(f"| {record['entities']:,} | {record['dim']} | {record['task']} | {record['bits']} | "
                     f"{record['queries_per_second']:,} | {speed} | {latency} | "
                     f"{record['entity_table_bytes'] / 2 ** 20:,.0f} MiB | {record['peak_rss_mib'] / 1024:.2f} GiB | "
                     f"{memory} |")
    return "\n".join(lines) + "\n"
