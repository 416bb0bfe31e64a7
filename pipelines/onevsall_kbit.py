"""k-bit tables of the 1vsAll models: test MRR of each run at NF-k codes against its fp32 tables.

    python pipelines/onevsall_kbit.py /tmp/onevsall/codex-s-complex-n3-s0 --bits 8 4 3 2 --block 64

Each run folder (a `kbit-dgl train` run, e.g. from `pipelines/onevsall_quality.py`) is quantized with
`kbit_dgl.api.quantize` (NF-k: `dtype=quantile`, blocks of --block numbers, fp16 scales, relations at
max(k, 8) bits, the default) into a temporary folder and evaluated on the test split with the filtered
protocol; the retention is k-bit MRR / fp32 MRR. Writes results/onevsall/kbit-<run name>.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from kbit_dgl import api
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import project_root, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--bits", nargs="+", type=int, default=[8, 4, 3, 2])
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--dtype", default="quantile")
    parser.add_argument("--out-dir", default=os.path.join(project_root(), "results", "onevsall"))
    args = parser.parse_args()
    for run_dir in args.runs:
        started = time.time()
        run = api.load_run(run_dir)
        fp32 = run.evaluate("test")
        points = [{"bits": 32, "test_mrr": fp32["mrr"], "test_hits@10": fp32["hits@10"], "retention": 1.0}]
        scratch = tempfile.mkdtemp(prefix="onevsall_kbit_")
        try:
            for bits in args.bits:
                packed = run.quantize(os.path.join(scratch, f"k{bits}"), bits=bits, dtype=args.dtype, block=args.block)
                result = packed.evaluate("test")
                points.append({"bits": bits, "dtype": args.dtype, "block": args.block, "test_mrr": result["mrr"],
                               "test_hits@10": result["hits@10"], "retention": result["mrr"] / fp32["mrr"],
                               "ratio_to_fp32_bytes": result.get("quant", {}).get("ratio_to_fp32")})
                print(os.path.basename(run_dir.rstrip("/")), points[-1], flush=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        name = os.path.basename(os.path.abspath(run_dir))
        atomic_write_json(os.path.join(args.out_dir, f"kbit-{name}.json"),
                          {**provenance(started), "run": name, "config": run.config.to_dict(), "points": points})


if __name__ == "__main__":
    main()
