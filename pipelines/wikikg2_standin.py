"""Write a wikikg2-shaped stand-in (OGB's layout, planted structure) and record what it cost.

    python pipelines/wikikg2_standin.py --root /tmp/standin --scale 0.1 --seed 0
    python pipelines/wikikg2_standin.py --root /tmp/standin-full --scale 1.0 --measure-load

Writes the dataset under ``ROOT/ogbl_wikikg2`` (big: the int64 negatives alone are 8.2 GB at scale 1; keep it out of the
repository) with :func:`kbit_dgl.data.standin.write_wikikg2_standin`, then stores a small record in
``results/standin/scale-<scale>-seed-<seed>.json``: the generator's summary (counts, the planted
model's MRR ceiling, skew), this process's peak resident memory, the load average and the
provenance; ``--measure-load`` adds the wall time and peak memory of
``load_dataset("ogbl-wikikg2", ROOT)`` in a fresh process, stopped past ``--load-rss-limit-gib``.
``results/standin/README.md`` tables every stored record.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import time

from kbit_dgl.bench.memory import peak_rss_mib
from kbit_dgl.bench.standin import measure_load, standin_table
from kbit_dgl.bench.timing import LoadWatch
from kbit_dgl.data.standin import write_wikikg2_standin
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import provenance

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "standin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder to write ogbl_wikikg2/ into (not the repository)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ROOT/ogbl_wikikg2")
    parser.add_argument("--measure-load", action="store_true", help="time load_dataset on the result")
    parser.add_argument("--load-rss-limit-gib", type=float, default=13.0)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    started, load_watch = time.time(), LoadWatch()
    summary = write_wikikg2_standin(args.root, scale=args.scale, seed=args.seed, overwrite=args.overwrite,
                                    progress=True)
    record = {"file": f"scale-{args.scale:g}-seed-{args.seed}.json", "standin": summary,
              "generator_peak_rss_mib": peak_rss_mib(), "root": os.path.abspath(args.root),
              "load_average": load_watch.record(2), "provenance": provenance(started)}
    if args.measure_load:
        record["load"] = measure_load("ogbl-wikikg2", args.root, args.load_rss_limit_gib * 1024)
    atomic_write_json(os.path.join(args.out, record["file"]), record)
    records = []
    for path in sorted(glob.glob(os.path.join(args.out, "scale-*.json"))):
        with open(path) as handle:
            records.append(json.load(handle))
    atomic_write_text(os.path.join(args.out, "README.md"), standin_table(records))
    planted = summary["planted"]["test"]
    print(f"stand-in at scale {args.scale}: planted test MRR {planted['mrr']:.4f} (random "
          f"{summary['random_mrr']:.4f}), {record['provenance']['wall_seconds']} s, peak RSS "
          f"{record['generator_peak_rss_mib'] / 1024:.2f} GiB" +
          (f"; load: {record['load']}" if args.measure_load else ""))


if __name__ == "__main__":
    main()
