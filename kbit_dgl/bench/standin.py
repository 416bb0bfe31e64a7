"""Helpers of ``pipelines/wikikg2_standin.py``: the cost of loading a stand-in, and the README table.

:func:`measure_load` loads a dataset through :func:`kbit_dgl.data.load_dataset` in a fresh child
process, so its peak resident memory is the loader's own (not the generator's, nor this process's
imports), and kills the child when its resident memory passes a limit: on a shared machine a
loader that would take too much memory is stopped and reported instead of pushing other jobs out.
"""
from __future__ import annotations

import multiprocessing
import queue
import time
from typing import Dict, List, Optional

from .memory import peak_rss_mib, process_memory_kib


def _rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` now (VmRSS), 0 once it has gone."""
    return process_memory_kib(pid).get("VmRSS", 0) / 1024


def _load_in_child(dataset: str, root: str, results: "multiprocessing.Queue") -> None:
    from kbit_dgl.data import load_dataset

    started = time.perf_counter()
    kg = load_dataset(dataset, root)
    seconds = time.perf_counter() - started
    results.put({"seconds": round(seconds, 1), "peak_rss_mib": peak_rss_mib(),
                 "counts": {"entities": kg.num_entities, "relations": kg.num_relations, "train": len(kg.train),
                            "valid": len(kg.valid), "test": len(kg.test)},
                 "negatives_shape": {split: list(sides["tail_neg"].shape) for split, sides in kg.negatives.items()},
                 "warnings": len(kg.warnings)})


def measure_load(dataset: str, root: str, rss_limit_mib: float, poll_seconds: float = 0.2) -> Dict:
    """Load ``dataset`` from ``root`` in a child process: wall seconds, the child's peak RSS (VmHWM, MiB),
    the loaded counts and the OGB negatives' shapes. The child is killed when its resident memory passes
    ``rss_limit_mib``; the result then holds ``aborted`` and the largest resident memory seen."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak is the loader's
    results = context.Queue()
    child = context.Process(target=_load_in_child, args=(dataset, root, results))
    started = time.perf_counter()
    child.start()
    largest, result = 0.0, None
    try:
        while result is None:
            try:
                result = results.get(timeout=poll_seconds)
            except queue.Empty:
                largest = max(largest, _rss_mib(child.pid))
                if largest > rss_limit_mib:
                    child.kill()
                    child.join()
                    return {"aborted": f"resident memory passed {rss_limit_mib:.0f} MiB; the load was stopped",
                            "largest_rss_seen_mib": round(largest, 1),
                            "seconds_until_stopped": round(time.perf_counter() - started, 1)}
                if not child.is_alive() and results.empty():
                    raise RuntimeError(f"loading {dataset} from {root} failed in the child process "
                                       f"(exit code {child.exitcode}); its error is printed above") from None
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    return result


def standin_table(records: List[Dict]) -> str:
    """README.md of ``results/standin``: one row per stored stand-in record (pipelines/wikikg2_standin.py)."""
    def gib(mib: Optional[float]) -> str:
        return "" if mib is None else f"{mib / 1024:.1f}"

    def load_cell(load: Optional[Dict]) -> str:
        if not load:
            return "not measured"
        if "aborted" in load:
            return f"stopped at {gib(load['largest_rss_seen_mib'])} GiB"
        return f"{load['seconds']:.0f} s, {gib(load['peak_rss_mib'])} GiB"

    lines = ["# ogbl-wikikg2 stand-in", "",
             "Written by `pipelines/wikikg2_standin.py` (the generator is `kbit_dgl/data/standin.py`; its module",
             "docstring describes the planted model). *Planted MRR* is the generating model's own ranking of the",
             "test triples under OGB's protocol (500 head + 500 tail negatives, ties count half): the ceiling a",
             "trained model can approach. *Random* is the MRR of a random ranking of 501 candidates. Skew: share of",
             "the train triples' endpoints held by the top 1 % of entities, and share of train triples of the most",
             "frequent relation. Load: `load_dataset(\"ogbl-wikikg2\", root)` in a fresh process (first load, which",
             "parses the raw CSVs; later loads read ogb's processed file), its wall time and its own peak RSS. The",
             "exact commands, commits, machine and load averages are in the JSON files.", "",
             "| file | scale | entities | relations | train | valid | test | planted test MRR (tail / head) | random "
             "| top-1 % entities | top relation | generator wall | generator peak RSS | on disk | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for record in sorted(records, key=lambda r: (r["standin"]["scale"], r["standin"]["seed"])):
        standin, counts = record["standin"], record["standin"]["counts"]
        planted = standin["planted"]["test"]
        lines.append(
            f"| `{record['file']}` | {standin['scale']} | {counts['entities']:,} | {counts['relations']} "
            f"| {counts['train']:,} | {counts['valid']:,} | {counts['test']:,} "
            f"| {planted['mrr']:.3f} ({planted['tail']['mrr']:.3f} / {planted['head']['mrr']:.3f}) "
            f"| {standin['random_mrr']:.4f} | {standin['skew']['top1pct_entities_share_of_endpoints']:.1%} "
            f"| {standin['skew']['top_relation_share']:.1%} | {record['provenance']['wall_seconds']:.0f} s "
            f"| {gib(record['generator_peak_rss_mib'])} GiB | {standin['bytes_on_disk'] / 2 ** 30:.1f} GiB "
            f"| {load_cell(record.get('load'))} |")
    return "\n".join(lines) + "\n"
