"""The peer comparison's summary and table: medians per (model, peer) over repetitions, kbit-dgl's
ratios to each peer, and the markdown of ``results/bench/peers.md``.

The measurements come from ``pipelines/bench_peers.py`` (one subprocess per peer, model and
repetition); a run is a dict with the peer, the model and the measured rates (see
:func:`summarize`).
"""
from __future__ import annotations

import statistics
from typing import Dict, List, Optional, Sequence

SUMMARY_KEYS = ("train_triples_per_second", "eval_seconds_per_1000_triples", "peak_rss_mib", "train_scoring_gflops",
                "eval_scoring_gflops", "matmul_gflops")


def scoring_rates(measured: Dict, steps: int, batch_size: int, num_negatives: int, num_eval: int,
                  num_entities: int, flops_per_pair: float) -> Dict[str, float]:
    """One worker's rates from its ``train_seconds`` (``steps`` timed steps of ``batch_size``
    positives, ``num_negatives`` each), ``eval_seconds`` (``num_eval`` test triples against
    ``num_entities`` candidates, in ``eval_directions`` directions) and a nominal FLOP count per
    (query, candidate) pair: training counts forward + backward as 3x forward over
    B * (1 + negatives) pairs per step, evaluation the forward over all entities per query."""
    train_flops = 3 * steps * batch_size * (1 + num_negatives) * flops_per_pair
    eval_flops = measured["eval_directions"] * num_eval * num_entities * flops_per_pair
    return {"train_triples_per_second": steps * batch_size / measured["train_seconds"],
            "eval_seconds_per_1000_triples": measured["eval_seconds"] * 1000 / num_eval, "eval_triples": num_eval,
            "train_scoring_gflops": train_flops / measured["train_seconds"] / 1e9,
            "eval_scoring_gflops": eval_flops / measured["eval_seconds"] / 1e9}


def summarize(runs: List[Dict], peers: Sequence[str], models: Sequence[str]) -> Dict:
    """``{"table": {model: {peer: row}}, "kbit_dgl_ratios": {model: {...}}}``.

    A row holds the median of each of ``SUMMARY_KEYS`` over the runs of that peer and model that
    did not fail (runs with an ``error`` are left out), the largest peak RSS, the number of
    repetitions, how the peer evaluates (``eval_directions``, ``eval_filtered``) and its scoring
    rates as fractions of the matmul rate. The ratios are kbit-dgl's (dense Adam) training speed
    and evaluation speed over each other peer's.
    """
    table: Dict[str, Dict[str, Dict]] = {}
    keys = SUMMARY_KEYS
    for model in models:
        for peer in peers:
            done = [run for run in runs if run["peer"] == peer and run["model"] == model and "error" not in run]
            if not done:
                continue
            # a peer's own-defaults row times training alone, on its own workload: no eval, no FLOP rates
            row = {f"{key}_median": round(statistics.median(run[key] for run in done), 3) for key in keys
                   if all(key in run for run in done)}
            row["peak_rss_mib_max"] = max(run["peak_rss_mib"] for run in done)
            row["repetitions"] = len(done)
            row["eval_directions"], row["eval_filtered"] = done[0].get("eval_directions"), done[0].get("eval_filtered")
            for kind in ("train", "eval"):
                if f"{kind}_scoring_gflops_median" in row:
                    row[f"{kind}_fraction_of_matmul"] = round(
                        row[f"{kind}_scoring_gflops_median"] / row["matmul_gflops_median"], 4)
            table.setdefault(model, {})[peer] = row
    ratios: Dict[str, Dict[str, float]] = {}
    for model, rows in table.items():
        if "kbit-dgl" not in rows:
            continue
        ours = rows["kbit-dgl"]
        for peer, row in rows.items():
            if peer == "kbit-dgl":
                continue
            ratios.setdefault(model, {})[f"train_speedup_vs_{peer}"] = round(
                ours["train_triples_per_second_median"] / row["train_triples_per_second_median"], 2)
            if "eval_seconds_per_1000_triples_median" in row:
                ratios[model][f"eval_speedup_vs_{peer}"] = round(
                    row["eval_seconds_per_1000_triples_median"] / ours["eval_seconds_per_1000_triples_median"], 2)
    return {"table": table, "kbit_dgl_ratios": ratios}


