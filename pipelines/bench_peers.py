"""kbit-dgl against PyKEEN and PyG (torch_geometric.nn.kge) on the same workload, in one run.

    pip install -c constraints.txt -e ".[bench]"
    python pipelines/bench_peers.py            # full: 3 interleaved repetitions, 1,000 test triples
    python pipelines/bench_peers.py --quick    # smoke run: kbit-dgl (dense Adam), PyKEEN, PyG;
                                               # 1 repetition, 1 + 1 steps, 8 eval triples

Workload (the speed issue's): FB15k-237 (from ../shared/data or $KBIT_DGL_DATA); TransE-L1 with
dim 200 and RotatE with 100 complex numbers; batch 1024; 256 negatives per positive; Adam, lr 1e-3;
RotatE's self-adversarial loss (temperature 1, gamma 12) for every peer.

Measured per peer and model, each (peer, model, repetition) in its own fresh subprocess (so peak
RSS is that peer's alone) with the same environment, thread count and allocator settings,
repetitions interleaved (rep 1: every peer and model, then rep 2, ... with the peer order rotated):

* training positive triples/s: ``--steps`` steps timed after ``--warmup-steps`` (compilation,
  allocation), through each library's own training path (see PEER_NOTES);
* evaluation seconds per 1,000 test triples on a fixed random subset of ``--eval-triples`` test
  triples, after an untimed warm-up on a few triples; kbit-dgl and PyKEEN rank head and tail
  against all entities, filtered by train + valid + test; PyG's ``KGEModel.test`` ranks tails only,
  unfiltered, one triple at a time, which is what it offers: reported as such, not rescaled;
* peak RSS (VmHWM of the worker process, MiB);
* effective scoring GFLOP/s: a nominal count of scoring FLOPs (SCORING_FLOPS_PER_PAIR per
  (query, candidate) pair; training counts forward + backward as 3x forward over B * (1 + 256)
  pairs, evaluation the forward over all entities per query) divided by the whole step or
  evaluation time, next to the fp32 matmul GFLOP/s the same worker measured.

Writes results/bench/peers.json (every measurement, medians, ratios, provenance) and
results/bench/peers.md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from kbit_dgl.bench.memory import peak_rss_mib
from kbit_dgl.bench.peers import markdown, package_versions, scoring_rates, summarize
from kbit_dgl.bench.timing import LoadWatch, matmul_gflops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEERS = ("kbit-dgl", "kbit-dgl-step", "kbit-dgl-sparse_adam", "pykeen", "pyg", "pykeen-defaults", "pyg-defaults")
DEFAULT_PEERS = ("kbit-dgl", "kbit-dgl-step", "pykeen", "pyg", "pykeen-defaults", "pyg-defaults")
MODELS = ("transe", "rotate")
BATCH_SIZE, NUM_NEGATIVES, CHUNK, LR, GAMMA = 1024, 256, 128, 1e-3, 12.0
DIMS = {"transe": 200, "rotate": 200}  # real numbers per entity row; RotatE: 100 complex
# Nominal forward FLOPs per (query, candidate) pair. TransE-L1: per coordinate a subtraction, an
# absolute value and an add (3 * 200). RotatE: per complex coordinate two subtractions, two squares,
# an add, a square root and the accumulating add (7 * 100). Used for every peer alike.
SCORING_FLOPS_PER_PAIR = {"transe": 3 * 200, "rotate": 7 * 100}
ALLOCATOR_VARIABLES = ("LD_PRELOAD", "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                       "MALLOC_TOP_PAD_", "MALLOC_CONF", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KBIT_DGL_COMPILE")
PEER_NOTES = {
    "kbit-dgl": "the user's path: `kbit-dgl train --dataset fb15k-237 --model M --set model.dim=200 model.gamma=12 "
                "model.reciprocal=false train.batch_size=1024 train.num_negatives=256 train.max_steps=...` "
                "(kbit_dgl.cli.main in the worker process, its data loading, sampling, logging and checkpoint), "
                "timed by the trainer's own steady-state rate (metrics.json train_triples_per_second_steady: "
                "its first 10 steps, torch.compile's and the kernels' warm-up, left out). Dense Adam "
                "(train.optimizer=adam, the default), 256 negatives shared by each chunk of 128 queries, heads and "
                "tails corrupted on alternate steps. Evaluation: kbit_dgl.eval.filtered_ranks on the trained run, "
                "both directions, filtered, batch 256 queries.",
    "kbit-dgl-step": "the bare step in a loop: kbit_dgl.train.steps.train_step + backward + optimizer.step, the same "
                     "config as kbit-dgl, none of the trainer around it; timed after --warmup-steps.",
    "kbit-dgl-sparse_adam": "as kbit-dgl-step with train.optimizer=sparse_adam (torch.optim.SparseAdam on "
                            "nn.Embedding(sparse=True) tables: lazy Adam, only the rows of the step move).",
    "pykeen-defaults": "PyKEEN's own defaults rather than the shared workload: the model class with no arguments "
                       "(TransE: dim 50, L1; RotatE: 200 complex), its default loss, SLCWA with the basic sampler's "
                       "1 negative per positive, batch 256 (its CPU default), Adam lr 1e-3. Less work per triple: "
                       "a different workload, shown for what a user gets without tuning.",
    "pyg-defaults": "PyG's own FB15k-237 example (examples/kge_fb15k_237.py): hidden_channels=50, batch 1000, "
                    "model.loss (1 random corruption per positive), Adam lr 0.01 (TransE) / 1e-3 with margin 9 "
                    "(RotatE). A different workload, shown for what a user of the example gets.",
    "pykeen": "pykeen SLCWATrainingLoop.train (its own data loader, BasicNegativeSampler with num_negs_per_pos=256, "
              "i.e. 256 negatives drawn per positive, head or tail corrupted, scored with score_hrt on a "
              "(B*256, d) gather), NSSALoss(margin=12), torch.optim.Adam; PyKEEN's default entity constraint "
              "(TransE: L2-normalise all entity rows after every step). Evaluation: RankBasedEvaluator(filtered=True), "
              "both directions, filter = train + valid + test, batch_size as --pykeen-eval-batch-size.",
    "pyg": "torch_geometric.nn.kge.TransE(p_norm=1) / RotatE with its KGTripletLoader; PyG's own loss draws one "
           "negative per positive, so the 256 negatives per positive (tails on even steps, heads on odd) are "
           "scored through the model's forward on (B*256,) index tensors, with the same self-adversarial loss; "
           "torch.optim.Adam. PyG's RotatE distance is the L2 norm over all real and imaginary parts, not "
           "RotatE's sum of complex moduli. Evaluation: KGEModel.test, which ranks tails only, unfiltered, with a "
           "Python loop over test triples (batch_size = all entities); reported as is.",
}


# ----------------------------------------------------------------------------------------- worker side
def self_adversarial(positive, negative, temperature: float = 1.0):
    """RotatE's loss, as kbit_dgl.train.losses (inlined so the PyG worker loads none of kbit-dgl's models)."""
    import torch
    import torch.nn.functional as F

    weights = torch.softmax(negative.detach() * temperature, dim=-1)
    return (-F.logsigmoid(positive).mean() - (weights * F.logsigmoid(-negative)).sum(-1).mean()) / 2


def timed_kbit_evaluation(model, kg, data: Dict) -> Dict:
    """kbit-dgl's filtered ranking of the eval triples, both directions, timed after a warm-up."""
    import torch

    from kbit_dgl.eval.ranking import filtered_ranks

    _ = kg.filter_index  # built once per KG and cached, like the trainer's validations reuse it
    filtered_ranks(model, data["eval"][:2], kg.filter_index, batch_size=256)  # warm-up (compilation)
    start = time.perf_counter()
    ranks = filtered_ranks(model, data["eval"], kg.filter_index, batch_size=256)
    eval_seconds = time.perf_counter() - start
    return {"eval_seconds": eval_seconds, "eval_directions": 2, "eval_filtered": True,
            "eval_mrr_after_warmup_training": float((1.0 / torch.cat([ranks["tail"], ranks["head"]])).mean())}


