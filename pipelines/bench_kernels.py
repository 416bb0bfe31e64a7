"""Candidate-scoring kernels side by side: eager broadcast vs the fused (torch.compile) path.

    python pipelines/bench_kernels.py [--repeats 5]

Cases: eager broadcasting, the torch.compile'd expression (``kernels``), and on the CPU the
hand-written kernels (``native``, ``models/csrc/pairwise_cpu.cpp``) where they exist (L1, RotatE).
Workload (the speed issue's): 1024 queries in chunks of 128, each chunk against its own 256
shared negatives, dim 200 (RotatE: 100 complex). Forward + backward, fp32. Also the machine's
fp32 matmul rate in the same run, for scale. Writes results/bench/kernels.json.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from kbit_dgl.bench.timing import best_seconds, matmul_gflops
from kbit_dgl.io import atomic_write_json
from kbit_dgl.models import kernels, native
from kbit_dgl.provenance import provenance

WARMUP = 2  # untimed calls before each case: compilation, then one more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.time()
    chunks, chunk, negatives, dim = 8, 128, 256, 200
    generator = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=generator, requires_grad=True)

    query, candidates = leaf(chunks, chunk, dim), leaf(chunks, negatives, dim)
    scale = leaf(chunks, chunk, dim)  # PairRE: the query's r_tail (or r_head) multiplies every candidate
    half = dim // 2
    q_re, q_im, c_re, c_im = leaf(chunks, chunk, half), leaf(chunks, chunk, half), leaf(chunks, negatives, half), \
        leaf(chunks, negatives, half)
    cases = {
        "transe_l1/eager_broadcast": lambda: kernels._l1(query, candidates).sum().backward(),
        "transe_l1/torch_cdist": lambda: torch.cdist(query, candidates, p=1.0).sum().backward(),
        "transe_l1/fused_compiled": lambda: kernels._compiled("l1")(query, candidates).sum().backward(),
        "transe_l1/native_cpu": lambda: native.pairwise("l1", (query,), (candidates,)).sum().backward(),
        "rotate/eager_broadcast": lambda: kernels._complex_l1(q_re, q_im, c_re, c_im).sum().backward(),
        "rotate/fused_compiled": lambda: kernels._compiled("complex_l1")(q_re, q_im, c_re, c_im).sum().backward(),
        "rotate/native_cpu": lambda: native.pairwise("complex_l1", (q_re, q_im), (c_re, c_im)).sum().backward(),
        "pairre/eager_broadcast": lambda: kernels._scaled_l1(query, scale, candidates).sum().backward(),
        "pairre/fused_compiled": lambda: kernels._compiled("scaled_l1")(query, scale, candidates).sum().backward(),
    }
    results = {"workload": {"queries": chunks * chunk, "chunk": chunk, "shared_negatives": negatives, "dim": dim},
               "matmul_gflops": round(matmul_gflops(args.repeats, WARMUP), 1), "cases": {}}
    for name, fn in cases.items():
        seconds = best_seconds(fn, args.repeats, WARMUP)
        results["cases"][name] = {"seconds_fwd_bwd": round(seconds, 5),
                                  "positives_per_second": round(chunks * chunk / seconds, 1)}
        print(f"{name:28s} {seconds * 1000:8.2f} ms  {chunks * chunk / seconds:12,.0f} queries/s", flush=True)
    for model in ("transe_l1", "rotate", "pairre"):
        eager = results["cases"][f"{model}/eager_broadcast"]["seconds_fwd_bwd"]
        fused = results["cases"][f"{model}/fused_compiled"]["seconds_fwd_bwd"]
        results[f"{model}_speedup_fused_vs_eager"] = round(eager / fused, 2)
        if f"{model}/native_cpu" in results["cases"]:
            results[f"{model}_speedup_native_vs_fused"] = round(
                fused / results["cases"][f"{model}/native_cpu"]["seconds_fwd_bwd"], 2)
    results["provenance"] = provenance(started)
    out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "bench", "kernels.json")
    atomic_write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
