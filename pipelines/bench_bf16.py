"""Is bf16 scoring worth it on this CPU? GEMM speed, and what it does to filtered ranking.

    python pipelines/bench_bf16.py --runs runs/foundation/codex-s-transe_l2 runs/foundation/codex-s-rotate \\
        [--threads 1]

1. The scoring GEMMs (training: 1024 queries x 256 shared negatives; evaluation: 256 queries x
   all entities of FB15k-237), fp32 vs bf16, best of 5, side by side.
2. For each trained run: test MRR and evaluation seconds (after a warm-up evaluation on valid,
   which compiles the fused kernels) with the model in fp32 and cast to bf16 (tables and
   scoring in bf16; ranks computed from bf16 scores).
Writes ``results/bench/bf16.json`` with the load average around the run and the provenance.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from kbit_dgl.bench.timing import LoadWatch, best_seconds
from kbit_dgl.eval import evaluate
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import provenance
from kbit_dgl.runs import load_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"train 1024x200 @ 200x256": (1024, 200, 256), "eval 256x200 @ 200x14541": (256, 200, 14541)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "bf16.json"))
    args = parser.parse_args()
    started, load = time.time(), LoadWatch()
    torch.set_num_threads(args.threads)
    result = {"torch_threads": args.threads, "gemm": {}, "runs": {}}
    for name, (m, k, n) in SHAPES.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        a16, b16 = a.bfloat16(), b.bfloat16()
        fp32, bf16 = best_seconds(lambda: a @ b), best_seconds(lambda: a16 @ b16)
        flops = 2 * m * k * n
        result["gemm"][name] = {"fp32_gflops": round(flops / fp32 / 1e9, 1),
                                "bf16_gflops": round(flops / bf16 / 1e9, 1),
                                "bf16_speedup": round(fp32 / bf16, 2)}
        print(name, result["gemm"][name], flush=True)
    for run in args.runs:
        _, kg, model = load_run(run)
        model.eval()
        entry = {}
        for dtype in ("fp32", "bf16"):
            if dtype == "bf16":
                model = model.to(torch.bfloat16)
            evaluate(model, kg, "valid")  # warm-up: torch.compile of the fused kernels for this dtype
            start = time.perf_counter()
            metrics = evaluate(model, kg, "test")
            entry[dtype] = {"mrr": round(float(metrics["mrr"]), 5), "hits@10": round(float(metrics["hits@10"]), 5),
                            "eval_seconds": round(time.perf_counter() - start, 2)}
        entry["mrr_change"] = round(entry["bf16"]["mrr"] - entry["fp32"]["mrr"], 5)
        entry["eval_speedup"] = round(entry["fp32"]["eval_seconds"] / entry["bf16"]["eval_seconds"], 2)
        result["runs"][os.path.basename(run.rstrip("/"))] = entry
        print(run, entry, flush=True)
    result["load_average_1_5_15min"] = load.record()
    result["provenance"] = provenance(started)
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