def run_kbit_cli(data: Dict, model_name: str, args) -> Dict:
    """``kbit-dgl train`` as a user runs it, in this process; its steady-state rate from metrics.json."""
    import torch

    from kbit_dgl import cli
    from kbit_dgl.runs import load_run
    from kbit_dgl.train.trainer import WARMUP_STEPS

    run_dir = os.path.join(tempfile.mkdtemp(prefix="bench_peers_cli_"), "run")
    settings = [f"model.dim={DIMS[model_name]}", f"model.gamma={GAMMA}", "model.reciprocal=false",
                f"train.batch_size={BATCH_SIZE}", f"train.num_negatives={NUM_NEGATIVES}",
                f"train.negative_chunk_size={CHUNK}", f"train.lr={LR}", "train.optimizer=adam",
                f"train.max_steps={WARMUP_STEPS + args.steps}", f"train.num_threads={torch.get_num_threads()}"]
    code = cli.main(["train", "--dataset", "fb15k-237", "--data-dir", args.data_dir, "--model", model_name,
                     "--out", run_dir, "--no-progress", "--set", *settings])
    if code:
        raise RuntimeError(f"kbit-dgl train exited {code}")
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as handle:
        metrics = json.load(handle)
    rate = metrics["train_triples_per_second_steady"]
    _, kg, model = load_run(run_dir)
    shutil.rmtree(os.path.dirname(run_dir), ignore_errors=True)
    return {"train_seconds": args.steps * BATCH_SIZE / rate, **timed_kbit_evaluation(model, kg, data),
            "cli_steps": metrics.get("steps"), "cli_train_triples_per_second_total": metrics.get(
                "train_triples_per_second"), "cli_warmup_seconds": metrics.get("warmup_seconds"),
            "cli_omp_wait_policy": metrics.get("omp_wait_policy")}


