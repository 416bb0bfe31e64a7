"""One R-GCN layer, forward + backward, on FB15k-237's training graph with inverse edges:
DGL 2.1's ``dgl.nn.RelGraphConv`` against kbit-dgl's ``GroupedRelGraphConv`` (same parameters); for
``basis`` both of its forms, basis-first (the default on this graph) and per-relation products.

    python pipelines/bench_rgcn_layer.py --data-dir ../shared/data [--threads 1] [--repeats 3] [--skip-slow]

Width 200, self-loop, norm 1/in-degree, loss = sum of squares of the output. Cases are
interleaved within each repetition; the slow DGL ``basis`` path (gather_mm) runs once. Writes
``results/bench/rgcn_layer.json`` with the seconds per case, the max difference of outputs and
input gradients against ``RelGraphConv``, the load average around the run and the provenance.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from dgl.nn import RelGraphConv

from kbit_dgl.bench.timing import LoadWatch
from kbit_dgl.data import load_dataset
from kbit_dgl.data.graph import to_homogeneous
from kbit_dgl.io import atomic_write_json
from kbit_dgl.models.encoders import GroupedRelGraphConv, edge_norm
from kbit_dgl.provenance import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA", "../shared/data"))
    parser.add_argument("--dataset", default="fb15k-237")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-slow", action="store_true", help="leave out DGL's basis path (minutes)")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "rgcn_layer.json"))
    args = parser.parse_args()
    started, load = time.time(), LoadWatch()
    torch.set_num_threads(args.threads)
    kg = load_dataset(args.dataset, args.data_dir)
    graph = to_homogeneous(kg, "train", add_inverse=True)
    etypes, norm, num_types = graph.edata["etype"], edge_norm(graph), 2 * kg.num_relations
    torch.manual_seed(0)
    x = torch.randn(graph.num_nodes(), args.dim, requires_grad=True)
    cases = {}
    for regularizer, bases in (("bdd", 100), ("basis", 8)):
        reference = RelGraphConv(args.dim, args.dim, num_types, regularizer=regularizer, num_bases=bases,
                                 self_loop=True)
        grouped = GroupedRelGraphConv(args.dim, args.dim, num_types, regularizer=regularizer, num_bases=bases,
                                      self_loop=True)
        grouped.load_state_dict(reference.state_dict())
        cases[f"{regularizer}{bases}/dgl"] = reference
        cases[f"{regularizer}{bases}/grouped"] = grouped
        if regularizer == "basis":
            per_relation = GroupedRelGraphConv(args.dim, args.dim, num_types, regularizer=regularizer,
                                               num_bases=bases, self_loop=True)
            per_relation.load_state_dict(reference.state_dict())
            per_relation.basis_first = False
            cases[f"{regularizer}{bases}/grouped-per-relation"] = per_relation
    seconds = {name: [] for name in cases}
    outputs = {}
    for repeat in range(args.repeats):
        for name, conv in cases.items():
            if name == "basis8/dgl" and (repeat > 0 or args.skip_slow):
                continue  # the slow path: one run (its seconds: results/bench/rgcn_layer.json)
            x.grad = None
            start = time.perf_counter()
            out = conv(graph, x, etypes, norm)
            out.square().sum().backward()
            seconds[name].append(round(time.perf_counter() - start, 4))
            outputs[name] = (out.detach(), x.grad.clone())
            print(f"{name}: {seconds[name][-1]:.3f} s", flush=True)
    result = {"dataset": args.dataset, "nodes": graph.num_nodes(), "edges": graph.num_edges(), "dim": args.dim,
              "torch_threads": args.threads, "cases": {}}
    for name in cases:
        if not seconds[name]:
            continue  # DGL's basis path with --skip-slow
        reg = name.split("/")[0]
        entry = {"seconds": seconds[name], "median_seconds": statistics.median(seconds[name])}
        # compared with DGL's layer where it ran, else with the per-relation form
        baseline = f"{reg}/dgl" if seconds[f"{reg}/dgl"] else f"{reg}/grouped-per-relation"
        if name != baseline and "grouped" in name:
            ref_out, ref_grad = outputs[baseline]
            out, grad = outputs[name]
            entry["max_abs_diff_output"] = float((out - ref_out).abs().max())
            entry["max_abs_diff_input_grad"] = float((grad - ref_grad).abs().max())
            entry[f"speedup_over_{baseline.split('/')[1]}"] = round(
                statistics.median(seconds[baseline]) / entry["median_seconds"], 2)
        result["cases"][name] = entry
    result["load_average_1_5_15min"] = load.record()
    result["provenance"] = provenance(started)
    atomic_write_json(args.out, result)
    for name, entry in result["cases"].items():
        print(name, entry["median_seconds"], {k: v for k, v in entry.items() if k.startswith("speedup")})


if __name__ == "__main__":
    main()