def markdown(summary: Dict, results: Dict) -> str:
    """peers.md: provenance, workload, the table of :func:`summarize`, the ratios and what each
    peer runs (``results["peer_notes"]``)."""
    lines = ["# kbit-dgl vs PyKEEN vs PyG (torch_geometric.nn.kge)", "",
             f"`{results['provenance']['command']}` at {results['provenance']['commit']}, "
             f"{results['provenance']['finished']}, wall {results['provenance']['wall_seconds']} s; "
             f"mode: {results['mode']}; machine: {results['provenance']['machine']['cpu_cores']} cores, "
             f"torch {results['provenance']['machine']['torch']}, {results['threads']} threads; "
             f"load average before/after {results['load_average']['before'][0]} / "
             f"{results['load_average']['after'][0]}.", "",
             "FB15k-237, batch 1024, 256 negatives per positive, Adam lr 1e-3, dim 200 (RotatE 100 complex). "
             "Medians over repetitions. Eval: seconds per 1,000 test triples "
             f"({results['workload']['eval_triples']} timed); kbit-dgl and PyKEEN rank both directions, filtered; "
             "**PyG ranks tails only, unfiltered** (its `KGEModel.test`). GFLOP/s: nominal scoring FLOPs over "
             "the whole step or evaluation time, against fp32 matmul measured in the same worker.", "",
             "| model | peer | train triples/s | eval s / 1k triples | eval directions | peak RSS MiB | "
             "train GFLOP/s (of matmul) | eval GFLOP/s (of matmul) | matmul GFLOP/s | reps |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    def rate(row, kind):
        if f"{kind}_scoring_gflops_median" not in row:
            return "-"
        return f"{row[f'{kind}_scoring_gflops_median']:.2f} ({row[f'{kind}_fraction_of_matmul']:.1%})"

    for model, rows in summary["table"].items():
        for peer, row in rows.items():
            if row["eval_filtered"] is None:
                directions, eval_seconds = "(own workload, training only)", "-"
            else:
                directions = "head+tail, filtered" if row["eval_filtered"] else "tail only, unfiltered"
                eval_seconds = f"{row['eval_seconds_per_1000_triples_median']:,.2f}"
            lines.append(
                f"| {model} | {peer} | {row['train_triples_per_second_median']:,.0f} | {eval_seconds} | {directions} | "
                f"{row['peak_rss_mib_max']:,.0f} | {rate(row, 'train')} | {rate(row, 'eval')} | "
                f"{row['matmul_gflops_median']:.0f} | {row['repetitions']} |")
    lines += ["", "Ratios (kbit-dgl, the `kbit-dgl train` path with dense Adam, over each peer; eval ratios against "
              "PyG compare both-direction filtered ranking with PyG's tail-only unfiltered one; ratios against a "
              "`-defaults` row compare different workloads: triples/s at 256 negatives against theirs at 1):", ""]
    for model, ratios in summary["kbit_dgl_ratios"].items():
        lines.append(f"- {model}: " + ", ".join(f"{key} {value}x" for key, value in ratios.items()))
    notes = results["peer_notes"]
    lines += ["", "What each peer runs:", ""] + [f"- **{peer}**: {note}" for peer, note in notes.items()]
    if results.get("errors"):
        lines += ["", "Failed runs:", ""] + [f"- {error}" for error in results["errors"]]
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines) + "\n"


def package_versions(packages: Sequence[str]) -> Dict[str, Optional[str]]:
    """The installed version of each package (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions: Dict[str, Optional[str]] = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions
