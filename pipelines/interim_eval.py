"""Test metrics of an unfinished run's best model so far, with the validation history behind it.

    python pipelines/interim_eval.py RUN_DIR [--out results/foundation-interim]

For long runs (the large foundation benchmarks; their wall times are in results/foundation/) that
a session has to leave before early stopping ends them. The run folder is only read: ``model.pt``
is the best model by validation MRR so far, ``checkpoint.pt`` carries the history and the
learning-rate decays. Writes ``<out>/<run name>.json`` with the test metrics, the epoch of the
model, the history, and the command, commit, machine and wall time. ``kbit-dgl train --out RUN_DIR
--resume`` continues the run itself.
"""
from __future__ import annotations

import argparse
import os
import time

from kbit_dgl.eval import evaluate
from kbit_dgl.io import atomic_write_json, load_saved
from kbit_dgl.provenance import provenance
from kbit_dgl.runs import load_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "foundation-interim"))
    args = parser.parse_args()
    started = time.time()
    state = load_saved(os.path.join(args.run, "checkpoint.pt"), only=("state",))["state"]
    model_epoch = load_saved(os.path.join(args.run, "model.pt"), only=("epoch",))["epoch"]
    config, kg, model = load_run(args.run)
    test = evaluate(model, kg, "test")
    record = {"run": os.path.basename(os.path.normpath(args.run)), "dataset": config.data.dataset,
              "model": config.model.name, "finished": False, "model_epoch": model_epoch,
              "epochs_so_far": state["epoch"], "best_valid_mrr": state["best_valid_mrr"],
              "train_seconds_so_far": round(state["train_seconds"], 1), "lr_decays": state.get("lr_decays", []),
              "history": state["history"], "test": test, "config": config.to_dict(),
              "provenance": provenance(started)}
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, f"{record['run']}.json"), record)
    print(f"{record['run']}: model of epoch {model_epoch} (valid MRR {state['best_valid_mrr']:.4f}), "
          f"test MRR {test['mrr']:.4f} after {state['epoch']} epochs, "
          f"{state['train_seconds'] / 3600:.2f} h of training")


if __name__ == "__main__":
    main()
