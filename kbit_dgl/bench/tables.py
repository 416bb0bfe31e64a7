"""README tables of the foundation and R-GCN benchmarks, rendered from their per-run JSON files.

Each run of ``pipelines/foundation.py`` / ``pipelines/rgcn.py`` stores one JSON (metrics, config,
provenance) in its results folder; these functions turn the folder into the markdown table of
its README.md, so the table always shows every stored run and nothing typed by hand.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import Dict, List, Optional, Sequence


def _read(folder: str, name: str) -> Dict:
    with open(os.path.join(folder, name + ".json")) as handle:
        return json.load(handle)


def seed_summary(folder: str, names: Sequence[str], targets: Dict[str, float]) -> str:
    """Mean and sample standard deviation of test MRR over seeds: runs whose only overrides
    besides the thread count are ``train.seed`` (seed 0 = the default run); "" when no spec has
    more than one such run."""
    groups: Dict[str, List[float]] = {}
    for name in names:
        r = _read(folder, name)
        others = [o for o in r.get("overrides", []) if not o.startswith(("train.num_threads", "train.seed"))]
        if not others:
            groups.setdefault(r["spec"], []).append(r["test"]["mrr"])
    lines = [f"| {spec} | {len(v)} | {statistics.mean(v):.4f} | {statistics.stdev(v):.4f} | "
             f"{' / '.join(f'{x:.4f}' for x in v)} | {'' if targets.get(spec) is None else f'>= {targets[spec]}'} |"
             for spec, v in groups.items() if len(v) > 1]
    if not lines:
        return ""
    return ("\n## Over seeds (default config, `train.seed` 0, 1, 2)\n\n| run | seeds | mean test MRR | sd | "
            "per seed | target |\n|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def foundation_table(folder: str, specs: Sequence[str], targets: Dict[str, Optional[float]]) -> str:
    """README.md of ``results/foundation`` (without the built-in KG's per-relation section): one
    row per stored run, the default runs first in the order of ``specs`` (``dataset:model``),
    then the rest by name, and the summary over seeds."""
    rows = []
    default_names = [spec.replace(":", "-") for spec in specs]
    names = sorted((f[:-5] for f in os.listdir(folder) if f.endswith(".json")),
                   key=lambda n: (default_names.index(n) if n in default_names else len(default_names), n))
    for name in names:
        r = _read(folder, name)
        target = targets.get(r["spec"])
        changed = " ".join(o for o in r.get("overrides", []) if not o.startswith("train.num_threads"))
        changed = changed or "defaults"
        rows.append(f"| {r['dataset']} | {r['model']} | {changed} | {r['test']['mrr']:.4f} | "
                    f"{r['test']['hits@1']:.3f} | "
                    f"{r['test']['hits@10']:.3f} | {r['valid']['mrr']:.3f} | "
                    f"{'' if target is None else f'>= {target}'} | {r['best_epoch']}/{r['epochs']} | "
                    f"{r['train_seconds']:.0f} | {r['train_triples_per_second']:,.0f} | "
                    f"{r['provenance']['wall_seconds']:.0f}"
                    f"{' (resumed run: this process only)' if r.get('resumed') else ''}"
                    f" | `{r['provenance']['commit'][:10]}` |")
    seeds_text = seed_summary(folder, names, targets)
    header = ("| dataset | model | config | test MRR | H@1 | H@10 | valid MRR | target | best/last epoch | train s | "
              "triples/s | wall s | commit |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    return ("# Foundation benchmarks (default hyperparameters)\n\nProduced by `python pipelines/foundation.py "
            "--data-dir ../shared/data` (one JSON per run beside this file, with the exact command, commit, "
            "machine and wall time). Filtered ranking, head and tail pooled, ties = mean rank.\n\n"
            + header + "\n" + "\n".join(rows) + "\n" + seeds_text)


def rgcn_table(folder: str) -> str:
    """README.md of ``results/rgcn``: one row per stored run (sorted by file name), runs that ran
    out of memory under their limit included."""
    rows = []
    for file_name in sorted(f for f in os.listdir(folder) if f.endswith(".json")):
        r = _read(folder, file_name[:-5])
        if "out_of_memory" in r:
            rows.append(f"| {r['dataset']} | rgcn + {r['model']} | {r['config']['encoder']['mode']} | "
                        f"{' '.join(r['overrides']) or 'pipeline settings'} | out of memory under "
                        f"{r['memory_limit_gb']} GiB | | | | | {r['peak_rss_mb']:.0f} | "
                        f"{r['rss_before_training_mb']:.0f} | {r['provenance']['wall_seconds']:.0f} | "
                        f"`{r['provenance']['commit'][:10]}` |")
            continue
        rows.append(f"| {r['dataset']} | rgcn + {r['model']} | {r['config']['encoder']['mode']} | "
                    f"{' '.join(r['overrides']) or 'pipeline settings'} | {r['test']['mrr']:.4f} | "
                    f"{r['test']['hits@1']:.3f} | {r['test']['hits@10']:.3f} | {r['best_epoch']}/{r['epochs']} | "
                    f"{r['seconds_per_epoch']:.1f} | {r['peak_rss_mb']:.0f} | {r['rss_before_training_mb']:.0f} | "
                    f"{r['provenance']['wall_seconds']:.0f} | `{r['provenance']['commit'][:10]}` |")
    header = ("| dataset | model | mode | overrides | test MRR | H@1 | H@10 | best/last epoch | s/epoch | "
              "peak RSS MiB | RSS before training MiB | wall s | commit |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    return ("# R-GCN encoder results\n\nProduced by `python pipelines/rgcn.py` (settings in that file; one JSON "
            "per run beside this file with the exact command, commit, machine and wall time). Filtered ranking, "
            "head and tail pooled. Peak RSS is each run's own process. `random-N` rows train on a generated KG of N "
            "entities and 2N uniformly random triples (`--random-kg N`): only their time and memory mean anything; "
            "`--memory-limit-gb` capped their address space (RLIMIT_AS, which includes ~4 GiB of mapped "
            "libraries).\n\n" + header + "\n" + "\n".join(rows) + "\n")
