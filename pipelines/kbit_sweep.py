"""k-bit sweep: test MRR against total model bits for dims x k x data types x block sizes (issue 5).

    python pipelines/kbit_sweep.py --quick                                # tiny check: nations, 5 epochs
    python pipelines/kbit_sweep.py --data-dir ../shared/data --threads 2  # codex-s, TransE + RotatE
    python pipelines/kbit_sweep.py --datasets codex-s fb15k-237 wn18rr --qat
    python pipelines/kbit_sweep.py --render results/kbit   # re-write README.md + figures from points.json

For each dataset x model x dim x seed a run is trained with the project's default config except
``model.dim`` and ``train.seed`` into ``runs/kbit/<dataset>-<model>-d<dim>-s<seed>`` (a finished
run there is reused, an interrupted one resumed: the sweep is resumable). Each trained model is
then quantised in memory for every k x data type at the main block size (16 / 32 bits once, as
plain fp16 / fp32), plus a block-size sweep at ``--block-bits`` for one dim, and ranked on test
(filtered, all entities). Total model bits = entity + relation tables as stored: packed codes,
block scales and metadata (header, codebook). ``--qat`` adds quantisation-aware training at low
k (``train.qat_bits``) for one dim, compared with post-training quantisation of the fp32 runs.
The test-ranking time of a 4-bit model is measured against its fp32 model side by side.

Writes ``<out>/points.csv`` and ``points.json`` (every point, the timings and the provenance:
command, commit, machine, wall time), ``frontier-<dataset>-<model>-<dtype>.png`` (MRR against
total bits, one curve per k through the dims, error bars = std over seeds),
``blocks-<dataset>-<model>.png`` and ``README.md`` (tables and the answer to "which (dim, k) is
best at a fixed memory budget", written from the numbers).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from kbit_dgl.scaling.kbit_report import rerender
from kbit_dgl.scaling.kbit_sweep import SweepSettings, parse_dim_seeds, run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = {"datasets": ["nations"], "dims": [8, 16], "seeds": [0], "max_epochs": 5}


def parse_args(argv: Optional[Sequence[str]] = None) -> SweepSettings:
    defaults = SweepSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, help=f"default {defaults.datasets}")
    parser.add_argument("--models", nargs="+", default=defaults.models)
    parser.add_argument("--dims", nargs="+", type=int, default=None, help=f"default {defaults.dims}")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help=f"default {defaults.seeds}")
    parser.add_argument("--dim-seeds", nargs="+", default=[], metavar="DIM=S[,S...]",
                        help="other seeds at some dims, e.g. 256=0 (one seed where a run is costly)")
    parser.add_argument("--bits", nargs="+", type=int, default=defaults.bits)
    parser.add_argument("--dtypes", nargs="+", default=defaults.dtypes)
    parser.add_argument("--block", type=int, default=defaults.block, help="numbers per scale of the main sweep")
    parser.add_argument("--blocks", nargs="+", type=int, default=defaults.blocks, help="block-size sweep")
    parser.add_argument("--block-bits", type=int, default=defaults.block_bits)
    parser.add_argument("--relation-bits", type=int, default=defaults.relation_min_bits, dest="relation_min_bits",
                        help="keep the relation table at max(k, N) bits (kbit-dgl quantize's default is 8); "
                             "0: at k like the entity table (QAT runs always keep k)")
    parser.add_argument("--block-dim", type=int, default=None, help="dim of the block-size sweep (default: largest)")
    parser.add_argument("--qat", action="store_true", help="add quantisation-aware training runs at low k")
    parser.add_argument("--qat-bits", nargs="+", type=int, default=defaults.qat_bits)
    parser.add_argument("--qat-dtypes", nargs="+", default=defaults.qat_dtypes)
    parser.add_argument("--qat-dim", type=int, default=None, help="dim of the QAT runs (default: the middle dim)")
    parser.add_argument("--no-timing", action="store_true", help="skip the 4-bit vs fp32 evaluation timing")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override train.max_epochs (run folders get an -e<N> suffix)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides for every run")
    parser.add_argument("--quick", action="store_true",
                        help="tiny check: nations, dims 8 16, 1 seed, 5 epochs, into runs/kbit-quick and "
                             "results/kbit-quick")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", os.path.join(ROOT, "..", "shared",
                                                                                         "data")))
    parser.add_argument("--runs-dir", default=None, help="default runs/kbit (quick: runs/kbit-quick)")
    parser.add_argument("--out", default=None, help="default results/kbit (quick: results/kbit-quick)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--reuse-points", nargs="+", default=[], metavar="POINTS_JSON",
                        help="earlier sweeps' points.json: their (dataset, model, dim, seed) points are taken as they "
                             "are, when swept with the same settings on the same data")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    settings = SweepSettings(
        datasets=args.datasets or quick.get("datasets", defaults.datasets), models=args.models,
        dims=args.dims or quick.get("dims", defaults.dims), seeds=args.seeds or quick.get("seeds", defaults.seeds),
        bits=args.bits, dtypes=args.dtypes, block=args.block, blocks=args.blocks, block_bits=args.block_bits,
        block_dim=args.block_dim, relation_min_bits=args.relation_min_bits, qat=args.qat, qat_bits=args.qat_bits,
        qat_dtypes=args.qat_dtypes,
        qat_dim=args.qat_dim, timing=not args.no_timing,
        max_epochs=args.max_epochs if args.max_epochs is not None else quick.get("max_epochs"),
        threads=args.threads, overrides=args.overrides, data_dir=args.data_dir, progress=args.progress,
        reuse_points=args.reuse_points, dim_seeds=parse_dim_seeds(args.dim_seeds),
        runs_dir=args.runs_dir or os.path.join(ROOT, "runs", "kbit-quick" if args.quick else "kbit"),
        out_dir=args.out or os.path.join(ROOT, "results", "kbit-quick" if args.quick else "kbit"))
    return settings


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--render"]:
        if len(argv) < 2:
            raise SystemExit("usage: kbit_sweep.py --render OUT_DIR [OUT_DIR ...]")
        for out_dir in argv[1:]:
            rerender(out_dir)
        return
    run_sweep(parse_args(argv), root=ROOT)


if __name__ == "__main__":
    main()
