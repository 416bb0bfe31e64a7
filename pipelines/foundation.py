"""Foundation benchmarks: default hyperparameters on the real benchmarks and the built-in KG.

    python pipelines/foundation.py --data-dir ../shared/data                 # the default set (RUNS)
    python pipelines/foundation.py --data-dir ../shared/data --only codex-s:rotate
    python pipelines/foundation.py --data-dir ../shared/data --only codex-s:rotate --set train.seed=1 --suffix=-s1
    python pipelines/foundation.py --data-dir ../shared/data --only fb15k-237:rotate   # LARGE_RUNS (hours)
    python pipelines/foundation.py --data-dir ../shared/data --only wn18rr:rotate --paper   # PAPER_CONFIGS

Each (dataset, model) trains with the *default* config (no per-dataset tuning) into
``runs/foundation/<dataset>-<model>`` and stores ``results/foundation/<dataset>-<model>.json``
(metrics + command, commit, machine, wall time); ``results/foundation/README.md`` tables them.
Runs go one after another: the machine has 2 cores and timings are only comparable unshared.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from kbit_dgl.bench.tables import foundation_table
from kbit_dgl.cli import comparison_tables
from kbit_dgl.config import Config
from kbit_dgl.data import load_dataset
from kbit_dgl.data.synthetic import PATTERNS
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import provenance
from kbit_dgl.train.trainer import train

RUNS = ["synthetic:transe", "synthetic:rotate", "nations:transe", "nations:rotate", "kinship:transe",
        "kinship:rotate", "codex-s:transe", "codex-s:transe_l2", "codex-s:rotate"]
# Reference numbers the foundation issue names (test MRR). The CoDEx paper's TransE (0.354) uses
# the L2 norm (its LibKGE config: transe.l_norm 2), so both TransE forms are held to it.
# The larger benchmarks (paper budgets of the speed issue) run only when named with --only (their
# wall and training seconds: results/foundation/<dataset>-<model>.json). Same defaults; targets from
# the RotatE paper (.338 / .476; its self-adversarial TransE reaches .332 on FB15k-237).
LARGE_RUNS = ["fb15k-237:transe", "fb15k-237:rotate", "wn18rr:rotate"]
TARGETS = {"codex-s:transe": 0.354, "codex-s:transe_l2": 0.354, "codex-s:rotate": 0.40, "kinship:rotate": 0.70,
           "fb15k-237:rotate": 0.33, "fb15k-237:transe": 0.31, "wn18rr:rotate": 0.47}
# Named paper configs (``--paper``, results named ``<dataset>-<model>-paper``): the speed issue allows
# a paper config where the defaults fall short of a paper number. WN18RR RotatE at the defaults
# (dim 200 = 100 complex, temperature 1; results/foundation/wn18rr-rotate.json) falls short of the
# paper's .476 at 500 complex dims, 1024 negatives, temperature 0.5, batch 512. This keeps the
# paper's temperature and batch, takes half its width (250 complex) and our 256 shared negatives
# (1024 would make an epoch several times slower on this CPU), and validates every 5 epochs so the
# plateau decays come sooner (results/foundation/wn18rr-rotate-paper.json).
PAPER_CONFIGS = {"wn18rr:rotate": ["model.dim=500", "train.adversarial_temperature=0.5", "train.batch_size=512",
                                   "train.valid_every=5"]}
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "foundation")


def run_one(spec: str, data_dir: str, runs_dir: str, overrides, suffix: str = "", resume: bool = False) -> dict:
    dataset, model = spec.split(":")
    started = time.time()
    kg = load_dataset(dataset, data_dir)
    config = Config()
    config.data.dataset, config.data.data_dir, config.model.name = dataset, None, model
    config.apply_overrides(overrides)
    name = f"{dataset}-{model}{suffix}"
    run_dir = os.path.join(runs_dir, name)
    resume = resume and os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    metrics = train(config, kg, run_dir, resume=resume, overwrite=not resume, progress=False)
    # On a resumed run, wall_seconds covers only this process; train_seconds (in the metrics)
    # is carried in the checkpoint and covers the whole run.
    record = {"spec": spec, "name": name, "overrides": list(overrides), "target_test_mrr": TARGETS.get(spec),
              "resumed": resume,
              "config": config.to_dict(), **metrics, "provenance": provenance(started)}
    atomic_write_json(os.path.join(RESULTS, f"{name}.json"), record)
    print(f"{spec}: test MRR {metrics['test']['mrr']:.4f} valid {metrics['valid']['mrr']:.4f} "
          f"({record['provenance']['wall_seconds']} s)", flush=True)
    return record


def write_table() -> None:
    text = foundation_table(RESULTS, RUNS + LARGE_RUNS, TARGETS)
    pair = [os.path.join(RESULTS, f"synthetic-{m}.json") for m in ("transe", "rotate")]
    if all(os.path.exists(path) for path in pair):
        results = {}
        for path in pair:
            with open(path) as handle:
                record = json.load(handle)
            results[record["model"]] = record
        text += ("\n## The built-in KG, per relation (test MRR, head and tail queries)\n\n```\n"
                 + comparison_tables(results, PATTERNS) + "\n```\n")
    atomic_write_text(os.path.join(RESULTS, "README.md"), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", "../shared/data"))
    parser.add_argument("--runs-dir", default="runs/foundation")
    parser.add_argument("--only", nargs="*", help=f"dataset:model specs (default: {' '.join(RUNS)}; "
                        f"the large ones, {' '.join(LARGE_RUNS)}, only when named)")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides applied to every run")
    parser.add_argument("--suffix", default="", help="added to result names, for runs with overrides")
    parser.add_argument("--resume", action="store_true",
                        help="continue runs whose folder holds a checkpoint (same config) instead of restarting them")
    parser.add_argument("--paper", action="store_true",
                        help=f"use the named paper config of each spec (PAPER_CONFIGS: {', '.join(PAPER_CONFIGS)}); "
                             "results are named <dataset>-<model>-paper")
    args = parser.parse_args()
    for spec in args.only or RUNS:
        overrides, suffix = list(args.set), args.suffix
        if args.paper:
            if spec not in PAPER_CONFIGS:
                parser.error(f"--paper: no paper config for {spec} (known: {', '.join(PAPER_CONFIGS)})")
            overrides, suffix = PAPER_CONFIGS[spec] + overrides, "-paper" + suffix
        run_one(spec, args.data_dir, args.runs_dir, overrides, suffix, resume=args.resume)
        write_table()


if __name__ == "__main__":
    main()
