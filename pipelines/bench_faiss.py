"""Our k-bit tables beside FAISS at the same bytes per entity (needs faiss-cpu: ``pip install -e '.[bench]'``).

    python pipelines/bench_faiss.py --data-dir ../shared/data --dataset fb15k-237 \
        --models transe_l2 distmult complex --bits 8 4 2 --set train.max_epochs=30
    python pipelines/bench_faiss.py --random-entities 2500604 --random-dim 200 --bits 8 4 2

On a KG, each model is trained (``kbit-dgl train`` defaults and the ``--set`` overrides) into
``RUNS/<dataset>-<model>`` unless a finished run is there, and compared on the test split's tail and
head queries: recall@10 against the exact fp32 top 10, filtered MRR, top-10 queries/s and bytes per
entity (:mod:`kbit_dgl.bench.vector_search`). ``--random-entities`` compares on a random DistMult
table of that size instead (inner-product search; recall, speed and bytes only). L1 TransE, RotatE and
PairRE have no FAISS metric and are refused. Writes ``results/bench/faiss[-<tag>].json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import yaml

from kbit_dgl import api
from kbit_dgl.bench.vector_search import compare, comparison_table
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--models", nargs="+", default=["transe_l2", "distmult", "complex"])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--dtypes", nargs="+", default=["quantile", "int", "pq"],
                        help="our code types (kbit_dgl.quant.codebooks), each at every --bits")
    parser.add_argument("--set", nargs="*", default=[], help="training overrides (recorded)")
    parser.add_argument("--runs-dir", default=os.path.join(project_root(), "runs", "faiss"))
    parser.add_argument("--random-entities", type=int, help="compare on a random DistMult table of this many rows")
    parser.add_argument("--random-dim", type=int, default=200)
    parser.add_argument("--random-queries", type=int, default=512)
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench"))
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    sections, results = [], {}
    if args.random_entities:
        from kbit_dgl.bench.serving import NUM_RELATIONS, random_model

        model = random_model("distmult", args.random_entities, args.random_dim)
        generator = torch.Generator().manual_seed(1)
        triples = torch.stack([torch.randint(args.random_entities, (args.random_queries // 2,), generator=generator),
                               torch.randint(NUM_RELATIONS, (args.random_queries // 2,), generator=generator),
                               torch.randint(args.random_entities, (args.random_queries // 2,), generator=generator)],
                              1)
        records = compare(model, triples, args.bits, dtypes=tuple(args.dtypes))
        key = f"random distmult {args.random_entities:,} x {args.random_dim}"
        results[key] = records
        sections.append(f"## {key} ({args.random_queries} queries, inner product)\n\n" + comparison_table(records))
    else:
        overrides = {key.strip().replace(".", "__", 1): yaml.safe_load(value)
                     for key, value in (item.split("=", 1) for item in args.set)}
        for name in args.models:
            out = os.path.join(args.runs_dir, f"{args.dataset}-{name}")
            if os.path.exists(os.path.join(out, "metrics.json")):
                run = api.load_run(out)
            else:
                run = api.train(args.dataset, name, out, data_dir=args.data_dir, overwrite=True, progress=False,
                                **overrides)
            records = compare(run.model, run.kg.test, args.bits, kg=run.kg, dtypes=tuple(args.dtypes))
            results[name] = records
            sections.append(f"## {args.dataset} {name} (dim {run.config.model.dim}; {2 * len(run.kg.test):,} test "
                            f"queries; run {out})\n\n" + comparison_table(records))
    record = {**provenance(started), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()], "results": results}
    stem = os.path.join(args.out, "faiss" + (f"-{args.tag}" if args.tag else ""))
    atomic_write_json(stem + ".json", record)
    text = ("# k-bit tables beside FAISS\n\n" f"`{record['command']}` (commit {record['commit']}; load "
            f"{record['load_before']} before, {record['load_after']} after). Recall@10 against our exact fp32 "
            "top 10; ours score from the packed codes, FAISS's filtered MRR from the vectors its codes "
            "reconstruct; relations at fp32 on both sides.\n\n" + "\n".join(sections))
    atomic_write_text(stem + ".md", text)
    print(text)


if __name__ == "__main__":
    main()
