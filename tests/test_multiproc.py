"""Training in N processes on one machine (issue #14): DGL's shared-memory NodeEmbedding tables and
sparse optimizers, rank 0 validating and checkpointing, exact resume with the same N, clear errors
for a process that fails or dies, a port in use, and configs that cannot run in N processes."""
from __future__ import annotations

import glob
import os
import socket

import pytest
import torch
from conftest import small_config

from kbit_dgl.errors import ConfigError
from kbit_dgl.io import load_saved
from kbit_dgl.runs import check_config
from kbit_dgl.train import distributed, steps
from kbit_dgl.train.trainer import train


def _leftover_shared_memory():
    return glob.glob("/dev/shm/kbit*")


def _config(**overrides):
    settings = {"batch_size": 128, "valid_every": 2, "num_procs": 2, **overrides}
    config = small_config("transe", epochs=settings.pop("max_epochs", 4), **settings)
    config.train.dist_timeout_minutes = 2.0
    return config


def test_two_processes_train_validate_and_test_like_one(small_kg, tmp_path):
    before = set(_leftover_shared_memory())
    one = train(small_config("transe", epochs=4, batch_size=128, valid_every=2), small_kg, str(tmp_path / "one"),
                progress=False)
    two = train(_config(), small_kg, str(tmp_path / "two"), progress=False)
    assert two["epochs"] == 4 and two["steps"] == one["steps"]
    assert [h["epoch"] for h in two["history"]] == [2, 4]
    assert two["test"]["mrr"] > 0.5 * one["test"]["mrr"] and two["test"]["mrr"] > 0.1
    for name in ("model.pt", "checkpoint.pt", "metrics.json", "config.yaml", "entities.dict", "train.log"):
        assert (tmp_path / "two" / name).exists(), name
    assert load_saved(tmp_path / "two" / "checkpoint.pt")["num_procs"] == 2
    assert set(_leftover_shared_memory()) == before  # the shared tables and buffers are unlinked


@pytest.mark.parametrize("optimizer", ["sparse_adagrad", "rowwise_adagrad"])
def test_two_processes_with_each_sparse_optimizer_in_sync(small_kg, tmp_path, optimizer):
    metrics = train(_config(optimizer=optimizer, lr=0.1, max_epochs=2, dist_update="sync"), small_kg,
                    str(tmp_path / "run"), progress=False)
    assert metrics["test"]["mrr"] > 0.1


@pytest.mark.parametrize("optimizer", ["adam", "rowwise_adagrad"])
def test_two_processes_with_hogwild_updates(small_kg, tmp_path, optimizer):
    """DGL-KE's way: each process updates the rows it touched itself, without the exchange."""
    config = _config(optimizer=optimizer, lr=0.1 if optimizer == "rowwise_adagrad" else 0.01, max_epochs=4,
                     dist_update="hogwild")
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    one = train(small_config("transe", epochs=4, batch_size=128, valid_every=2, optimizer=optimizer,
                             lr=config.train.lr), small_kg, str(tmp_path / "one"), progress=False)
    assert metrics["test"]["mrr"] > 0.8 * one["test"]["mrr"]


