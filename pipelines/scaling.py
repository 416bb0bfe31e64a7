"""Scaling laws of KGE quality against model size, data and compute, with validated fits (issue 5).

    python pipelines/scaling.py --quick                                # tiny check: nations, 5 epochs
    python pipelines/scaling.py --data-dir ../shared/data --threads 2  # codex-s, TransE + RotatE

Three axes per dataset x model, each point ranked on test (filtered, all entities):

* **dim** (model size): the fp32 runs of ``pipelines/kbit_sweep.py`` (same folders, reused when
  finished, trained otherwise), one per dim x seed;
* **data**: a fraction of the training triples (a random subset drawn with the run's seed; valid
  and test unchanged, filtering still against every known triple of the full KG), at
  ``--data-dim``, with early stopping as usual; fraction 1 is the dim axis's run;
* **steps** (compute): one run per seed at ``--steps-dim`` without early stopping, trained in
  stages up to each of ``--steps-epochs`` by resuming its checkpoint (identical to one
  uninterrupted run), and the model *at* each stage end evaluated (not the best so far).

Quality: test MRR and a loss, the **mean log filtered rank** (mean of ln(rank) over test queries,
tail and head pooled; defined for every decoder, independent of the score scale; exp of it is the
geometric mean rank, see kbit_dgl/scaling/metrics.py). Each (axis, metric) gets a saturating
power law y = a x^-b + c and a plain power law y = a x^-b, fitted with scipy on every seed's
point, with standard errors from the covariance; each law is validated by refitting without the
largest x and predicting it. Writes ``<out>/points.csv``, ``points.json`` (with provenance),
``fits.json``, ``<axis>-<dataset>-<model>-<metric>.png`` and ``README.md`` (tables and
sentences generated from the fits).
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from kbit_dgl.scaling.law_report import AXES
from kbit_dgl.scaling.law_sweep import ScalingSettings, run_scaling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = {"datasets": ["nations"], "dims": [8, 16, 32, 64], "seeds": [0], "max_epochs": 5, "data_dim": 16,
         "steps_dim": 16, "steps_epochs": [1, 2, 3, 4, 5]}


def parse_args(argv: Optional[Sequence[str]] = None) -> ScalingSettings:
    defaults = ScalingSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=None, help=f"default {defaults.datasets}")
    parser.add_argument("--models", nargs="+", default=defaults.models)
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help=f"default {defaults.seeds}")
    parser.add_argument("--axes", nargs="+", choices=list(AXES), default=defaults.axes)
    parser.add_argument("--dims", nargs="+", type=int, default=None, help=f"default {defaults.dims}")
    parser.add_argument("--fractions", nargs="+", type=float, default=defaults.fractions)
    parser.add_argument("--data-dim", type=int, default=None, help=f"default {defaults.data_dim}")
    parser.add_argument("--steps-dim", type=int, default=None, help=f"default {defaults.steps_dim}")
    parser.add_argument("--steps-seeds", nargs="+", type=int, default=defaults.steps_seeds)
    parser.add_argument("--steps-epochs", nargs="+", type=int, default=None,
                        help=f"stage ends of the steps axis, default {defaults.steps_epochs}")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override train.max_epochs of the dim / data runs (folders get an -e<N> suffix)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="config overrides for every run")
    parser.add_argument("--quick", action="store_true",
                        help="tiny check: nations, dims 8..64, 1 seed, 5 epochs, into runs/*-quick and "
                             "results/scaling-quick")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", os.path.join(ROOT, "..", "shared",
                                                                                         "data")))
    parser.add_argument("--dim-runs-dir", default=None, help="runs of the dim axis, default runs/kbit (shared with "
                                                            "kbit_sweep.py; quick: runs/kbit-quick)")
    parser.add_argument("--runs-dir", default=None, help="default runs/scaling (quick: runs/scaling-quick)")
    parser.add_argument("--out", default=None, help="default results/scaling (quick: results/scaling-quick)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}

    def pick(name):
        value = getattr(args, name)
        return value if value is not None else quick.get(name, getattr(defaults, name))

    tag = "-quick" if args.quick else ""
    return ScalingSettings(
        datasets=pick("datasets"), models=args.models, seeds=pick("seeds"), axes=args.axes, dims=pick("dims"),
        fractions=args.fractions, data_dim=pick("data_dim"), steps_dim=pick("steps_dim"),
        steps_seeds=args.steps_seeds, steps_epochs=pick("steps_epochs"), max_epochs=pick("max_epochs"),
        threads=args.threads, overrides=args.overrides, data_dir=args.data_dir, progress=args.progress,
        dim_runs_dir=args.dim_runs_dir or os.path.join(ROOT, "runs", "kbit" + tag),
        runs_dir=args.runs_dir or os.path.join(ROOT, "runs", "scaling" + tag),
        out_dir=args.out or os.path.join(ROOT, "results", "scaling" + tag))


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_scaling(parse_args(argv), root=ROOT)


if __name__ == "__main__":
    main()
