"""Step budgets (issue #13): train.max_steps, checkpoints and validation inside an epoch, exact
mid-epoch resume, validation on a fixed sample, and valid evaluated once at the end."""
from __future__ import annotations

import pytest
import torch
from conftest import small_config

from kbit_dgl.errors import ConfigError
from kbit_dgl.io import load_saved
from kbit_dgl.runs import check_config
from kbit_dgl.train import steps, trainer
from kbit_dgl.train.trainer import train

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)


def _steps_per_epoch(kg, config):
    return -(-len(kg.train) // config.train.batch_size)


def test_max_steps_stops_inside_an_epoch_and_checkpoints_there(small_kg, tmp_path):
    config = small_config("transe", epochs=10, batch_size=128)
    per_epoch = _steps_per_epoch(small_kg, config)
    config.train.max_steps = per_epoch + 3
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["steps"] == per_epoch + 3 and metrics["epochs"] == 1 and metrics["stopped_at_max_steps"]
    state = load_saved(tmp_path / "run" / "checkpoint.pt")["state"]
    assert state["batch_in_epoch"] == 3 and state["step"] == per_epoch + 3
    assert metrics["history"][-1]["step"] == per_epoch + 3  # the stop is validated


def test_a_run_killed_inside_an_epoch_resumes_exactly(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=3, batch_size=128, valid_every=3)
    config.train.checkpoint_every_steps = 4
    whole = train(config, small_kg, str(tmp_path / "whole"), progress=False)
    per_epoch = _steps_per_epoch(small_kg, config)
    kill_at = per_epoch + 6  # inside epoch 2, two steps after the checkpoint at a multiple of 4 or more
    real_step, calls = steps.train_step, {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(steps, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config, small_kg, str(tmp_path / "split"), progress=False)
    monkeypatch.setattr(steps, "train_step", real_step)
    saved = load_saved(tmp_path / "split" / "checkpoint.pt")["state"]
    assert 0 < saved["batch_in_epoch"] < per_epoch and saved["step"] % 4 == 0
    resumed = train(config, small_kg, str(tmp_path / "split"), resume=True, progress=False)
    a = load_saved(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_saved(tmp_path / "split" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert resumed["test"] == whole["test"] and resumed["steps"] == whole["steps"]


def test_validation_every_n_steps_on_a_fixed_sample(small_kg, tmp_path):
    config = small_config("transe", epochs=2, batch_size=128)
    config.train.valid_every_steps = 5
    config.eval.valid_sample = 40
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert [entry["step"] for entry in metrics["history"]][:2] == [5, 10]
    assert metrics["valid"]["num_queries"] == 2 * len(small_kg.valid)  # final metrics: the whole split
    sample = trainer.valid_sample(small_kg, 40, 0)
    assert len(sample.valid) == 40 and sample.filter_index is small_kg.filter_index


def test_checkpoints_by_the_clock(small_kg, tmp_path):
    config = small_config("transe", epochs=1, batch_size=128)
    config.train.checkpoint_every_minutes = 1e-9  # every step
    config.train.max_steps = 3
    train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert load_saved(tmp_path / "run" / "checkpoint.pt")["state"]["step"] == 3


def test_valid_is_evaluated_once_per_validation_not_again_at_the_end(small_kg, tmp_path, monkeypatch):
    real, splits = trainer.evaluate_model, []

    def counting(model, kg, split, config, per_relation=False, progress=False):
        splits.append(split)
        return real(model, kg, split, config, per_relation, progress)

    monkeypatch.setattr(trainer, "evaluate_model", counting)
    train(small_config("transe", epochs=2, valid_every=1), small_kg, str(tmp_path / "run"), progress=False)
    assert splits == ["valid", "valid", "test"]


def test_step_options_are_checked():
    config = small_config("transe")
    config.train.max_steps = -1
    with pytest.raises(ConfigError, match="train.max_steps must be >= 0"):
        check_config(config)
    config = small_config("distmult")
    config.model.encoder, config.model.reciprocal = "rgcn", "false"
    config.train.checkpoint_every_steps = 10
    with pytest.raises(ConfigError, match="shallow models"):
        check_config(config)


def test_devices_resolve_and_a_missing_gpu_is_refused(small_kg, tmp_path):
    from kbit_dgl.config import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device("cuda:0")
        config = small_config("transe", epochs=1)
        config.train.device = "cuda"
        with pytest.raises(ConfigError, match="CUDA device"):
            train(config, small_kg, str(tmp_path / "gpu"), progress=False)
    config = small_config("transe", epochs=1)
    config.train.device = "tpu"
    with pytest.raises(ConfigError, match="train.device must be"):
        check_config(config)
    config.train.device = "cpu"
    assert train(config, small_kg, str(tmp_path / "cpu"), progress=False)["steps"] > 0


def test_a_step_budget_ending_on_a_validation_step_is_validated_once(small_kg, tmp_path):
    config = small_config("transe", epochs=10, batch_size=128)
    config.train.max_steps = config.train.valid_every_steps = 6
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert [entry["step"] for entry in metrics["history"]] == [6] and metrics["best_step"] == 6
