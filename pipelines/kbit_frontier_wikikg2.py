"""The bits-vs-MRR frontier where memory matters: TransE on the wikikg2-size stand-in, dims x bits.

    python pipelines/kbit_frontier_wikikg2.py --root /tmp/standin-full --dims 100 200 400 --seeds 0 \
        --steps 10000 --test-sample 10000

Each (dim, seed) trains TransE with OGB's TransE-500 recipe (gamma 30, batch 512, 128 negatives,
self-adversarial loss, subsampling; row-wise Adagrad at lr 0.1: ``kbit_dgl/bench/leaderboard.py``) for
a budget of --steps steps, into ``RUNS/ogbl-wikikg2-transe-d<dim>-s<seed>-steps<steps>`` (reused when
finished). Each run is quantized at every --bits with NF4 codes in blocks of 64, the relation table
at max(k, 8) bits, and ranked under OGB's protocol on a fixed sample of --test-sample test triples
(both directions, each query against its own 500 negatives) from the packed codes. The points,
frontier figure and table go to ``results/kbit-wikikg2-standin/`` through the k-bit sweep
(:mod:`kbit_dgl.scaling.kbit_sweep`), with the command, commit, machine and wall time. The data under
--root is the real ogbl-wikikg2 when present, else ``pipelines/wikikg2_standin.py``'s stand-in.

``--schedule leaderboard`` trains each (dim, seed) on the OGB TransE-500 entry's own schedule
(``kbit_dgl/bench/leaderboard.py``: 200k steps unless --steps, validation and checkpoints every tenth)
instead, so a run of ``pipelines/reproduce_ogb.py`` at dim 500 can be reused: link its folder as
``RUNS/ogbl-wikikg2-transe-d500-s<seed>``. ``--dtypes`` adds other code types (``pq``: product
quantisation of the entity table; the relation table then gets 8-bit int codes).

``--reuse-points OLD/points.json`` takes the (dim, seed) points an earlier frontier measured, when it was
swept with the same schedule and bits settings on the same data (its points carry the data's
fingerprint): e.g. the leaderboard-schedule d500 points with new dims, without d500's run folder.
"""
from __future__ import annotations

import argparse
import os

from kbit_dgl.bench.leaderboard import COMMON, ENTRIES, ROWWISE
from kbit_dgl.data import load_dataset
from kbit_dgl.provenance import project_root
from kbit_dgl.scaling.kbit_sweep import SweepSettings, parse_dim_seeds, run_sweep
from kbit_dgl.train.trainer import split_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--dims", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dim-seeds", nargs="+", default=[], metavar="DIM=S[,S...]",
                        help="other seeds at some dims, e.g. 125=0,1,2 (3 seeds where a run is cheap)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 8, 32])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 10000; leaderboard: 200k)")
    parser.add_argument("--test-sample", type=int, default=10000)
    parser.add_argument("--dtypes", nargs="+", default=["quantile"], help="code types (kbit-dgl quantize --dtype)")
    parser.add_argument("--schedule", default="short", choices=["short", "leaderboard"],
                        help="short: --steps steps, one validation at the end; leaderboard: the OGB TransE-500 "
                             "entry's schedule (200k steps unless --steps)")
    parser.add_argument("--reuse-points", nargs="+", default=[], metavar="POINTS_JSON",
                        help="earlier frontiers' points.json: their (dim, seed) points are taken as they are (same "
                             "schedule, bits settings and data), so a dim needs no run folder")
    parser.add_argument("--runs-dir", default=os.path.join(project_root(), "runs", "kbit-wikikg2"))
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "kbit-wikikg2-standin"))
    args = parser.parse_args()
    if args.schedule == "leaderboard":  # the entry's overrides but the sweep's dim and seed
        overrides = [item for item in ENTRIES["wikikg2-transe-500"].config_overrides(0, args.steps or 0)
                     if not item.startswith(("model.dim=", "train.seed="))]
    else:
        steps = args.steps or 10000
        overrides = [*COMMON, *ROWWISE, "model.gamma=30", f"train.max_steps={steps}",
                     f"train.valid_every_steps={steps}", "eval.valid_sample=2000", "train.max_epochs=100000",
                     "train.lr_decay=0"]
    settings = SweepSettings(datasets=["ogbl-wikikg2"], models=["transe"], dims=args.dims, seeds=args.seeds,
                             dim_seeds=parse_dim_seeds(args.dim_seeds),
                             bits=args.bits, dtypes=args.dtypes, block=64, blocks=[], relation_min_bits=8,
                             timing=False, overrides=overrides, runs_dir=args.runs_dir, out_dir=args.out,
                             data_dir=args.root, reuse_points=args.reuse_points)

    def load(name: str):
        return split_sample(load_dataset(name, args.root), "test", args.test_sample, seed=0, protocol="ogb")
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # forked compile workers copy the tables
    run_sweep(settings, load_kg=load)


if __name__ == "__main__":
    main()
