"""Test MRR of the 1vsAll regime (ComplEx-N3, reciprocal relations) through `kbit-dgl train`, beside our defaults.

    python pipelines/onevsall_quality.py --data-dir ../shared/data --datasets kinship codex-s \\
        --arms complex-n3 complex-n3-rp --work /tmp/onevsall --seeds 0

One recipe for every KG (not tuned per benchmark): ComplEx at `model.dim` 1000 (500 complex numbers),
`train.objective=1vsall`, reciprocal relations, N3 at weight 0.05 (kbc's FB15k-237 value), Adagrad at
0.1, batches of 500 triples (1,000 queries), validation every 5 epochs, at most 100 epochs, with the
trainer's usual early stopping and plateau decays. `complex-n3-rp` adds relation prediction at weight
0.5. The negative-sampling side is the default config's run of the same KG (`results/foundation/`:
RotatE, dim 200), read from its file with its training seconds. Runs go one at a time; with --work a
finished run is read back and an interrupted one resumed from its checkpoint (long runs span sessions).
Writes results/onevsall/quality.json (command, commit, machine, load, wall time per run) after every run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from kbit_dgl.bench.runner import train_to_the_end
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance
from kbit_dgl.runs import run_finished

RECIPE = ["model.dim=1000", "model.reciprocal=true", "train.objective=1vsall", "train.optimizer=adagrad",
          "train.lr=0.1", "train.regularizer=n3", "train.regularization=0.05", "train.batch_size=500",
          "train.max_epochs=100", "train.valid_every=5"]
ARMS = {"complex-n3": ("complex", RECIPE),
        "complex-n3-rp": ("complex", RECIPE + ["train.relation_prediction=0.5"])}


def run_arm(args, dataset: str, arm: str, seed: int, earlier=()) -> dict:
    """One `kbit-dgl train` run; a finished run's row in ``earlier`` is kept as it was measured."""
    model, sets = ARMS[arm]
    run = os.path.join(args.work, f"{dataset}-{arm}-s{seed}")
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", dataset, "--data-dir", args.data_dir,
               "--model", model, "--out", run, "--no-progress", "--set", *sets, f"train.seed={seed}", *args.set]
    shown = " ".join(command[3:]).replace(run, "RUN").replace(args.data_dir, "DATA")
    if run_finished(run):
        for row in earlier:
            if (row["dataset"], row["arm"], row["seed"], row["command"]) == (dataset, arm, seed, shown):
                return row
    began, load_before = time.time(), os.getloadavg()
    metrics = train_to_the_end(command, run)
    return {"dataset": dataset, "arm": arm, "seed": seed, "test_mrr": metrics["test"]["mrr"],
            "test_hits@1": metrics["test"]["hits@1"], "test_hits@10": metrics["test"]["hits@10"],
            "valid_mrr": metrics["valid"]["mrr"], "epochs": metrics["epochs"], "best_epoch": metrics["best_epoch"],
            "stopped_early": metrics["stopped_early"], "train_seconds": metrics["train_seconds"],
            "num_parameters": metrics["num_parameters"], "wall_seconds_this_call": round(time.time() - began, 1),
            "load_before": list(load_before), "load_after": list(os.getloadavg()), "command": shown}


def baseline(dataset: str) -> dict:
    """The default config's runs of ``dataset`` (negative sampling, RotatE dim 200; seed 0 and any
    ``-s<k>`` seeds) from results/foundation/: their test MRRs, mean, and training seconds."""
    folder = os.path.join(project_root(), "results", "foundation")
    names = sorted(name for name in os.listdir(folder)
                   if name == f"{dataset}-rotate.json" or (name.startswith(f"{dataset}-rotate-s")
                                                            and name.endswith(".json")))
    seeds = []
    for name in names:
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            record = json.load(handle)
        metrics = record.get("metrics", record)
        seeds.append({"file": f"results/foundation/{name}", "test_mrr": metrics["test"]["mrr"],
                      "test_hits@10": metrics["test"]["hits@10"], "epochs": metrics["epochs"],
                      "train_seconds": metrics["train_seconds"]})
    if not seeds:
        return {}
    mrrs = [seed["test_mrr"] for seed in seeds]
    return {"model": "rotate", "objective": "negative_sampling", "seeds": seeds, "test_mrr": statistics.mean(mrrs),
            "test_mrr_std": statistics.stdev(mrrs) if len(mrrs) > 1 else None,
            "train_seconds": statistics.mean(seed["train_seconds"] for seed in seeds)}


def _mean_std(values) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def report(record: dict) -> str:
    """results/onevsall/README.md: each arm (mean ± std over its seeds) beside the default config's runs."""
    lines = ["# The 1vsAll regime against the default config", "",
             f"Generated by `pipelines/onevsall_quality.py` from `quality.json` (`{record['command']}`, commit "
             f"{record['commit'][:12]}). Recipe: `{' '.join(record['recipe'])}`; `-rp` adds "
             f"`train.relation_prediction=0.5`. Default config: negative sampling, RotatE dim 200, its runs in "
             f"`results/foundation/`. ± is the standard deviation over seeds.", "",
             "| dataset | run | seeds | test MRR | Hits@10 | epochs | train s (mean) | default config MRR "
             "| its train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    arms = {}
    for row in record["rows"]:
        arms.setdefault((row["dataset"], row["arm"]), []).append(row)
    for (dataset, arm), rows in arms.items():
        base = record["baselines"].get(dataset, {})
        shown = _mean_std(seed["test_mrr"] for seed in base["seeds"]) if base else "n/a"
        lines.append(f"| {dataset} | {arm} | {', '.join(str(row['seed']) for row in rows)} | "
                     f"{_mean_std(row['test_mrr'] for row in rows)} | "
                     f"{statistics.mean(row['test_hits@10'] for row in rows):.4f} | "
                     f"{', '.join(str(row['epochs']) for row in rows)} | "
                     f"{statistics.mean(row['train_seconds'] for row in rows):.0f} | {shown} | "
                     f"{base.get('train_seconds', float('nan')):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.path.join(project_root(), "..", "shared", "data"))
    parser.add_argument("--datasets", nargs="+", default=["kinship", "codex-s"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--set", nargs="*", default=[], help="config overrides after the recipe's")
    parser.add_argument("--work", default="/tmp/onevsall")
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "onevsall", "quality.json"))
    args = parser.parse_args()
    args.data_dir = os.path.abspath(args.data_dir)
    started = time.time()
    earlier = []
    if os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as handle:
            earlier = json.load(handle).get("rows", [])
    rows = [row for row in earlier if row["dataset"] not in args.datasets]
    for dataset in args.datasets:
        for seed in args.seeds:
            for arm in args.arms:
                rows.append(run_arm(args, dataset, arm, seed, earlier))
                print(json.dumps({k: rows[-1][k] for k in ("dataset", "arm", "seed", "test_mrr", "epochs",
                                                             "train_seconds")}), flush=True)
                datasets = sorted({row["dataset"] for row in rows})
                record = {**provenance(started), "recipe": RECIPE, "arms": ARMS, "rows": rows,
                          "baselines": {name: baseline(name) for name in datasets}}
                atomic_write_json(args.out, record)
                atomic_write_text(os.path.join(os.path.dirname(args.out), "README.md"), report(record))


if __name__ == "__main__":
    main()
