"""Seconds per training step of an R-GCN encoder in sampled mode at wikikg2's size, by phase.

    python pipelines/bench_rgcn_sampled.py --root /tmp/standin-full --optimizers adam sparse_adam

Loads the KG under --root (OGB's layout: the real ogbl-wikikg2 or pipelines/wikikg2_standin.py's
stand-in), builds the model `kbit-dgl train` would build (default: DistMult on the default R-GCN,
dim 200, `encoder.mode=sampled`), and runs the trainer's sampled step (DGL's edge DataLoader with
shared negatives, `encoder_training.sampled_batch_loss`, backward, the optimizer) for --warmup + --steps
steps, timing sampling, forward, backward and the optimizer separately. Each optimizer runs in
its own process. Writes results/bench/rgcn_sampled.json (or --out), with the kbit_dgl it imported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def time_steps(root: str, optimizer: str, overrides, steps: int, warmup: int) -> dict:
    import torch

    from kbit_dgl.allocator import kept_freed_memory
    from kbit_dgl.bench.memory import max_rss_mib
    from kbit_dgl.config import Config
    from kbit_dgl.data import load_dataset
    from kbit_dgl.train import encoder_training
    from kbit_dgl.train.trainer import Trainer

    kg = load_dataset("ogbl-wikikg2", root)
    config = Config()
    config.data.dataset, config.model.name, config.model.encoder = kg.name, "distmult", "rgcn"
    config.apply_overrides(["model.dim=200", "train.batch_size=512", "train.num_negatives=128",
                            "train.negative_chunk_size=128", "encoder.mode=sampled", "model.reciprocal=false",
                            f"train.optimizer={optimizer}", *overrides])
    trainer = Trainer(config, kg)  # the trainer's model, optimizer and update, without a run folder
    model = trainer.model
    encoder, cfg = model.encoder, config.train
    negatives = encoder_training.SharedUniformNegatives(kg.num_entities, cfg.num_negatives, cfg.negative_chunk_size,
                                                        torch.Generator().manual_seed(0))
    loader = iter(encoder_training.edge_loader(encoder.graph, len(kg.train),
                                               encoder_training.layer_fanouts(config, encoder.num_layers),
                                               cfg.batch_size, negatives))
    phases = {"sample": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    block_edges = []
    with kept_freed_memory():  # as the trainer's sampled epochs (kbit_dgl/train/encoder_training.py)
        for step in range(warmup + steps):
            started = time.perf_counter()
            batch = next(loader)
            sampled = time.perf_counter()
            loss, _ = encoder_training.sampled_batch_loss(model, batch, config, "tail")  # the trainer's loss
            forward = time.perf_counter()
            times = {}
            trainer.update(loss, times)  # the trainer's backward and optimizer step
            if step >= warmup:
                for name, seconds in zip(phases, (sampled - started, forward - sampled, times["backward"],
                                                  times["optimizer"])):
                    phases[name] += seconds
                block_edges.append([block.num_edges() for block in batch[3]])
    total = sum(phases.values())
    return {"optimizer": optimizer, "steps": steps, "seconds_per_step": round(total / steps, 4),
            "phases_seconds_per_step": {k: round(v / steps, 4) for k, v in phases.items()},
            "triples_per_second": round(cfg.batch_size * steps / total, 1),
            "mean_block_edges": [round(sum(e[i] for e in block_edges) / steps) for i in range(len(block_edges[0]))],
            "peak_rss_gib": round(max_rss_mib() / 1024, 2), "config": config.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--optimizers", nargs="+", default=["adam", "sparse_adam"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides")
    parser.add_argument("--out", help="default: results/bench/rgcn_sampled.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_steps(args.root, args.child, args.set, args.steps, args.warmup)))
        return
    from kbit_dgl.io import atomic_write_json
    from kbit_dgl.provenance import project_root, provenance

    started, load_before = time.time(), os.getloadavg()
    rows = []
    for optimizer in args.optimizers:
        command = [sys.executable, os.path.abspath(__file__), "--root", args.root, "--child", optimizer,
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--set", *args.set]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print({k: v for k, v in rows[-1].items() if k != "config"}, flush=True)
    import kbit_dgl

    out = args.out or os.path.join(project_root(), "results", "bench", "rgcn_sampled.json")
    atomic_write_json(out, {**provenance(started), "kbit_dgl": os.path.dirname(kbit_dgl.__file__),
                            "load_before": list(load_before), "load_after": list(os.getloadavg()),
                            "root": args.root, "rows": rows})


if __name__ == "__main__":
    main()
