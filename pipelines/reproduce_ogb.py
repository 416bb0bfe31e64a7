"""Reproduce OGB leaderboard entries (ogbl-wikikg2: TransE-500, RotatE-250, PairRE-200; ogbl-biokg:
TransE-2000, RotatE-1000, ComplEx-1000) over N seeds and report them in the leaderboard's form.

    python pipelines/reproduce_ogb.py --root DATA --entries wikikg2-transe-500 --seeds 10
    python pipelines/reproduce_ogb.py --root /tmp/standin-full --entries wikikg2-transe-500 --seeds 1

DATA holds OGB's folders (``ogbl_wikikg2/``, ``ogbl_biokg/``: the real downloads). Without the real
wikikg2 the script writes the stand-in there first (``kbit_dgl.data.standin``, 150 s, 8.2 GB on disk;
``--standin-scale`` for a fraction) and says so in every record; biokg has no stand-in and is skipped.
Each seed trains with ``kbit-dgl train`` in its own process (hyperparameters, and where ours differ from
the leaderboard's and why: ``kbit_dgl/bench/leaderboard.py``) into ``RUNS/<entry>/seed-<k>``; a run
that was killed resumes from its last step checkpoint, a finished one is reused. Each seed's record
(valid/test MRR under OGB's protocol, #params, train and total wall time, peak memory, throughput,
the load average, the commit) goes to ``OUT/<entry>/seed-<k>.json``, and ``OUT/README.md`` tables
every entry: valid/test MRR mean ± std beside the leaderboard's, #params, hardware and time.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
from typing import Optional

from kbit_dgl.bench.leaderboard import ENTRIES, format_mrr, leaderboard_row
from kbit_dgl.bench.memory import run_watched
from kbit_dgl.data.ogb import missing_ogb_files, ogb_dataset_dir
from kbit_dgl.io import atomic_write_json, atomic_write_text
from kbit_dgl.provenance import project_root, provenance

STANDIN_FILE = "standin.json"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+) ")


def final_eval_seconds(run: str) -> Optional[float]:
    """Seconds from the last validation to the test metrics in the run's train.log: the full-split
    valid and test evaluations (and the last checkpoint), whether or not the run was resumed."""
    try:
        lines = open(os.path.join(run, "train.log"), encoding="utf-8").read().splitlines()
    except OSError:
        return None

    def stamp(line):
        match = STAMP.match(line)
        return time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
    valid = [line for line in lines if " valid mrr " in line and STAMP.match(line)]
    test = [line for line in lines if " test mrr " in line and STAMP.match(line)]
    return round(stamp(test[-1]) - stamp(valid[-1]), 1) if valid and test else None


def data_kind(dataset: str, root: str) -> str:
    """``real``, ``stand-in`` or ``missing``."""
    if missing_ogb_files(dataset, root):
        return "missing"
    return "stand-in" if os.path.exists(os.path.join(ogb_dataset_dir(dataset, root), STANDIN_FILE)) else "real"


def ensure_data(dataset: str, root: str, scale: float) -> str:
    kind = data_kind(dataset, root)
    if kind == "missing" and dataset == "ogbl-wikikg2":
        from kbit_dgl.data.standin import write_wikikg2_standin

        print(f"no ogbl-wikikg2 under {root}: writing the stand-in (scale {scale})", flush=True)
        write_wikikg2_standin(root, scale=scale, seed=0)
        kind = data_kind(dataset, root)
    return kind


def train_seed(entry, seed: int, args, kind: str) -> dict:
    run = os.path.join(args.runs_dir, entry.key, f"seed-{seed}")
    record_path = os.path.join(args.out, entry.key, f"seed-{seed}.json")
    metrics_path = os.path.join(run, "metrics.json")
    overrides = entry.config_overrides(seed, steps=args.steps, valid_every_steps=args.valid_every_steps) + args.set
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", entry.dataset, "--data-dir", args.root,
               "--model", entry.model, "--out", run, "--no-progress", "--set", *overrides]
    watched = None
    started, load_before = time.time(), os.getloadavg()
    if not os.path.exists(metrics_path):
        if os.path.exists(os.path.join(run, "checkpoint.pt")):
            command.append("--resume")
        os.makedirs(os.path.dirname(run), exist_ok=True)
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": "1"}  # forked compile workers copy the tables
        print(f"{entry.key} seed {seed}: {' '.join(command)}", flush=True)
        watched = run_watched(command, env=env, log_path=run + ".out")
        if watched["returncode"] != 0:
            raise SystemExit(f"{entry.key} seed {seed}: kbit-dgl train exited with {watched['returncode']}; "
                             f"see {run}.out and {run}/train.log (rerun to resume from the last checkpoint)")
    elif os.path.exists(record_path):
        record = json.load(open(record_path, encoding="utf-8"))
        if record.get("final_eval_seconds") is None:  # a record of an older version of this script
            record.pop("eval_seconds", None)
            record["final_eval_seconds"] = final_eval_seconds(run)
            atomic_write_json(record_path, record)
        return record
    metrics = json.load(open(metrics_path, encoding="utf-8"))
    record = {**provenance(started), "entry": entry.key, "seed": seed, "data": kind, "root": args.root,
              "run": run, "command_run": " ".join(command),
              "load_before": [round(value, 2) for value in load_before],
              "load_after": [round(value, 2) for value in os.getloadavg()],
              "valid_mrr": metrics["valid"]["mrr"], "test_mrr": metrics["test"]["mrr"],
              "valid": metrics["valid"], "test": metrics["test"], "steps": metrics["steps"],
              "num_parameters": metrics["num_parameters"], "train_seconds": metrics["train_seconds"],
              "train_triples_per_second": metrics["train_triples_per_second"],
              "train_triples_per_second_steady": metrics["train_triples_per_second_steady"],
              "history": metrics["history"], "ogb_command": entry.ogb_command,
              "differences": list(entry.differences), "overrides": overrides}
    if watched:  # this invocation trained (or resumed) the run: its wall time and memory are known
        record.update(wall_seconds=watched["wall_seconds"], peak_rss_gib=watched["peak_rss_gib"],
                      resumed="--resume" in command)
    record["final_eval_seconds"] = final_eval_seconds(run)
    if kind == "stand-in":
        summary = json.load(open(os.path.join(ogb_dataset_dir(entry.dataset, args.root), STANDIN_FILE)))
        record["planted_ceiling"] = {split: summary["planted"][split]["mrr"] for split in ("valid", "test")}
        record["standin_scale"] = summary.get("scale")
    atomic_write_json(record_path, record)
    return record


def render(out: str) -> str:
    lines = ["# OGB leaderboard entries, reproduced", "",
             "Written by `pipelines/reproduce_ogb.py` from the per-seed records in this folder. MRR under OGB's "
             "protocol (each query against its 500 + 500 given negatives), mean ± sample std over the seeds "
             "(one seed: its value alone, marked \"(1 seed)\": its noise is unknown, not zero), "
             "beside the leaderboard's (10 seeds on a GPU). On the stand-in the leaderboard's numbers do not "
             "apply: compare with the planted ceiling instead.", "",
             "| entry | data | seeds | steps | valid MRR | test MRR | leaderboard valid | leaderboard test | "
             "planted ceiling (test) | #params | hardware | train time | final valid + test evaluation | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for key, entry in ENTRIES.items():
        records = [json.load(open(path)) for path in sorted(glob.glob(os.path.join(out, key, "seed-*.json")))]
        for kind in sorted({record["data"] for record in records}):
            chosen = [record for record in records if record["data"] == kind]
            row = leaderboard_row(entry, chosen)
            ceiling = chosen[0].get("planted_ceiling", {}).get("test")
            host = chosen[0].get("machine", {})
            hardware = host.get("device") or f"CPU, {host.get('cpu_cores', '?')} cores"
            peak = f"{row['peak_rss_gib']:.1f} GiB" if row["peak_rss_gib"] else "n/a"
            evaluation = f"{row['final_eval_seconds'] / 60:.1f} min" if row["final_eval_seconds"] else "n/a"
            scale = chosen[0].get("standin_scale")
            label = kind if scale in (None, 1, 1.0) else f"{kind} (scale {scale})"
            steps = "/".join(sorted({f"{record['steps']:,}" for record in chosen}))
            lines.append(f"| {key} | {label} | {len(chosen)} | {steps} | {format_mrr(row['valid_mrr'])} | "
                         f"{format_mrr(row['test_mrr'])} | {format_mrr(row['reference_valid_mrr'])} | "
                         f"{format_mrr(row['reference_test_mrr'])} | {ceiling if ceiling else 'n/a'} | "
                         f"{row['num_parameters']:,} | {hardware} | {row['train_seconds'] / 3600:.2f} h | "
                         f"{evaluation} | {peak} |")
        if records:
            notes.append(f"- **{key}**: the leaderboard's `{entry.ogb_command}`; here: "
                         + "; ".join(entry.differences) + ".")
    return "\n".join(lines + ["", "How each entry differs from the leaderboard's run:", "", *notes]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder holding ogbl_wikikg2/ and ogbl_biokg/ (required unless --render)")
    parser.add_argument("--entries", nargs="+", choices=sorted(ENTRIES), help="default: every entry with data")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per entry (OGB asks for 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=0, help="replace the leaderboard's step budget (a shorter "
                                                             "trial; the record says so)")
    parser.add_argument("--valid-every-steps", type=int, default=0, help="default: a tenth of the steps")
    parser.add_argument("--standin-scale", type=float, default=1.0)
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides (recorded)")
    parser.add_argument("--runs-dir", default=os.path.join(project_root(), "runs", "ogb"))
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "ogb"))
    parser.add_argument("--render", action="store_true", help="only re-render OUT/README.md")
    args = parser.parse_args()
    if not args.render and not args.root:
        parser.error("--root is required (unless --render)")
    if not args.render:
        for key in args.entries or sorted(ENTRIES):
            entry = ENTRIES[key]
            kind = ensure_data(entry.dataset, args.root, args.standin_scale)
            if kind == "missing":
                print(f"{key}: no {entry.dataset} under {args.root} and no stand-in for it; skipped", flush=True)
                continue
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                record = train_seed(entry, seed, args, kind)
                print(f"{key} seed {seed} ({kind}): valid MRR {record['valid_mrr']:.4f}, "
                      f"test MRR {record['test_mrr']:.4f}", flush=True)
    atomic_write_text(os.path.join(args.out, "README.md"), render(args.out))
    print(f"wrote {os.path.join(args.out, 'README.md')}")


if __name__ == "__main__":
    main()