def run_kbit(data: Dict, model_name: str, args, optimizer_name: str) -> Dict:
    from kbit_dgl.config import Config
    from kbit_dgl.data import KG
    from kbit_dgl.train.sampling import positive_batches
    from kbit_dgl.train.trainer import Trainer

    kg = KG(name="fb15k-237", train=data["train"], valid=data["valid"], test=data["test"],
            num_entities=data["num_entities"], num_relations=data["num_relations"],
            entity_names=[str(i) for i in range(data["num_entities"])],
            relation_names=[str(i) for i in range(data["num_relations"])])
    config = Config()
    config.model.name, config.model.dim, config.model.gamma = model_name, DIMS[model_name], GAMMA
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = \
        BATCH_SIZE, NUM_NEGATIVES, CHUNK
    config.train.lr, config.train.optimizer, config.train.seed = LR, optimizer_name, 0
    trainer = Trainer(config, kg)  # the trainer itself, without a run folder: its step is what is timed
    batches = positive_batches(len(kg.train), BATCH_SIZE, trainer.generator)
    stamps = []
    for _ in range(args.warmup_steps + args.steps):
        trainer.step(kg.train[next(batches)])  # the budget of steps is far below one epoch
        stamps.append(time.perf_counter())
    train_seconds = stamps[-1] - stamps[args.warmup_steps - 1]
    return {"train_seconds": train_seconds, **timed_kbit_evaluation(trainer.model, kg, data)}


def run_pykeen(data: Dict, model_name: str, args) -> Dict:
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.losses import NSSALoss
    from pykeen.models import RotatE, TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import CoreTriplesFactory

    num_entities, num_relations = data["num_entities"], data["num_relations"]
    factory = CoreTriplesFactory.create(data["train"], num_entities, num_relations)
    torch.manual_seed(0)
    if model_name == "transe":
        model = TransE(triples_factory=factory, embedding_dim=200, scoring_fct_norm=1, loss=NSSALoss(margin=GAMMA),
                       random_seed=0)
    else:
        model = RotatE(triples_factory=factory, embedding_dim=100, loss=NSSALoss(margin=GAMMA), random_seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    steps = args.warmup_steps + args.steps
    order = torch.randperm(len(data["train"]), generator=torch.Generator().manual_seed(0))[:steps * BATCH_SIZE]
    subset = CoreTriplesFactory.create(data["train"][order], num_entities, num_relations)  # one epoch = `steps`

    class Stamps(TrainingCallback):
        def __init__(self):
            super().__init__()
            self.times: List[float] = []

        def post_batch(self, epoch, batch, **kwargs):  # after optimizer.step and the entity constraint
            self.times.append(time.perf_counter())

    stamps = Stamps()
    loop = SLCWATrainingLoop(model=model, triples_factory=subset, optimizer=optimizer, negative_sampler="basic",
                             negative_sampler_kwargs={"num_negs_per_pos": NUM_NEGATIVES})
    loop.train(triples_factory=subset, num_epochs=1, batch_size=BATCH_SIZE, use_tqdm=False, use_tqdm_batch=False,
               callbacks=[stamps])
    if len(stamps.times) != steps:
        raise RuntimeError(f"pykeen ran {len(stamps.times)} batches, expected {steps}")
    train_seconds = stamps.times[-1] - stamps.times[args.warmup_steps - 1]
    evaluator = RankBasedEvaluator(filtered=True)
    known = [data["train"], data["valid"], data["test"]]
    evaluator.evaluate(model, data["eval"][:2], batch_size=args.pykeen_eval_batch_size, use_tqdm=False,
                       additional_filter_triples=known)  # warm-up
    start = time.perf_counter()
    result = evaluator.evaluate(model, data["eval"], batch_size=args.pykeen_eval_batch_size, use_tqdm=False,
                                additional_filter_triples=known)
    eval_seconds = time.perf_counter() - start
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "eval_directions": 2,
            "eval_filtered": True, "eval_batch_size": args.pykeen_eval_batch_size,
            "eval_mrr_after_warmup_training": float(result.get_metric("both.realistic.inverse_harmonic_mean_rank"))}


