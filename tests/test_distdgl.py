"""DistDGL (issue #14): the KG partitioned by ``dgl.distributed.partition_graph`` with maps back to
entity ids and training rows, servers and trainers started from one command on loopback machines,
the entity table a ``DistEmbedding`` updated by DGL's distributed sparse optimizer, rank 0's run
folder an ordinary run; a partition of another dataset, a failing trainer and configs DistDGL does
not train give clear errors."""
from __future__ import annotations

import glob
import json
import time

import pytest
import torch

from kbit_dgl.cli import main
from kbit_dgl.data import load_dataset
from kbit_dgl.errors import ConfigError
from kbit_dgl.io import load_saved
from kbit_dgl.train import distdgl
from kbit_dgl.train.distributed import DistributedTrainingError

# the built-in generated KG (928 entities, 4,040 training triples), where 30 epochs of TransE converge
SET = ["train.batch_size=256", "train.valid_every=10", "train.dist_timeout_minutes=3"]


@pytest.fixture(scope="module")
def kg():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def parts(kg, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    distdgl.partition(kg, str(folder), 2)
    return folder


def _train(out, *extra, sets=()):
    code = main(["train", "--dataset", "synthetic", "--model", "transe", "--out", str(out), "--no-progress",
                 *extra, "--set", *SET, *sets])
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["random", "metis"])
def test_partitions_map_back_to_every_training_triple_once(kg, tmp_path, method):
    import dgl

    summary = distdgl.partition(kg, str(tmp_path), 2, method)
    assert summary["num_parts"] == 2 and sum(summary["part_edges"]) == len(kg.train)
    maps = distdgl.load_maps(str(tmp_path / "kg.json"), kg)
    if method == "random":  # the same seed, the same partitions (DGL's METIS call takes no seed)
        distdgl.partition(kg, str(tmp_path / "again"), 2, method)
        again = load_saved(tmp_path / "again" / "kbit_partition.pt")
        assert torch.equal(maps["entity_of_node"], again["entity_of_node"])
    assert torch.equal(maps["entity_of_node"].sort().values, torch.arange(kg.num_entities))
    rows = []
    for part in range(2):
        local, _, edge_feats, _, _, _, _ = dgl.distributed.load_partition(str(tmp_path / "kg.json"), part)
        inner = local.edata["inner_edge"].bool()
        heads, tails = local.edges()
        nodes = local.ndata[dgl.NID]
        part_rows = maps["train_of_edge"][local.edata[dgl.EID][inner]]
        relations = next(value for key, value in edge_feats.items() if key.endswith("/relation"))
        found = torch.stack([maps["entity_of_node"][nodes[heads[inner]]], relations,
                             maps["entity_of_node"][nodes[tails[inner]]]], 1)
        assert torch.equal(found, kg.train[part_rows])  # edge features in the order of the partition's edges
        rows.append(part_rows)
    assert torch.equal(torch.cat(rows).sort().values, torch.arange(len(kg.train)))


def test_a_partition_of_another_dataset_is_refused(kg, parts, tsv_folder, tmp_path):
    other = load_dataset(str(tsv_folder))
    with pytest.raises(distdgl.PartitionMismatchError, match=str(parts)):
        distdgl.load_maps(str(parts / "kg.json"), other)
    with pytest.raises(ConfigError, match="already holds a partition"):
        distdgl.partition(kg, str(parts), 2)
    assert main(["train", "--dataset", str(tsv_folder), "--out", str(tmp_path / "run"), "--partitions", str(parts),
                 "--no-progress"]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--encoder", "rgcn"], "shallow models"),
    (["--set", "train.qat_bits=4"], "quantisation-aware"),
    (["--num-procs", "3"], "one trainer per partition"),
])
def test_configs_distdgl_does_not_train_are_refused(parts, tmp_path, capsys, args, message):
    code = main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--partitions", str(parts),
                 "--no-progress", *args])
    assert code == 2 and message in capsys.readouterr().err


