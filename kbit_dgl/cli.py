"""The ``kbit-dgl`` command: train, evaluate, quantize, predict, export, tune, demo; a thin layer over
:mod:`kbit_dgl.api`: it parses arguments, maps them to API calls, prints and returns exit codes
(tests/test_cli_api.py keeps it so: it imports nothing of the library below the API)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

from .config import allow_encoder_import
from .errors import ConfigError, KbitError
from .settings import check_environment


def _config_request(args) -> Dict:
    """The keywords of :func:`kbit_dgl.api.make_config` for --config, --dataset, --data-dir, --model,
    --encoder, --set and --num-procs (later wins: the file, the named options, --set, --num-procs)."""
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data__data_dir"] = args.data_dir
    if getattr(args, "encoder", None):
        overrides["model__encoder"] = args.encoder
    return {"dataset": getattr(args, "dataset", None) or None, "model": getattr(args, "model", None) or None,
            "config": getattr(args, "config", None) or None, "sets": _sets(args), **overrides}


def _sets(args) -> List[str]:
    """--set's ``section.key=value`` strings, then --num-procs as one more (it wins over --set)."""
    sets = list(getattr(args, "set", None) or [])
    if getattr(args, "num_procs", None):
        sets.append(f"train.num_procs={args.num_procs}")
    return sets


def _load_config(args):
    """The checked config of a ``train`` / ``tune`` command line: the run's own with --resume, else built."""
    from . import api

    if getattr(args, "resume", False):
        return api.resume_config(args.out, sets=_sets(args))
    return api.make_config(**_config_request(args))


def cmd_train(args) -> int:
    from . import api

    if api.serve_distdgl():  # DistDGL: this process was this machine's server
        return 0
    config = _load_config(args)  # checked before the dataset is read and before anything is written
    if args.partitions and not api.launched_by_distdgl():  # DistDGL on this host: one machine per partition
        print(json.dumps(_headline(api.train_distdgl(config, args.partitions, args.out, args.argv)), indent=2))
        return 0
    kg = api.load_dataset(config.data.dataset, config.data.data_dir, config.data.seed)
    print(f"{kg.name}: {kg.summary()}", file=sys.stderr)
    metrics = api.train_folder(config, kg, args.out, resume=args.resume, overwrite=args.overwrite,
                               progress=not args.no_progress)
    if metrics is not None:  # under torchrun, rank 0 reports
        print(json.dumps(_headline(metrics), indent=2))
    return 0


def cmd_partition(args) -> int:
    from . import api

    summary = api.partition(args.out, args.parts, args.method, overwrite=args.overwrite, seed=args.seed,
                            **{k: v for k, v in _config_request(args).items() if k != "model"})  # no --model
    print(json.dumps({**summary, "out": args.out}, indent=2))
    return 0


def _headline(metrics: Dict) -> Dict:
    keys = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
    return {"dataset": metrics["dataset"], "model": metrics["model"], "protocol": metrics["protocol"],
            "valid": {k: metrics["valid"][k] for k in keys}, "test": {k: metrics["test"][k] for k in keys},
            "train_seconds": metrics["train_seconds"],
            "train_triples_per_second": metrics["train_triples_per_second"],
            "train_triples_per_second_steady": metrics.get("train_triples_per_second_steady"),
            "best_epoch": metrics["best_epoch"]}


def _quant_options(args) -> Dict:
    """The keywords of :func:`kbit_dgl.api.quantize_folder` for --bits, --dtype, --block, --scale-dtype and
    --relation-bits (no --bits: none)."""
    return {"bits": args.bits, "dtype": args.dtype, "block": args.block, "scale_dtype": args.scale_dtype,
            "relation_bits": args.relation_bits}


def cmd_evaluate(args) -> int:
    from . import api

    print(json.dumps(api.evaluate_folder(args.run_dir, args.split, args.device, **_quant_options(args)), indent=2))
    return 0


def cmd_quantize(args) -> int:
    from . import api

    info = api.quantize_folder(args.run_dir, args.out, overwrite=args.overwrite, **_quant_options(args))
    keys = ("bits", "dtype", "block", "scale_dtype", "codes_bytes", "scales_bytes", "metadata_bytes", "total_bytes",
            "fp32_bytes", "ratio_to_fp32", "bits_per_number")
    print(json.dumps({**{k: info[k] for k in keys}, "file_bytes": info["file"]["bytes"], "out": args.out}, indent=2))
    return 0


