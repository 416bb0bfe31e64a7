"""Benchmark helpers: best-of-n timing, load and memory records, random KGs, the step timer, the
peer summary and the results tables of the foundation and R-GCN pipelines."""
import json
import os

import pytest
import torch

from kbit_dgl.bench import timing
from kbit_dgl.bench.memory import current_rss_mib, max_rss_mib, peak_rss_mib
from kbit_dgl.bench.peers import markdown, package_versions, scoring_rates, summarize
from kbit_dgl.bench.steps import StepTimer, bench_config, time_case
from kbit_dgl.bench.tables import foundation_table, rgcn_table
from kbit_dgl.bench.workloads import random_kg
from kbit_dgl.config import Config


# ---- timing, load, memory ----------------------------------------------------------------------
def test_best_seconds_is_the_fastest_timed_call_after_the_warmup(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.5, 20.0, 22.0])  # timed calls of 3, 1.5 and 2 s

    class FakeTime:
        @staticmethod
        def perf_counter():
            return next(clock)

    monkeypatch.setattr(timing, "time", FakeTime)
    calls = []
    assert timing.best_seconds(lambda: calls.append(1), repeats=3, warmup=2) == 1.5
    assert len(calls) == 5


def test_matmul_rate_is_positive():
    assert timing.matmul_gflops(repeats=1, warmup=0, size=64) > 0