def test_a_failing_trainer_stops_the_launch_with_its_name(parts, tmp_path):
    started = time.monotonic()  # the servers start; the trainers fail reading a dataset that is not there
    with pytest.raises(DistributedTrainingError, match=r"trainer \d \(machine \d\) failed \(exit code 2\)"):
        distdgl.launch_local(str(parts), ["train", "--dataset", str(tmp_path / "missing"), "--out",
                                          str(tmp_path / "run")])
    assert time.monotonic() - started < 60  # the servers waiting for it were stopped, no hang
    assert not glob.glob("/dev/shm/kbitm*")


def test_distdgl_trains_like_one_process_and_resumes_bit_for_bit(parts, tmp_path):
    """2 machines on loopback (a server and a trainer each): test MRR within 0.01 of one process with
    the same optimizer (DistDGL's `adam` is DGL's lazy SparseAdam, one process's `sparse_adam`); the
    run folder is an ordinary run; a resume from a checkpoint continues exactly."""
    sets = ["train.max_epochs=30"]
    one = _train(tmp_path / "one", sets=sets + ["train.optimizer=sparse_adam"])
    dist = _train(tmp_path / "dist", "--partitions", str(parts), sets=sets)
    assert dist["epochs"] == 30 and dist["steps"] == one["steps"]
    assert abs(dist["test"]["mrr"] - one["test"]["mrr"]) < 0.01, (dist["test"]["mrr"], one["test"]["mrr"])
    assert load_saved(tmp_path / "dist" / "checkpoint.pt")["num_procs"] == 2
    assert not glob.glob("/dev/shm/kbitm*")
    # the saved model is an ordinary model file: the usual evaluation gives the run's test metrics
    from kbit_dgl import api

    again = api.evaluate(api.load_run(str(tmp_path / "dist")), "test")
    assert again["mrr"] == pytest.approx(dist["test"]["mrr"], abs=1e-9)
    # stopped after one epoch and resumed for one more: the same model and optimizer state as two epochs
    # in one go; with row-wise Adagrad (the wikikg2 configs' optimizer: one accumulator per row, kept by
    # DGL's servers beside the table)
    rowwise = ["train.optimizer=rowwise_adagrad", "train.lr=0.1"]
    _train(tmp_path / "two", "--partitions", str(parts), sets=["train.max_epochs=2", *rowwise])
    _train(tmp_path / "half", "--partitions", str(parts), sets=["train.max_epochs=1", *rowwise])
    assert main(["train", "--out", str(tmp_path / "half"), "--resume", "--partitions", str(parts), "--no-progress",
                 "--set", "train.max_epochs=2"]) == 0
    whole = load_saved(tmp_path / "two" / "checkpoint.pt")
    resumed = load_saved(tmp_path / "half" / "checkpoint.pt")
    assert resumed["state"]["epoch"] == 2
    for key in whole["model"]:
        assert torch.equal(whole["model"][key], resumed["model"][key]), key
    states = whole["optimizer"]["sparse"]["states"]
    assert [tuple(state.shape) for state in states] == [(928, 1)] and bool((states[0] > 0).any())
    for saved, again in zip(states, resumed["optimizer"]["sparse"]["states"]):
        assert torch.equal(saved, again)  # DGL's optimizer state, pulled from the servers


def _trainer_pids(marker: str) -> dict:
    """DistDGL trainers whose command line holds ``marker``, by rank (from their environment)."""
    import os

    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker.encode() not in handle.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if env.get(b"DGL_ROLE") == b"client":
            found[int(env[b"RANK"])] = int(pid)
    return found


def test_a_trainer_killed_mid_run_stops_the_others_and_keeps_the_checkpoint(parts, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [sys.executable, "-m", "kbit_dgl.cli", "train", "--dataset", "synthetic", "--model", "transe", "--out",
               str(out), "--no-progress", "--partitions", str(parts), "--set", *SET, "train.max_epochs=200",
               "train.valid_every=100"]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (out / "checkpoint.pt").exists(), launcher.stderr.read() if launcher.poll() is not None else "timeout"
    os.kill(_trainer_pids(str(out))[1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=120)  # no hang: the launcher stops the rest
    assert launcher.returncode == 2
    assert "DistDGL trainer 1 (machine 1) failed (signal 9)" in err and str(out / "checkpoint.pt") in err
    assert load_saved(out / "checkpoint.pt")["state"]["epoch"] >= 1  # intact
    assert not _trainer_pids(str(out)) and not glob.glob("/dev/shm/kbitm*")
