"""Our k-bit tables side by side with FAISS, the standard for quantized vector search
(``pipelines/bench_faiss.py``; ``faiss-cpu`` is an optional benchmark dependency).

A query of TransE-L2, DistMult or ComplEx is a vector search (``KGEModel.search_query``): L2 or inner
product between the query vector and the entity rows. Against the exact fp32 top 10 of each query
(our own fp32 ranking), every method reports recall@10, its top-10 rate, the bytes it keeps per
entity and, on a real KG, the filtered MRR of the test split: ours from the packed codes, FAISS's
from the vectors its codes reconstruct (FAISS's SQ and PQ distances are distances to those vectors),
scored by the same ranking code. Each side builds its queries from its own decoded anchor entities,
as a served model keeps only its codes (fp32 anchors would give FAISS a precision ours lacks).

FAISS methods: ``IndexFlat`` (exact), ``IndexScalarQuantizer`` at 8 and 4 bits (per-dimension
ranges) and ``IndexPQ`` (8-bit codes, ``M`` sub-vectors) with ``M`` chosen so that its bytes per
entity do not exceed ours at each of our bit widths. Ours: ``int`` (absmax) and NF-k (``quantile``)
codes with blocks of 64 and fp16 scales, and ``pq`` (our product quantisation,
:mod:`kbit_dgl.quant.kmeans`: one byte per sub-vector of 8 // bits numbers), the relation table
kept at fp32 on both sides. Bytes per entity count everything a method keeps, divided by the
entities: codes, scales and codebooks on our side, codes and trained parameters (PQ centroids, SQ
ranges) on FAISS's, which ``sa_code_size`` alone would leave out. L1 / RotatE / PairRE scores have
no vector-search form; FAISS has no metric for them.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..eval.ranking import top_k
from ..quant import QuantSpec, quantize_model
from ..quant.model import table_specs
from ..quant.quantizers import default_block


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - the optional dependency
        raise SystemExit("this benchmark needs faiss-cpu: pip install -c constraints.txt -e '.[bench]'") from None
    return faiss


@torch.no_grad()
def query_vectors(model, triples: torch.Tensor) -> Tuple[torch.Tensor, str, torch.Tensor, torch.Tensor]:
    """(vectors, metric, anchors, relations) of the tail queries then the head queries of ``triples``."""
    rows = model.candidate_rows()
    anchors = torch.cat([triples[:, 0], triples[:, 2]])
    relations = torch.cat([triples[:, 1], triples[:, 1]])
    parts, metric = [], None
    for direction, ids in (("tail", slice(0, len(triples))), ("head", slice(len(triples), None))):
        found = model.search_query(rows[anchors[ids]], relations[ids], direction)
        if found is None:
            raise ValueError(f"{model.decoder.name} (p={getattr(model.decoder, 'p', '-')}) scores have no "
                             f"vector-search form: FAISS has no metric for them")
        parts.append(found[0])
        metric = found[1]
    return torch.cat(parts).contiguous(), metric, anchors, relations


def _search_ours(model, anchors, relations, k: int, batch: int = 1024) -> torch.Tensor:
    """Top-k entity ids of the tail queries (first half of ``anchors``) and the head queries (second)."""
    rows, half, ids = model.candidate_rows(), len(anchors) // 2, []
    for direction, lo, hi in (("tail", 0, half), ("head", half, len(anchors))):
        for start in range(lo, hi, batch):
            stop = min(start + batch, hi)
            ids.append(top_k(model, rows[anchors[start:stop]], relations[start:stop], rows, direction, k)[1])
    return torch.cat(ids)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean |found ∩ exact| / k per query (k = exact's width)."""
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def pq_subvectors(dim: int, budget_bytes: float) -> Optional[int]:
    """The largest M dividing ``dim`` with M <= budget (8-bit PQ codes: M bytes per vector)."""
    options = [m for m in range(1, dim + 1) if dim % m == 0 and m <= budget_bytes]
    return max(options) if options else None


