"""Load an OGB knowledge graph twice in fresh processes: through ogb (which writes kbit-dgl's compact
cache) and again from the cache; wall time and peak RSS of each.

    python pipelines/bench_ogb_load.py --root /tmp/standin-full [--dataset ogbl-wikikg2]

The root holds OGB's layout (the real download, or `pipelines/wikikg2_standin.py`'s stand-in). The
cache under <dataset>/processed/kbit_cache is removed first, so the first load is a cold one.
Writes results/bench/ogb_load.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

from kbit_dgl.bench.standin import measure_load
from kbit_dgl.data.ogb import ogb_dataset_dir
from kbit_dgl.io import atomic_write_json
from kbit_dgl.provenance import project_root, provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--dataset", default="ogbl-wikikg2")
    parser.add_argument("--rss-limit-gib", type=float, default=14.0)
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench", "ogb_load.json"))
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    shutil.rmtree(os.path.join(ogb_dataset_dir(args.dataset, args.root), "processed", "kbit_cache"),
                  ignore_errors=True)
    through_ogb = measure_load(args.dataset, args.root, args.rss_limit_gib * 1024)
    print("through ogb (writes the cache):", through_ogb, flush=True)
    from_cache = measure_load(args.dataset, args.root, args.rss_limit_gib * 1024)
    print("from the cache:", from_cache, flush=True)
    atomic_write_json(args.out, {**provenance(started), "load_before": list(load_before),
                                 "load_after": list(os.getloadavg()), "dataset": args.dataset, "root": args.root,
                                 "through_ogb_writing_the_cache": through_ogb, "from_the_cache": from_cache})


if __name__ == "__main__":
    main()
