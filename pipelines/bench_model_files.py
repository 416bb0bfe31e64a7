"""Writing and reading a model file: the safetensors format (kbit_dgl.io.atomic_save / load_saved)
against the torch.save pickle it replaced, side by side in one process.

    python pipelines/bench_model_files.py [--gib 1.0] [--repeats 3] [--out results/bench/model_files.json]

Both write atomically (a temporary file, fsync, rename), as kbit-dgl writes checkpoints. Reports the
seconds of each write and read (interleaved repetitions), and the process's peak RSS with the table
in memory and after the first safetensors write (before any read): equal when the writer copies nothing.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import torch

from kbit_dgl.io import _atomic, atomic_save, atomic_write_json, load_saved
from kbit_dgl.provenance import project_root, provenance


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the table written (GiB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(project_root(), "results", "bench", "model_files.json"))
    args = parser.parse_args()
    started, load_before = time.time(), os.getloadavg()
    table = torch.randn(int(args.gib * (1 << 30)) // 4)
    payload = {"model": {"entity.weight": table}, "state": {"epoch": 1, "history": []}}
    writers = {"safetensors": lambda path: atomic_save(path, payload),
               "torch.save": lambda path: _atomic(path, lambda temp: torch.save(payload, temp), by_path=True)}
    readers = {"safetensors": load_saved, "torch.save": lambda path: torch.load(path, weights_only=False)}
    seconds = {name: {"write": [], "read": []} for name in writers}
    peak_with_table, peak_after_write = peak_rss_bytes(), None
    with tempfile.TemporaryDirectory(dir=os.path.dirname(args.out)) as folder:
        path = os.path.join(folder, "model.pt")
        for _ in range(args.repeats):
            for name in writers:  # safetensors first: its peak is measured before torch.save's
                begin = time.perf_counter()
                writers[name](path)
                seconds[name]["write"].append(round(time.perf_counter() - begin, 3))
                if peak_after_write is None:
                    peak_after_write = peak_rss_bytes()
                begin = time.perf_counter()
                loaded = readers[name](path)
                seconds[name]["read"].append(round(time.perf_counter() - begin, 3))
                assert torch.equal(loaded["model"]["entity.weight"], table)
                del loaded
                os.unlink(path)
    record = {**provenance(started), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()], "table_bytes": table.numel() * 4,
              "repeats": args.repeats, "seconds": seconds,
              "peak_rss_with_table_bytes": peak_with_table, "peak_rss_after_safetensors_write_bytes": peak_after_write}
    atomic_write_json(args.out, record)
    print({name: {what: min(values) for what, values in parts.items()} for name, parts in seconds.items()},
          f"peak RSS {peak_with_table / (1 << 30):.2f} GiB with the table, {peak_after_write / (1 << 30):.2f} GiB "
          f"after the safetensors write")


if __name__ == "__main__":
    main()
