"""OGB leaderboard entries (kbit_dgl/bench/leaderboard.py) and the sampled / OGB-protocol sweep helpers."""
import sys

import pytest
import torch

from kbit_dgl.bench.leaderboard import ENTRIES, format_mrr, leaderboard_row, mean_std
from kbit_dgl.config import Config


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_every_entry_is_a_valid_config_that_names_its_differences(key):
    entry = ENTRIES[key]
    config = Config()
    config.model.name = entry.model
    config.apply_overrides(entry.config_overrides(seed=3))
    config.validate()
    assert config.train.seed == 3 and config.train.max_steps == entry.max_steps
    assert config.train.valid_every_steps == entry.max_steps // 10 and config.eval.protocol == "ogb"
    assert config.train.batch_size == 512 and config.train.num_negatives == 128
    assert any("Adagrad" in difference for difference in entry.differences)
    assert entry.ogb_command.startswith("python run.py") and entry.reference["test"][0] > 0.3


def test_leaderboard_row_is_mean_and_sample_std_over_seeds():
    entry = ENTRIES["wikikg2-transe-500"]
    records = [{"seed": s, "valid_mrr": v, "test_mrr": t, "num_parameters": 10, "train_seconds": 100.0 + s,
                "peak_rss_gib": 7.0} for s, v, t in ((0, 0.40, 0.41), (1, 0.42, 0.43))]
    row = leaderboard_row(entry, records)
    assert row["valid_mrr"] == [0.41, pytest.approx(0.0141, abs=1e-4)] and row["test_mrr"][0] == 0.42
    assert row["reference_test_mrr"] == [0.4256, 0.0030] and row["train_seconds"] == 100.5
    assert format_mrr([0.42, 0.0141]) == "0.4200 ± 0.0141"
    with pytest.raises(ValueError, match="no finished seed"):
        leaderboard_row(entry, [])


def test_one_seed_prints_its_value_without_a_zero_std(tmp_path):
    """Issue #28.2: one seed's noise is unknown, not zero: no "± 0.0000", the value marked "(1 seed)"."""
    import importlib.util
    import os
    import shutil

    assert mean_std([0.5]) == (0.5, None)
    entry = ENTRIES["wikikg2-transe-500"]
    row = leaderboard_row(entry, [{"seed": 0, "valid_mrr": 0.36384, "test_mrr": 0.36381, "num_parameters": 10,
                                   "train_seconds": 100.0}])
    assert row["valid_mrr"] == [0.3638, None] and format_mrr(row["test_mrr"]) == "0.3638 (1 seed)"
    assert format_mrr(row["reference_test_mrr"]) == "0.4256 ± 0.0030"
    # the pipeline's report, rendered from the stored single-seed record
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    (tmp_path / entry.key).mkdir()
    shutil.copy(os.path.join(root, "results", "ogb", entry.key, "seed-0.json"), tmp_path / entry.key)
    spec = importlib.util.spec_from_file_location("reproduce_ogb", os.path.join(root, "pipelines", "reproduce_ogb.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    line = next(line for line in module.render(str(tmp_path)).splitlines() if line.startswith(f"| {entry.key} "))
    assert "± 0.0000" not in line and "(1 seed)" in line and "0.4256 ± 0.0030" in line


def test_run_watched_reports_exit_code_and_peak_memory(tmp_path):
    from kbit_dgl.bench.memory import run_watched

    log = tmp_path / "out.log"
    result = run_watched([sys.executable, "-c", "import sys; b = bytearray(50 * 2**20); print('hi'); sys.exit(3)"],
                         poll_seconds=0.01, log_path=str(log))
    assert result["returncode"] == 3 and "hi" in log.read_text()
    assert result["peak_rss_gib"] >= 0.0


def test_test_sample_keeps_its_negatives_and_the_sweep_ranks_it_under_ogbs_protocol():
    from kbit_dgl.data.kg import KG
    from kbit_dgl.eval import evaluate
    from kbit_dgl.models.model import build_model
    from kbit_dgl.scaling.metrics import rank_metrics
    from kbit_dgl.train.trainer import split_sample

    generator = torch.Generator().manual_seed(0)
    test = torch.stack([torch.randint(30, (40,), generator=generator), torch.randint(3, (40,), generator=generator),
                        torch.randint(30, (40,), generator=generator)], 1)
    negatives = {"head_neg": torch.randint(30, (40, 7), generator=generator),
                 "tail_neg": torch.randint(30, (40, 7), generator=generator)}
    kg = KG("ogbl-wikikg2", test, test, test, 30, 3, [str(i) for i in range(30)], ["a", "b", "c"],
            negatives={"valid": negatives, "test": negatives})
    sample = split_sample(kg, "test", 10, seed=1, protocol="ogb")
    assert len(sample.test) == 10 and len(sample.valid) == 40 and sample.negatives["test"]["head_neg"].shape == (10, 7)
    rows = [kg.test.tolist().index(triple) for triple in sample.test.tolist()]
    assert torch.equal(sample.negatives["test"]["tail_neg"], negatives["tail_neg"][rows])
    model = build_model("transe", 30, 3, 8, 6.0)
    metrics, expected = rank_metrics(model, sample, "test"), evaluate(model, sample, "test")
    assert metrics["mrr"] == pytest.approx(expected["mrr"]) and metrics["num_queries"] == 20
    assert split_sample(kg, "test", 0, seed=1) is kg