def cmd_predict(args) -> int:
    from . import api

    if args.queries is not None:
        if args.head is not None or args.tail is not None or args.relation is not None:
            raise ConfigError("--queries FILE replaces --head / --tail / --relation: give one or the other")
        return _predict_file(args)
    if args.out:
        raise ConfigError("--out writes the answers of --queries FILE; a single query prints them")
    if (args.head is None) == (args.tail is None) or args.relation is None:
        raise ConfigError("give --relation and exactly one of --head NAME (predict tails) or --tail NAME "
                          "(predict heads), or --queries FILE")
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    rows = api.predict(api.load_run(args.run_dir, device=args.device), args.relation, head=args.head, tail=args.tail,
                       top=args.top, exclude_known=args.exclude_known)
    query = f"({args.head}, {args.relation}, ?)" if args.head is not None else f"(?, {args.relation}, {args.tail})"
    print(f"top {args.top} answers to {query}:")
    width = max(len(row["entity"]) for row in rows)
    for rank, row in enumerate(rows, 1):
        known = f"  known true ({row['known']})" if row["known"] else ""
        print(f"{rank:>4}  {row['entity']:<{width}}  {row['score']:10.4f}{known}")
    return 0


def _predict_file(args) -> int:
    """``predict RUN --queries FILE``: every query of the file, answered in batches, as TSV or JSON."""
    import time

    from . import api
    from .io import atomic_write_text

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.out:
        api.check_output_file(args.out, args.overwrite)  # before the run is read; never a run's own file
    queries, sources = api.read_queries(args.queries)
    run = api.load_run(args.run_dir, device=args.device)
    started = time.perf_counter()
    answers = api.predict_many(run, queries, top=args.top, exclude_known=args.exclude_known, sources=sources,
                               batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    if args.format == "json":
        text = json.dumps([{"query": {"head": head, "relation": relation, "tail": tail}, "source": source,
                            "answers": rows} for (head, relation, tail), source, rows
                           in zip(queries, sources, answers)], indent=1) + "\n"
    else:
        lines = ["head\trelation\ttail\trank\tscore\tknown"]
        for (head, relation, tail), rows in zip(queries, answers):
            for rank, row in enumerate(rows, 1):
                filled = (head, relation, row["entity"]) if head is not None else (row["entity"], relation, tail)
                lines.append("\t".join([*filled, str(rank), f"{row['score']:.6g}", row["known"]]))
        text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    print(f"{len(queries)} queries in {seconds:.2f} s ({len(queries) / max(seconds, 1e-9):.1f} queries/s)",
          file=sys.stderr)
    return 0


def cmd_tune(args) -> int:
    from . import api

    config = _load_config(args)
    space = api.read_space(args.space)
    kg = api.load_dataset(config.data.dataset, config.data.data_dir, config.data.seed)
    print(f"{kg.name}: {kg.summary()}; {args.trials} trials over {', '.join(space)} -> {args.out}", file=sys.stderr)
    report = api.tune(config, kg, args.out, space, args.trials, seed=args.seed, baseline=args.baseline,
                      timeout=args.timeout, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in report.items() if k != "space"}, indent=2))
    return 0


def cmd_export(args) -> int:
    from . import api

    paths = api.export(args.run_dir, args.out, args.format, overwrite=args.overwrite)
    print(json.dumps(paths, indent=2))
    return 0


def cmd_migrate(args) -> int:
    from . import api

    converted = api.migrate(args.folder)
    for path in converted:
        print(f"converted {path}")
    print(f"{args.folder}: {len(converted)} pickled file(s) rewritten in the safe format" if converted else
          f"{args.folder}: nothing to convert (no pickled kbit-dgl files)")
    return 0


def format_table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def comparison_tables(results: Dict[str, Dict], relation_info: Optional[Dict[str, str]] = None) -> str:
    """The demo's output: overall metrics per model, then test MRR per relation."""
    models = list(results)
    header = ["model", "test MRR", "MR", "Hits@1", "Hits@3", "Hits@10", "valid MRR", "train s", "triples/s"]
    rows = [[m, f"{r['test']['mrr']:.3f}", f"{r['test']['mr']:.1f}", f"{r['test']['hits@1']:.3f}",
             f"{r['test']['hits@3']:.3f}", f"{r['test']['hits@10']:.3f}", f"{r['valid']['mrr']:.3f}",
             f"{r['train_seconds']:.0f}", f"{r['train_triples_per_second']:,.0f}"] for m, r in results.items()]
    text = format_table(header, rows)
    relations = list(results[models[0]]["test_per_relation"])
    header = ["relation", "pattern", "test queries"] + [f"{m} MRR" for m in models]
    rows = []
    for relation in relations:
        per = [results[m]["test_per_relation"][relation] for m in models]
        rows.append([relation, (relation_info or {}).get(relation, ""), str(per[0]["num_queries"])]
                    + [f"{p['mrr']:.3f}" for p in per])
    return text + "\n\nTest MRR per relation (head and tail queries):\n" + format_table(header, rows)


