"""How much of the k-bit loss comes from the small relation table? PTQ with the relation table
kept at more bits than the entity table.

    python pipelines/relation_bits.py --run runs/foundation/codex-s-rotate [--bits 4] [--block 64]

For one trained run (default: the foundation pipeline's codex-s RotatE run): test MRR at fp32, at
k bits for both tables, and at k bits for entities with the relation table at 8 / 16 bits
(RotatE: phases on a 2^k grid below 16 bits), for the int and quantile data types. Writes
``results/kbit-relation-bits/<run name>.json`` and ``.md`` with the bytes of every variant.
"""
from __future__ import annotations

import argparse
import os
import time

from kbit_dgl.eval import evaluate
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import provenance
from kbit_dgl.quant import QuantSpec, quantize_model, table_specs
from kbit_dgl.runs import load_run

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "kbit-relation-bits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/foundation/codex-s-rotate")
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--relation-bits", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    started = time.time()
    config, kg, model = load_run(args.run)
    fp32 = evaluate(model, kg, "test")["mrr"]
    rows = []
    for dtype in ("int", "quantile"):
        spec = QuantSpec(args.bits, dtype, args.block)
        for relation_bits in [None] + list(args.relation_bits):
            quantized = quantize_model(model, spec, table_specs(model.decoder, spec, relation_bits)[1])
            mrr = evaluate(quantized, kg, "test")["mrr"]
            report = quantized.byte_report()
            rows.append({"dtype": dtype, "entity_bits": args.bits, "relation_bits": relation_bits or args.bits,
                         "mrr": mrr, "mrr_ratio_to_fp32": mrr / fp32, "total_bytes": report["all"]["total"],
                         "relation_bytes": report["relation"]["total"], "fp32_bytes": report["all"]["fp32"]})
            print(f"{dtype:9s} entity {args.bits} bits, relation {rows[-1]['relation_bits']:2d} bits: "
                  f"MRR {mrr:.4f} ({100 * mrr / fp32:.1f} % of fp32), {report['all']['total']:,} bytes", flush=True)
    name = os.path.basename(os.path.normpath(args.run))
    record = {"run": args.run, "dataset": config.data.dataset, "model": config.model.name, "dim": config.model.dim,
              "fp32_mrr": fp32, "block": args.block, "rows": rows, "provenance": provenance(started)}
    atomic_write_json(os.path.join(RESULTS, f"{name}.json"), record)
    lines = [f"# {config.data.dataset} {config.model.name} (dim {config.model.dim}): relation table precision\n",
             f"`{record['provenance']['command']}` at `{record['provenance']['commit'][:10]}`, "
             f"{record['provenance']['wall_seconds']:.0f} s. fp32 test MRR {fp32:.4f}; block {args.block}, "
             "fp16 scales.\n", "| dtype | entity bits | relation bits | test MRR | % of fp32 | total bytes | "
             "relation bytes |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dtype']} | {r['entity_bits']} | {r['relation_bits']} | {r['mrr']:.4f} | "
              f"{100 * r['mrr_ratio_to_fp32']:.1f} | {r['total_bytes']:,} | {r['relation_bytes']:,} |" for r in rows]
    atomic_write_text(os.path.join(RESULTS, f"{name}.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