def compare(model, queries: torch.Tensor, bits_list: List[int], k: int = 10, kg=None,
            train_rows: int = 200_000, seed: int = 0, dtypes: Tuple[str, ...] = ("quantile", "int")) -> List[Dict]:
    """Records of exact fp32, ours at ``bits_list`` and FAISS (flat, SQ8, SQ4, PQ at our bytes) on the
    tail and head queries of ``queries`` (triples); with ``kg``, the filtered test MRR of each too."""
    from ..eval import evaluate
    from ..models.model import KGEModel

    faiss = _faiss()
    _, metric, anchors, relations = query_vectors(model, queries)
    table = model.all_entities().detach().contiguous()
    num, dim = table.shape
    started = time.perf_counter()
    exact = _search_ours(model, anchors, relations, k).numpy()
    records = [{"method": "fp32 (ours, exact)", "bytes_per_entity": 4 * dim, "recall@10": 1.0,
                "queries_per_second": round(len(anchors) / (time.perf_counter() - started), 1)}]
    if kg is not None:
        records[0]["filtered_mrr"] = evaluate(model, kg, "test")["mrr"]
    for bits, dtype in [(bits, dtype) for bits in bits_list for dtype in dtypes]:
        spec = QuantSpec(bits, dtype, default_block(dtype, bits))
        packed = quantize_model(model, spec, table_specs(model.decoder, spec, 32)[1])
        started = time.perf_counter()
        found = _search_ours(packed, anchors, relations, k).numpy()
        label = {"quantile": "NF", "int": "int", "pq": "PQ"}.get(dtype, dtype)
        record = {"method": f"ours {bits}-bit {label}", "bits": bits, "bytes_per_entity": packed.entity.nbytes / num,
                  "recall@10": recall_at(found, exact),
                  "queries_per_second": round(len(anchors) / (time.perf_counter() - started), 1)}
        if kg is not None:
            record["filtered_mrr"] = evaluate(packed, kg, "test")["mrr"]
        records.append(record)
    data = table.numpy().astype(np.float32)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    generator = np.random.default_rng(seed)
    sample = data[generator.choice(num, size=min(num, train_rows), replace=False)]
    candidates = [("faiss IndexFlat (exact)", faiss.IndexFlat(dim, faiss_metric)),
                  ("faiss SQ 8-bit", faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss_metric)),
                  ("faiss SQ 4-bit", faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_4bit, faiss_metric))]
    for record in records[1:] if num >= 256 else []:  # PQ's 8-bit codebooks need 256 training rows
        m = pq_subvectors(dim, record["bytes_per_entity"])
        if m and not any(name == f"faiss PQ M={m}" for name, _ in candidates):
            candidates.append((f"faiss PQ M={m}", faiss.IndexPQ(dim, m, 8, faiss_metric)))
    for name, index in candidates:
        index.train(sample)
        index.add(data)
        # the queries come from the index's own decoded anchors, as ours come from our codes: a served
        # model keeps only its codes (fp32 anchors would give FAISS a precision that ours lacks)
        twin = KGEModel(model.num_entities, model.num_relations, model.decoder, reciprocal=model.reciprocal)
        with torch.no_grad():
            twin.entity.weight.copy_(torch.from_numpy(index.reconstruct_n(0, num)))
            twin.relation.weight.copy_(model.relation.weight)
        twin.eval()
        query_data = query_vectors(twin, queries)[0].numpy().astype(np.float32)
        started = time.perf_counter()
        _, found = index.search(query_data, k)
        seconds = time.perf_counter() - started
        record = {"method": name, "bytes_per_entity": _faiss_bytes(faiss, index, num, dim),
                  "recall@10": recall_at(found, exact),
                  "queries_per_second": round(len(query_data) / seconds, 1)}
        if kg is not None:
            record["filtered_mrr"] = evaluate(twin, kg, "test")["mrr"]
        records.append(record)
    for record in records:
        record["bytes_per_entity"] = round(float(record["bytes_per_entity"]), 2)
        record["recall@10"] = round(record["recall@10"], 4)
        if "filtered_mrr" in record:
            record["filtered_mrr"] = round(record["filtered_mrr"], 4)
    return records


def _faiss_bytes(faiss, index, num: int, dim: int) -> float:
    """Bytes per entity a FAISS index keeps: its codes plus its trained parameters over ``num`` entities."""
    if isinstance(index, faiss.IndexPQ):
        return index.sa_code_size() + 4 * faiss.vector_to_array(index.pq.centroids).size / num
    if isinstance(index, faiss.IndexScalarQuantizer):
        return index.sa_code_size() + 4 * faiss.vector_to_array(index.sq.trained).size / num
    return 4 * dim


def comparison_table(records: List[Dict]) -> str:
    mrr = any("filtered_mrr" in record for record in records)
    lines = ["| method | bytes / entity | recall@10 vs fp32 | " + ("filtered MRR | " if mrr else "")
             + "top-10 queries/s |",
             "|---|---|---|" + ("---|" if mrr else "") + "---|"]
    for record in records:
        cells = [record["method"], f"{record['bytes_per_entity']:g}", f"{record['recall@10']:.4f}"]
        if mrr:
            cells.append(f"{record['filtered_mrr']:.4f}" if "filtered_mrr" in record else "n/a")
        cells.append(f"{record['queries_per_second']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