def cmd_demo(args) -> int:
    from . import api
    from .io import atomic_write_text

    started = time.time()
    out = args.out or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
    kg = api.load_dataset(args.dataset, args.data_dir)
    print(f"{kg.name}: {kg.summary()} -> {out}; {', '.join(args.models)}, about "
          f"{75 * len(args.models)} s on 2 CPU cores for the built-in KG", file=sys.stderr)
    results = {}
    for model in args.models:
        config = api.make_config(**{**_config_request(args), "dataset": args.dataset or "synthetic", "model": model})
        results[model] = api.train_folder(config, kg, os.path.join(out, model), overwrite=args.overwrite,
                                          progress=not args.no_progress)
    text = comparison_tables(results, kg.relation_info)
    atomic_write_text(os.path.join(out, "comparison.md"), text + "\n")
    print(text)
    print(f"\ndone in {time.time() - started:.0f} s; runs in {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbit-dgl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def allow_import_option(p):
        p.add_argument("--allow-import", action="append", default=[], metavar="PACKAGE.MODULE:CLASS",
                       help="let the run folder's config.yaml name this encoder by module path (importing it "
                            "runs that module's code: only for folders you trust); repeatable")

    def common(p, dataset=True):
        if dataset:
            p.add_argument("--dataset", help="known name (fb15k-237, wn18rr, codex-s, kinship, nations, "
                           "ogbl-wikikg2, ogbl-biokg, synthetic) or a folder; default: the built-in KG")
        p.add_argument("--data-dir", help="root folder of named datasets (default $KBIT_DGL_DATA)")
        p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=0.0005")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    train_parser = commands.add_parser("train", help="train and evaluate a model")
    common(train_parser)
    train_parser.add_argument("--model", help="transe, transe_l2, rotate, distmult, complex, pairre, cp, rescal")
    train_parser.add_argument("--encoder", help="GNN encoder before the decoder: rgcn, compgcn, a registered name "
                              "or package.module:Class (same as --set model.encoder=...; options: encoder.*)")
    train_parser.add_argument("--config", help="YAML file with data/model/train/eval/encoder sections")
    train_parser.add_argument("--out", required=True, help="run folder to write")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    allow_import_option(train_parser)
    train_parser.add_argument("--num-procs", type=int, help="training processes on this machine (train.num_procs; "
                              "DGL's shared-memory sparse embeddings); or launch with torchrun")
    train_parser.add_argument("--partitions", help="DistDGL: a folder written by `kbit-dgl partition`; starts one "
                              "server and one trainer per partition on this host (machines on 127.0.0.x); "
                              "across machines, start this command with DGL's launch.py instead")
    train_parser.set_defaults(func=cmd_train)

    partition_parser = commands.add_parser("partition", help="partition a dataset's training triples for DistDGL "
                                           "(dgl.distributed.partition_graph)")
    common(partition_parser)
    partition_parser.add_argument("--parts", type=int, required=True, help="partitions (one per machine)")
    partition_parser.add_argument("--method", default="random", choices=["random", "metis"])
    partition_parser.add_argument("--out", required=True, help="folder to write (DGL's kg.json, part*/)")
    partition_parser.add_argument("--seed", type=int, default=0, help="random partitioning's seed (default 0)")
    partition_parser.set_defaults(func=cmd_partition)

    def quant_options(p, required):
        p.add_argument("--bits", type=int, required=required,
                       help="bits per number: 1..8 (packed codes), 16 or 32 (fp16 / fp32)")
        p.add_argument("--dtype", default="int",
                       choices=["int", "int_asym", "float", "quantile", "quantile_empirical", "pq"],
                       help="int: symmetric absmax; int_asym: min-max; float: minifloat (e2m1 at 4 bits); "
                       "quantile: normal float NF-k; quantile_empirical: the table's own quantiles; "
                       "pq: product quantisation, one k-means code per sub-vector of --block numbers "
                       "(entity table only) (default int)")
        p.add_argument("--block", type=int, default=None,
                       help="numbers per scale along a row, 0 = whole row (default 64); pq: numbers per "
                            "sub-vector, bits x block <= 8 (default 8 // bits: 2-bit pq codes 4 numbers in a byte)")
        p.add_argument("--scale-dtype", default="fp16", choices=["fp32", "fp16", "int8"],
                       help="storage of the block scales; int8 = double quantisation (default fp16)")
        p.add_argument("--relation-bits", type=int, choices=[1, 2, 3, 4, 5, 6, 7, 8, 16, 32],
                       help="bits of the (small) relation table; default: max(--bits, 8) "
                            "(RotatE: phases on a 2^k grid)")

    evaluate_parser = commands.add_parser("evaluate", help="print a run's metrics from its saved model "
                                          "(a trained or a quantized run; --bits quantizes in memory)")
    evaluate_parser.add_argument("run_dir")
    evaluate_parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate_parser.add_argument("--device", default="auto", help="auto (a GPU when visible), cpu, cuda, cuda:N")
    quant_options(evaluate_parser, required=False)
    allow_import_option(evaluate_parser)
    evaluate_parser.set_defaults(func=cmd_evaluate)

    quantize_parser = commands.add_parser("quantize", help="write a k-bit packed copy of a trained run")
    quantize_parser.add_argument("run_dir")
    quant_options(quantize_parser, required=True)
    quantize_parser.add_argument("--out", required=True, help="quantized run folder to write")
    quantize_parser.add_argument("--overwrite", action="store_true", help="replace an existing folder (never the "
                                 "run being quantized)")
    allow_import_option(quantize_parser)
    quantize_parser.set_defaults(func=cmd_quantize)

    predict_parser = commands.add_parser("predict", help="rank candidate entities for a query")
    predict_parser.add_argument("run_dir")
    predict_parser.add_argument("--head", help="predict tails of (HEAD, RELATION, ?)")
    predict_parser.add_argument("--tail", help="predict heads of (?, RELATION, TAIL)")
    predict_parser.add_argument("--relation")
    predict_parser.add_argument("--queries", help="file of queries, one per line: HEAD<TAB>RELATION<TAB>? or "
                                                  "?<TAB>RELATION<TAB>TAIL (names); answered in batches")
    predict_parser.add_argument("--top", type=int, default=10)
    predict_parser.add_argument("--exclude-known", action="store_true",
                                help="leave answers already in the KG (train/valid/test) out")
    predict_parser.add_argument("--format", default="tsv", choices=["tsv", "json"], help="with --queries")
    predict_parser.add_argument("--out", help="with --queries: write the answers here (default: stdout); never a "
                                "run folder's own file")
    predict_parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    allow_import_option(predict_parser)
    predict_parser.add_argument("--batch-size", type=int, default=256, help="with --queries: queries scored at once")
    predict_parser.add_argument("--device", default="auto", help="auto (a GPU when visible), cpu, cuda, cuda:N")
    predict_parser.set_defaults(func=cmd_predict)

    tune_parser = commands.add_parser("tune", help="search hyperparameters with Optuna (every trial a run folder, "
                                      "pruned early when behind); writes best.yaml and a table of trials")
    common(tune_parser)
    tune_parser.add_argument("--model", help="transe, transe_l2, rotate, distmult, complex, pairre, cp, rescal")
    tune_parser.add_argument("--encoder", help="GNN encoder, as for train")
    tune_parser.add_argument("--config", help="YAML base config (the search varies the keys of --space around it)")
    tune_parser.add_argument("--space", help="YAML search space: section.key: {choices: [...]} or "
                             "{low: L, high: H, log: true}; default: dim, gamma, lr, negatives, temperature, "
                             "regularization (kbit_dgl.tune.DEFAULT_SPACE)")
    tune_parser.add_argument("--trials", type=int, default=20, help="trials in total (default 20)")
    tune_parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    tune_parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune_parser.add_argument("--baseline", action="store_true", help="also train the base config and report the gain")
    tune_parser.add_argument("--out", required=True, help="folder of the study (trial-NNN run folders, study.db)")
    allow_import_option(tune_parser)
    tune_parser.set_defaults(func=cmd_tune)

    export_parser = commands.add_parser("export", help="write a run's entity and relation embeddings with their "
                                        "names (npy: DGL-KE's layout; tsv: embedding projectors; pt)")
    export_parser.add_argument("run_dir")
    export_parser.add_argument("--out", required=True, help="folder to write (not a run folder)")
    export_parser.add_argument("--format", default="npy", choices=["npy", "tsv", "pt"])
    export_parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds "
                               "files (replacing the export's own)")
    allow_import_option(export_parser)
    export_parser.set_defaults(func=cmd_export)

    migrate_parser = commands.add_parser(
        "migrate", help="rewrite the pickled model files of a folder written by kbit-dgl < 0.2 (run, export or "
        "partition folder) in the safe format; this reads the pickles, which can run code: only for folders you trust")
    migrate_parser.add_argument("folder")
    migrate_parser.set_defaults(func=cmd_migrate)

    demo_parser = commands.add_parser("demo", help="train TransE and RotatE on the built-in KG and compare")
    common(demo_parser)
    demo_parser.add_argument("--models", nargs="+", default=["transe", "rotate"])
    demo_parser.add_argument("--out", help="folder for the runs (default runs/demo-<time>)")
    demo_parser.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_environment()  # a bad KBIT_DGL_* switch is refused before anything is written
        allow_encoder_import(getattr(args, "allow_import", None) or [])
        return args.func(args)
    except (KbitError, OSError) as error:
        # errors the user can act on (bad input, config, run folders, a full disk); anything else is a
        # bug and keeps its traceback
        print(f"kbit-dgl {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