def test_a_two_process_run_resumes_exactly_inside_an_epoch(small_kg, tmp_path):
    config = _config(max_epochs=3, valid_every=3, dist_update="sync")  # hogwild's races are not reproducible
    config.train.checkpoint_every_steps = 4
    whole = train(config, small_kg, str(tmp_path / "whole"), progress=False)
    per_epoch = -(-len(small_kg.train) // config.train.batch_size)
    config.train.max_steps = per_epoch + 4
    train(config, small_kg, str(tmp_path / "cut"), progress=False)
    config.train.max_steps = 0
    resumed = train(config, small_kg, str(tmp_path / "cut"), resume=True, progress=False)
    assert resumed["steps"] == whole["steps"]
    a = load_saved(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_saved(tmp_path / "cut" / "checkpoint.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_resume_with_another_number_of_processes_is_refused(small_kg, tmp_path):
    config = _config(max_epochs=1)
    train(config, small_kg, str(tmp_path / "run"), progress=False)
    config.train.num_procs = 1
    config.train.max_epochs = 2
    with pytest.raises(ConfigError, match="num_procs"):
        train(config, small_kg, str(tmp_path / "run"), resume=True, progress=False)


def test_a_process_that_dies_ends_the_run_with_a_clear_error_and_the_checkpoint_intact(small_kg, tmp_path,
                                                                                       monkeypatch):
    config = _config(max_epochs=3, valid_every=1)
    per_epoch = -(-len(small_kg.train) // config.train.batch_size)
    real_step, calls = steps.train_step, {"n": 0}

    def dies(*args, **kwargs):  # forked into each process: rank 1 dies inside epoch 2
        calls["n"] += 1
        if calls["n"] == per_epoch + 2 and torch.distributed.get_rank() == 1:
            os._exit(9)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(steps, "train_step", dies)
    with pytest.raises(distributed.DistributedTrainingError, match="process 1 of 2 died") as error:
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert "checkpoint.pt" in str(error.value)
    saved = load_saved(tmp_path / "run" / "checkpoint.pt")
    assert saved["state"]["epoch"] == 1 and saved["num_procs"] == 2


def test_a_process_that_fails_names_its_error(small_kg, tmp_path, monkeypatch):
    config = _config(max_epochs=1)

    def fails(*args, **kwargs):
        raise ValueError("a bad batch")

    monkeypatch.setattr(steps, "train_step", fails)
    with pytest.raises(distributed.DistributedTrainingError, match="a bad batch"):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert not _leftover_shared_memory() or all("kbit" not in p for p in _leftover_shared_memory())


def test_helper_threads_are_stopped_before_the_fork(monkeypatch):
    """torch.compile's worker pools and tqdm's monitor, left by earlier work in the launching process,
    are stopped before it forks: a lock one of them held at the fork would stay held in the children."""
    import io

    import tqdm
    from torch._inductor import config as inductor_config
    from torch._inductor.codecache import AsyncCompile

    monkeypatch.setattr(inductor_config, "compile_threads", 2)
    AsyncCompile.pool.cache_clear()
    pool = AsyncCompile.pool()
    pool.submit(lambda: None).result()
    tqdm.tqdm(total=1, file=io.StringIO()).close()  # starts tqdm's monitor thread
    helpers = list(pool._threads) + [tqdm.tqdm.monitor]
    assert helpers and all(thread.is_alive() for thread in helpers)
    distributed._stop_helper_threads()
    assert not any(thread.is_alive() for thread in helpers)
    assert AsyncCompile.pool.cache_info().currsize == 0 and tqdm.tqdm.monitor is None


def test_a_port_in_use_is_a_clear_error_not_a_hang(small_kg, tmp_path, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("MASTER_PORT", str(busy.getsockname()[1]))
        with pytest.raises(distributed.DistributedTrainingError, match="port"):
            train(_config(max_epochs=1), small_kg, str(tmp_path / "run"), progress=False)


def test_two_processes_train_an_rgcn_encoder_on_sampled_blocks(small_kg, tmp_path):
    config = _config(max_epochs=2, valid_every=2)
    config.model.name = "distmult"
    config.model.encoder = "rgcn"
    config.encoder.mode = "sampled"
    config.encoder.layers = 1
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["epochs"] == 2 and metrics["test"]["mrr"] > 0.05
    assert metrics["steps"] == 2 * -(-len(small_kg.train) // 128)  # each process: its half of every batch


def test_configs_that_cannot_run_in_several_processes_are_refused():
    config = _config()
    config.model.encoder = "rgcn"
    config.encoder.mode = "full"
    with pytest.raises(ConfigError, match="num_procs"):
        check_config(config)
    config = _config(qat_bits=4)
    with pytest.raises(ConfigError, match="num_procs"):
        check_config(config)
    with pytest.raises(ConfigError, match="num_procs"):
        check_config(_config(num_procs=0))
    with pytest.raises(ConfigError, match="dist_update"):
        check_config(_config(dist_update="async"))


def test_rowwise_adagrad_on_dgl_equals_ours_for_the_same_gradient():
    """One process (no group): DGL's NodeEmbedding with the row-wise Adagrad subclass takes the same
    step as kbit_dgl.train.optim.RowwiseAdagrad (a row looked up twice: its gradients summed)."""
    import dgl

    from kbit_dgl.train.optim import RowwiseAdagrad

    torch.manual_seed(0)
    initial = torch.randn(10, 4)
    ids = torch.tensor([1, 3, 3, 7])
    upstream = torch.randn(4, 4)
    embedding = dgl.nn.NodeEmbedding(10, 4, "rowwise_test", init_func=lambda t: t.copy_(initial))
    optimizer = distributed._rowwise_adagrad_class()([embedding], lr=0.1)
    reference = torch.nn.Embedding.from_pretrained(initial.clone(), freeze=False, sparse=True)
    ours = RowwiseAdagrad(reference.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()  # DGL's order: zero_grad, backward, step (as the trainer does)
        (embedding(ids) * upstream).sum().backward()
        optimizer.step()
        ours.zero_grad()
        (reference(ids) * upstream).sum().backward()
        ours.step()
    assert torch.allclose(embedding.weight, reference.weight, atol=1e-6)


def test_torchrun_launches_the_cli_as_n_ranks(tsv_folder, tmp_path):
    """``torchrun --nproc_per_node 2 -m kbit_dgl.cli train ...``: rank 0 writes the run, the other trains beside it."""
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(distributed.free_port()), "-m", "kbit_dgl.cli", "train", "--dataset", str(tsv_folder),
               "--model", "transe", "--out", str(out), "--no-progress", "--set", "model.dim=16",
               "train.max_epochs=2", "train.valid_every=1", "train.batch_size=128", "train.dist_timeout_minutes=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"test"') == 1  # rank 0 reports once
    assert load_saved(out / "checkpoint.pt")["num_procs"] == 2
    assert (out / "metrics.json").exists() and not _leftover_shared_memory()
    resume = command[:command.index("--dataset")] + ["--out", str(out), "--resume", "--no-progress", "--set",
                                                     "train.max_epochs=3", "train.lr=0.005"]
    resume[resume.index("--master_port") + 1] = str(distributed.free_port())
    done = subprocess.run(resume, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = load_saved(out / "checkpoint.pt")
    assert saved["state"]["epoch"] == 3
    assert saved["state"]["lr_decays"][-1]["lr"] == 0.005  # rank 0 hands the resume's changes to the others
