"""k-bit inference against fp32 at 15k and 2.5M entities: queries/s, latency and peak memory.

    python pipelines/bench_kbit_serving.py --sizes 14541 2500604 --dim 500 --bits 32 8 4 3

For each size, a random TransE table of that shape (only speed and memory are measured; the tests
check that k-bit results equal the dequantized model's) is quantized once (int codes, blocks of 64,
relations at 8 bits: ``kbit-dgl quantize``'s defaults) into --work. Then every (task, bits) runs in
its own process, bit widths interleaved: ``topk`` answers --topk-queries queries with their best 10
entities against all entities (batches of 256, plus single-query latencies), ``ogb`` scores
--ogb-queries queries against 1,001 candidates each (OGB's protocol). Peak RSS is each process's own
VmHWM (Python and torch included). Writes ``results/bench/kbit_serving.json`` and ``.md`` with the
command, commit, machine and the load before and after.
"""
from __future__ import annotations

import argparse
import os
import time

from kbit_dgl.bench.serving import measure_in_child, prepare_in_child, serving_table
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[14541, 2500604])
    parser.add_argument("--dim", type=int, default=500)
    parser.add_argument("--model", default="transe")
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 8, 4, 3])
    parser.add_argument("--tasks", nargs="+", default=["ogb", "topk"], choices=["ogb", "topk"])
    parser.add_argument("--topk-queries", type=int, default=512)
    parser.add_argument("--ogb-queries", type=int, default=8192)
    parser.add_argument("--singles", type=int, default=10, help="single-query latencies per top-k measurement")
    parser.add_argument("--work", default="/tmp/kbit-serving", help="where the packed random models go")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench", "kbit_serving"))
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    records = []
    for entities in args.sizes:
        prepare_in_child(args.work, args.model, entities, args.dim, args.bits)
        for task in args.tasks:
            queries = args.topk_queries if task == "topk" else args.ogb_queries
            for bits in args.bits:
                record = measure_in_child(task, args.work, args.model, entities, args.dim, bits, queries,
                                          singles=args.singles)
                record["load_average"] = [round(value, 2) for value in os.getloadavg()]
                records.append(record)
                print({key: record[key] for key in ("entities", "task", "bits", "queries_per_second",
                                                    "peak_rss_mib")}, flush=True)
    result = {**provenance(started), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()], "records": records}
    atomic_write_json(args.out + ".json", result)
    atomic_write_text(args.out + ".md", "# k-bit inference against fp32\n\n"
                      f"`{result['command']}` (commit {result['commit']}, load {result['load_before']} before, "
                      f"{result['load_after']} after). Random {args.model} tables; every row is its own process.\n\n"
                      + serving_table(records))
    print(serving_table(records))


if __name__ == "__main__":
    main()