def run_pykeen_defaults(data: Dict, model_name: str, args) -> Dict:
    """PyKEEN's own defaults (see PEER_NOTES), training only."""
    import torch
    from pykeen.models import RotatE, TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import CoreTriplesFactory

    num_entities, num_relations = data["num_entities"], data["num_relations"]
    batch_size, steps = 256, args.warmup_steps + args.steps
    order = torch.randperm(len(data["train"]), generator=torch.Generator().manual_seed(0))[:steps * batch_size]
    subset = CoreTriplesFactory.create(data["train"][order], num_entities, num_relations)
    torch.manual_seed(0)
    model = (TransE if model_name == "transe" else RotatE)(triples_factory=subset, random_seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times: List[float] = []

    class Stamps(TrainingCallback):
        def post_batch(self, epoch, batch, **kwargs):
            times.append(time.perf_counter())

    SLCWATrainingLoop(model=model, triples_factory=subset, optimizer=optimizer).train(
        triples_factory=subset, num_epochs=1, batch_size=batch_size, use_tqdm=False, use_tqdm_batch=False,
        callbacks=[Stamps()])
    return {"train_seconds": times[-1] - times[args.warmup_steps - 1], "batch_size": batch_size,
            "negatives_per_positive": 1, "dim": model.entity_representations[0].shape[0],
            "loss": type(model.loss).__name__}


def run_pyg_defaults(data: Dict, model_name: str, args) -> Dict:
    """PyG's FB15k-237 example's settings (see PEER_NOTES), training only."""
    import torch
    from torch_geometric.nn.kge import RotatE, TransE

    torch.manual_seed(0)
    if model_name == "transe":
        model = TransE(data["num_entities"], data["num_relations"], hidden_channels=50)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    else:
        model = RotatE(data["num_entities"], data["num_relations"], hidden_channels=50, margin=9.0)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, batch_size = data["train"], 1000
    loader = model.loader(train[:, 0], train[:, 1], train[:, 2], batch_size=batch_size, shuffle=True)
    stamps = []
    for step, (head, relation, tail) in enumerate(loader):
        if step == args.warmup_steps + args.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        model.loss(head, relation, tail).backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    return {"train_seconds": stamps[-1] - stamps[args.warmup_steps - 1], "batch_size": batch_size,
            "negatives_per_positive": 1, "dim": 50}


def run_pyg(data: Dict, model_name: str, args) -> Dict:
    import torch
    from torch_geometric.nn.kge import RotatE, TransE

    num_entities, num_relations = data["num_entities"], data["num_relations"]
    torch.manual_seed(0)
    if model_name == "transe":
        model = TransE(num_entities, num_relations, hidden_channels=200, margin=GAMMA, p_norm=1.0)
    else:
        model = RotatE(num_entities, num_relations, hidden_channels=100, margin=GAMMA)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    train = data["train"]
    loader = model.loader(train[:, 0], train[:, 1], train[:, 2], batch_size=BATCH_SIZE, shuffle=True)
    generator = torch.Generator().manual_seed(0)
    stamps = []
    for step, (head, relation, tail) in enumerate(loader):
        if step == args.warmup_steps + args.steps:
            break
        batch = len(head)
        negatives = torch.randint(num_entities, (batch * NUM_NEGATIVES,), generator=generator)
        repeated_relation = relation.repeat_interleave(NUM_NEGATIVES)
        if step % 2 == 0:
            negative_scores = model(head.repeat_interleave(NUM_NEGATIVES), repeated_relation, negatives)
        else:
            negative_scores = model(negatives, repeated_relation, tail.repeat_interleave(NUM_NEGATIVES))
        loss = self_adversarial(model(head, relation, tail), negative_scores.view(batch, NUM_NEGATIVES))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    train_seconds = stamps[-1] - stamps[args.warmup_steps - 1]
    evaluation = data["eval"]
    model.test(evaluation[:2, 0], evaluation[:2, 1], evaluation[:2, 2], batch_size=num_entities, log=False)
    start = time.perf_counter()
    _, mrr, _ = model.test(evaluation[:, 0], evaluation[:, 1], evaluation[:, 2], batch_size=num_entities, k=10,
                           log=False)
    eval_seconds = time.perf_counter() - start
    return {"train_seconds": train_seconds, "eval_seconds": eval_seconds, "eval_directions": 1,
            "eval_filtered": False, "eval_mrr_after_warmup_training": float(mrr)}


def worker(args) -> None:
    import torch

    from kbit_dgl.io import load_saved

    data = load_saved(args.data)
    data["eval"] = data["eval"][:args.eval_triples]
    gflops = matmul_gflops(3)
    if args.peer == "kbit-dgl":
        measured = run_kbit_cli(data, args.model, args)
    elif args.peer.startswith("kbit-dgl"):
        optimizer_name = "adam" if args.peer == "kbit-dgl-step" else args.peer.split("-", 2)[2]
        measured = run_kbit(data, args.model, args, optimizer_name)
    elif args.peer == "pykeen-defaults":
        measured = run_pykeen_defaults(data, args.model, args)
    elif args.peer == "pyg-defaults":
        measured = run_pyg_defaults(data, args.model, args)
    elif args.peer == "pykeen":
        measured = run_pykeen(data, args.model, args)
    elif args.peer == "pyg":
        measured = run_pyg(data, args.model, args)
    else:
        raise ValueError(f"unknown peer {args.peer!r}; expected one of {PEERS}")
    if args.peer.endswith("-defaults"):  # another workload: its own batch, 1 negative, its own dim
        rates = {"train_triples_per_second": args.steps * measured["batch_size"] / measured["train_seconds"]}
    else:
        rates = scoring_rates(measured, args.steps, BATCH_SIZE, NUM_NEGATIVES, len(data["eval"]),
                              data["num_entities"], SCORING_FLOPS_PER_PAIR[args.model])
    measured.update(peer=args.peer, model=args.model, repetition=args.repetition, steps=args.steps, **rates,
                    matmul_gflops=gflops, peak_rss_mib=peak_rss_mib(), torch_threads=torch.get_num_threads())
    matmul_after = matmul_gflops(3)  # the load on a shared machine can change during a worker
    measured["matmul_gflops_after"] = round(matmul_after, 2)
    with open(args.result, "w", encoding="utf-8") as handle:
        json.dump(measured, handle)


# ----------------------------------------------------------------------------------- orchestrator side
def prepare_data(data_dir: str, path: str, seed: int = 0) -> None:
    """FB15k-237 as id tensors for the workers, plus a fixed random order of the test triples."""
    import torch

    from kbit_dgl.data import load_dataset
    from kbit_dgl.io import atomic_save

    kg = load_dataset("fb15k-237", data_dir)
    order = torch.randperm(len(kg.test), generator=torch.Generator().manual_seed(seed))
    atomic_save(path, {"train": kg.train, "valid": kg.valid, "test": kg.test, "eval": kg.test[order],
                       "num_entities": kg.num_entities, "num_relations": kg.num_relations})


def orchestrate(args) -> None:
    from kbit_dgl.io import atomic_write_json, atomic_write_text
    from kbit_dgl.provenance import provenance

    started = time.time()
    load = LoadWatch()
    work = tempfile.mkdtemp(prefix="bench_peers_")
    data_path = os.path.join(work, "fb15k-237.pt")
    prepare_data(args.data_dir, data_path)
    env = dict(os.environ)  # one environment, hence one allocator setting, for every worker
    runs: List[Dict] = []
    errors: List[str] = []
    for repetition in range(args.repeats):
        peers = args.peers[repetition % len(args.peers):] + args.peers[:repetition % len(args.peers)]
        for model in args.models:
            for peer in peers:
                result = os.path.join(work, f"{peer}-{model}-{repetition}.json")
                command = [sys.executable, os.path.abspath(__file__), "--worker", "--peer", peer, "--model", model,
                           "--data", data_path, "--result", result, "--repetition", str(repetition),
                           "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
                           "--eval-triples", str(args.eval_triples), "--data-dir", args.data_dir,
                           "--pykeen-eval-batch-size", str(args.pykeen_eval_batch_size)]
                start = time.perf_counter()
                try:
                    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.worker_timeout)
                    failure = None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-2000:]}"
                except subprocess.TimeoutExpired:
                    failure = f"timed out after {args.worker_timeout} s"
                wall = time.perf_counter() - start
                if failure is None:
                    with open(result, encoding="utf-8") as handle:
                        run = json.load(handle)
                    run["worker_wall_seconds"] = round(wall, 1)
                    runs.append(run)
                    evaluation = "(training only)"
                    if "eval_seconds_per_1000_triples" in run:
                        evaluation = (f"eval {run['eval_seconds_per_1000_triples']:8.2f} s/1k "
                                      f"({run['eval_directions']} dir)")
                    print(f"rep {repetition} {model:6s} {peer:22s} train {run['train_triples_per_second']:9,.0f} "
                          f"triples/s  {evaluation}  RSS {run['peak_rss_mib']:7,.0f} MiB  [{wall:.0f} s]", flush=True)
                else:
                    errors.append(f"{peer}/{model}/rep {repetition}: {failure}")
                    runs.append({"peer": peer, "model": model, "repetition": repetition, "error": failure})
                    print(f"rep {repetition} {model:6s} {peer:22s} FAILED: {failure[-300:]}", flush=True)
    summary = summarize(runs, args.peers, args.models)
    load_average = load.record(digits=2)
    import torch

    results = {
        "mode": "quick" if args.quick else "full",
        "workload": {"dataset": "FB15k-237", "batch_size": BATCH_SIZE, "negatives_per_positive": NUM_NEGATIVES,
                     "kbit_negative_chunk_size": CHUNK, "optimizer": "Adam", "lr": LR, "gamma": GAMMA,
                     "dims": {"transe": "200 real", "rotate": "100 complex"}, "loss": "self-adversarial (temp 1)",
                     "warmup_steps": args.warmup_steps, "timed_steps": args.steps,
                     "eval_triples": args.eval_triples, "repetitions": args.repeats,
                     "scoring_flops_per_pair": SCORING_FLOPS_PER_PAIR,
                     "train_flops_convention": "3 x forward (forward + backward) over B * (1 + 256) pairs per step",
                     "pykeen_eval_batch_size": args.pykeen_eval_batch_size},
        "peer_notes": PEER_NOTES,
        "versions": package_versions(("kbit-dgl", "torch", "pykeen", "torch_geometric")),
        "threads": torch.get_num_threads(),
        "allocator": {name: os.environ.get(name) for name in ALLOCATOR_VARIABLES},
        "allocator_note": "every worker ran with this same environment (glibc malloc unless LD_PRELOAD says else)",
        "load_average": load_average,
        "summary": summary, "runs": runs, "errors": errors,
    }
    if load.under_load:
        results["note"] = (f"Timings taken under load: the 1-minute load average was {load.before[0]:.1f} on "
                           f"{os.cpu_count()} cores before the run (other jobs shared the machine); ratios between "
                           f"interleaved peers are more trustworthy than absolute rates.")
    if args.quick:
        results["quick_note"] = ("--quick: few steps, few eval triples and one repetition, a smoke run of the "
                                 "pipeline; its numbers are indicative only")
    results["provenance"] = provenance(started)
    os.makedirs(args.out_dir, exist_ok=True)
    atomic_write_json(os.path.join(args.out_dir, "peers.json"), results)
    atomic_write_text(os.path.join(args.out_dir, "peers.md"), markdown(summary, results))
    print(markdown(summary, results))
    print(f"wrote {os.path.join(args.out_dir, 'peers.json')} and peers.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: peers kbit-dgl pykeen pyg, 1 repetition, 1 warm-up + 1 timed "
                             "step, 8 eval triples")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument("--peers", nargs="+", default=None, choices=PEERS,
                        help=f"default: {' '.join(DEFAULT_PEERS)}; quick: kbit-dgl pykeen pyg")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 20; quick 1)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed first steps (default 3; quick 1)")
    parser.add_argument("--eval-triples", type=int, default=None,
                        help="test triples in the timed evaluation (default 1000; quick 8)")
    parser.add_argument("--pykeen-eval-batch-size", type=int, default=32,
                        help="PyKEEN evaluation batch (it broadcasts batch x entities x dim; None would start a "
                             "memory search)")
    parser.add_argument("--data-dir", default=os.environ.get("KBIT_DGL_DATA") or os.path.join(ROOT, "..", "shared",
                                                                                             "data"))
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "results", "bench"))
    parser.add_argument("--worker-timeout", type=int, default=1800)
    # worker side (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--repetition", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    args.peers = args.peers or (["kbit-dgl", "pykeen", "pyg"] if quick else list(DEFAULT_PEERS))
    args.steps = args.steps if args.steps is not None else (1 if quick else 20)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (1 if quick else 3)
    args.eval_triples = args.eval_triples if args.eval_triples is not None else (8 if quick else 1000)
    if args.warmup_steps < 1 or args.steps < 1:
        parser.error("--steps and --warmup-steps must be at least 1")
    if args.worker:
        worker(args)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