def test_load_watch_rounds_and_flags_a_loaded_machine(monkeypatch):
    loads = iter([(1.234, 0.5, 0.25), (0.126, 0.4, 0.2)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    watch = timing.LoadWatch()
    assert watch.under_load
    assert watch.record(digits=2) == {"before": [1.23, 0.5, 0.25], "after": [0.13, 0.4, 0.2]}
    monkeypatch.setattr(os, "getloadavg", lambda: (0.99, 0.0, 0.0))
    quiet = timing.LoadWatch()
    assert not quiet.under_load and quiet.record() == {"before": [0.99, 0.0, 0.0], "after": [0.99, 0.0, 0.0]}


def test_memory_readings_are_in_mib():
    buffer = torch.ones(16 * 2 ** 20, dtype=torch.uint8)  # 16 MiB touched
    now = current_rss_mib()
    assert now > 16 and peak_rss_mib() >= now - 1 and max_rss_mib() >= now - 1
    del buffer


# ---- workloads and the step timer -----------------------------------------------------------------
def test_random_kg_has_the_asked_size_and_is_reproducible():
    kg = random_kg(50, 3, 200, seed=1)
    assert kg.num_entities == 50 and kg.num_relations == 3 and kg.name == "random-50"
    assert kg.train.shape == (200, 3) and kg.valid.shape == kg.test.shape == (100, 3)
    assert int(kg.train[:, [0, 2]].max()) < 50 and int(kg.train[:, 1].max()) < 3
    assert torch.equal(kg.train, random_kg(50, 3, 200, seed=1).train)
    assert not torch.equal(kg.train, random_kg(50, 3, 200, seed=2).train)


def test_bench_config_is_the_speed_issue_batch():
    config = bench_config("rotate", "sparse_adam")
    assert (config.model.name, config.model.dim, config.train.optimizer) == ("rotate", 200, "sparse_adam")
    assert (config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size) == (1024, 256, 128)


def test_time_case_interleaves_sizes_and_records_only_the_timed_steps(monkeypatch):
    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    config = Config()
    config.model.name, config.model.dim = "transe", 8
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = 16, 4, 8
    kgs = {size: random_kg(size, 4, 64) for size in (30, 300)}
    result = time_case(kgs, "transe", "sparse_adam", steps=3, warmup=1, config=config)
    assert set(result) == {"30", "300"}
    for summary in result.values():
        assert len(summary["step_seconds_all"]) == 3
        assert 0 < summary["optimizer_step_seconds_median"] <= summary["step_seconds_median"]
    timer = StepTimer(kgs[30], "transe", "adam", config)
    before = timer.model.entity.weight.detach().clone()
    timer.step(record=False)
    timer.step(record=True)
    assert timer.count == 2 and len(timer.step_seconds) == 1
    assert not torch.equal(before, timer.model.entity.weight.detach())  # the step trained the model


# ---- peer comparison ---------------------------------------------------------------------------
def _run(peer, rate, eval_seconds, rss, repetition=0, filtered=True):
    return {"peer": peer, "model": "transe", "repetition": repetition, "train_triples_per_second": rate,
            "eval_seconds_per_1000_triples": eval_seconds, "peak_rss_mib": rss, "train_scoring_gflops": rate / 100,
            "eval_scoring_gflops": 1.0, "matmul_gflops": 50.0, "eval_directions": 2 if filtered else 1,
            "eval_filtered": filtered}


def test_peer_summary_takes_medians_and_ratios_to_kbit_dgl():
    runs = [_run("kbit-dgl", 3000, 2.0, 900), _run("kbit-dgl", 5000, 4.0, 1000, 1),
            _run("kbit-dgl", 4000, 3.0, 950, 2), _run("pyg", 1000, 12.0, 700, filtered=False),
            {"peer": "pyg", "model": "transe", "repetition": 1, "error": "exit 1: boom"}]
    summary = summarize(runs, ["kbit-dgl", "pykeen", "pyg"], ["transe"])
    ours, pyg = summary["table"]["transe"]["kbit-dgl"], summary["table"]["transe"]["pyg"]
    assert "pykeen" not in summary["table"]["transe"]  # no run of it: no row
    assert ours["train_triples_per_second_median"] == 4000 and ours["repetitions"] == 3
    assert ours["peak_rss_mib_max"] == 1000 and ours["train_fraction_of_matmul"] == pytest.approx(40 / 50)
    assert pyg["repetitions"] == 1 and not pyg["eval_filtered"]
    assert summary["kbit_dgl_ratios"]["transe"] == {"train_speedup_vs_pyg": 4.0, "eval_speedup_vs_pyg": 4.0}
    provenance = {"command": "python pipelines/bench_peers.py", "commit": "abc", "finished": "now",
                  "wall_seconds": 1.0, "machine": {"cpu_cores": "2", "torch": "2.2"}}
    results = {"provenance": provenance, "mode": "quick", "threads": 2, "workload": {"eval_triples": 8},
               "load_average": {"before": [0.5, 0, 0], "after": [1.5, 0, 0]}, "peer_notes": {"pyg": "its loop"},
               "errors": ["pyg/transe/rep 1: exit 1: boom"]}
    text = markdown(summary, results)
    assert "| transe | kbit-dgl | 4,000 | 3.00 | head+tail, filtered | 1,000 |" in text
    assert "| transe | pyg | 1,000 | 12.00 | tail only, unfiltered |" in text
    assert "- transe: train_speedup_vs_pyg 4.0x, eval_speedup_vs_pyg 4.0x" in text
    assert "- **pyg**: its loop" in text and "- pyg/transe/rep 1: exit 1: boom" in text


def test_a_peers_own_defaults_row_times_training_alone():
    runs = [_run("kbit-dgl", 4000, 3.0, 950), {"peer": "pykeen-defaults", "model": "transe", "repetition": 0,
                                               "train_triples_per_second": 2000.0, "peak_rss_mib": 600.0,
                                               "matmul_gflops": 50.0, "train_seconds": 1.0}]
    summary = summarize(runs, ["kbit-dgl", "pykeen-defaults"], ["transe"])
    row = summary["table"]["transe"]["pykeen-defaults"]
    assert row["train_triples_per_second_median"] == 2000 and "eval_seconds_per_1000_triples_median" not in row
    assert summary["kbit_dgl_ratios"]["transe"] == {"train_speedup_vs_pykeen-defaults": 2.0}
    provenance = {"command": "c", "commit": "abc", "finished": "now", "wall_seconds": 1.0,
                  "machine": {"cpu_cores": "2", "torch": "2.2"}}
    text = markdown(summary, {"provenance": provenance, "mode": "full", "threads": 2, "workload": {"eval_triples": 8},
                              "load_average": {"before": [0.5], "after": [1.5]}, "peer_notes": {}})
    assert "| transe | pykeen-defaults | 2,000 | - | (own workload, training only) | 600 | - | - | 50 | 1 |" in text


def test_scoring_rates_count_nominal_flops_per_pair():
    measured = {"train_seconds": 2.0, "eval_seconds": 0.5, "eval_directions": 2}
    rates = scoring_rates(measured, steps=4, batch_size=10, num_negatives=9, num_eval=5, num_entities=100,
                          flops_per_pair=6)
    assert list(rates) == ["train_triples_per_second", "eval_seconds_per_1000_triples", "eval_triples",
                           "train_scoring_gflops", "eval_scoring_gflops"]  # the order of the stored keys
    assert rates["train_triples_per_second"] == 20 and rates["eval_seconds_per_1000_triples"] == 100
    assert rates["train_scoring_gflops"] == pytest.approx(3 * 4 * 10 * 10 * 6 / 2.0 / 1e9)
    assert rates["eval_scoring_gflops"] == pytest.approx(2 * 5 * 100 * 6 / 0.5 / 1e9)


def test_package_versions_names_missing_packages_none():
    versions = package_versions(["torch", "no-such-package-kbit"])
    assert versions["torch"] and versions["no-such-package-kbit"] is None


# ---- results tables --------------------------------------------------------------------------------
def _foundation_record(spec, mrr, overrides=()):
    dataset, model = spec.split(":")
    return {"spec": spec, "dataset": dataset, "model": model, "overrides": list(overrides),
            "test": {"mrr": mrr, "hits@1": mrr / 2, "hits@10": min(1, 2 * mrr)}, "valid": {"mrr": mrr},
            "best_epoch": 5, "epochs": 8, "train_seconds": 10.0, "train_triples_per_second": 12345.0,
            "provenance": {"wall_seconds": 12.0, "commit": "0123456789abcdef"}}


def test_foundation_table_orders_default_runs_first_and_summarises_seeds(tmp_path):
    records = {"nations-rotate": _foundation_record("nations:rotate", 0.7),
               "codex-s-transe": _foundation_record("codex-s:transe", 0.30),
               "codex-s-transe-s1": _foundation_record("codex-s:transe", 0.32, ["train.seed=1"]),
               "codex-s-transe-big": _foundation_record("codex-s:transe", 0.35, ["model.dim=512"])}
    for name, record in records.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    text = foundation_table(str(tmp_path), ["codex-s:transe", "nations:rotate"], {"codex-s:transe": 0.354})
    rows = [line for line in text.splitlines() if line.startswith("| codex-s") or line.startswith("| nations")]
    assert [row.split(" | ")[2] for row in rows[:4]] == ["defaults", "defaults", "model.dim=512", "train.seed=1"]
    assert rows[0].startswith("| codex-s | transe | defaults | 0.3000 |") and ">= 0.354" in rows[0]
    assert rows[1].startswith("| nations | rotate |")
    # over seeds: the default run and seed 1; the dim-512 run changes more than the seed
    assert "| codex-s:transe | 2 | 0.3100 | 0.0141 | 0.3000 / 0.3200 | >= 0.354 |" in text


def test_rgcn_table_lists_out_of_memory_runs(tmp_path):
    common = {"dataset": "random-1000", "model": "distmult", "config": {"encoder": {"mode": "full"}}, "overrides": [],
              "peak_rss_mb": 2048.4, "rss_before_training_mb": 512.0,
              "provenance": {"wall_seconds": 30.0, "commit": "0123456789abcdef"}}
    (tmp_path / "a.json").write_text(json.dumps({**common, "out_of_memory": "can't allocate", "memory_limit_gb": 4.0}))
    (tmp_path / "b.json").write_text(json.dumps({**common, "test": {"mrr": 0.25, "hits@1": 0.1, "hits@10": 0.5},
                                                 "best_epoch": 2, "epochs": 3, "seconds_per_epoch": 7.25}))
    rows = [line for line in rgcn_table(str(tmp_path)).splitlines() if line.startswith("| random-1000")]
    assert rows[0] == ("| random-1000 | rgcn + distmult | full | pipeline settings | out of memory under 4.0 GiB "
                       "| | | | | 2048 | 512 | 30 | `0123456789` |")
    assert rows[1].startswith("| random-1000 | rgcn + distmult | full | pipeline settings | 0.2500 | 0.100 | 0.500 | "
                              "2/3 | 7.2 | 2048 |")


def test_the_onevsall_benchmark_times_the_trainer_step_and_its_product():
    from kbit_dgl.bench.onevsall import onevsall_config, time_onevsall

    kg = random_kg(60, 3, 300)
    result = time_onevsall(kg, "cp", 16, 32, steps=2, warmup=1)
    assert (result["queries"], result["width"], result["num_entities"]) == (64, 16, 60)
    assert len(result["step_seconds_all"]) == 2 and result["fraction_of_product_rate"] > 0
    config = onevsall_config("complex", 8, 4)
    assert (config.train.objective, config.train.regularizer, config.model.reciprocal) == ("1vsall", "n3", "true")
