"""The thread governor: torch's thread count follows the cores other processes leave free."""
import json

import torch

from kbit_dgl import threads
from kbit_dgl.threads import ThreadGovernor


class FakeMachine:
    """Wall clock, machine-wide busy CPU seconds and this process's CPU seconds, advanced by hand."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0.0, 0.0
        self.applied = []

    def run(self, seconds, own_cores, other_cores):
        self.now += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)

    def governor(self, max_threads=2, cores=2):
        return ThreadGovernor(max_threads, cores=cores, busy=lambda: self.busy, own=lambda: self.own,
                              clock=lambda: self.now, apply=self.applied.append)


def test_threads_drop_when_another_process_takes_a_core_and_return_when_it_leaves():
    machine = FakeMachine()
    governor = machine.governor()
    for _ in range(5):  # quiet: both cores ours
        machine.run(2.5, 2.0, 0.0)
        governor.tick()
    assert machine.applied == [] and governor.threads == 2
    machine.run(2.5, 1.3, 0.7)  # a busy process arrives: our two threads get 1.3 cores
    governor.tick()
    assert machine.applied == []  # one look is not enough
    machine.run(2.5, 1.0, 1.0)
    governor.tick()
    assert machine.applied == [1] and governor.threads == 1
    machine.run(2.5, 1.0, 0.0)  # it left: one core idle
    governor.tick()
    machine.run(2.5, 1.0, 0.0)
    governor.tick()
    assert machine.applied == [1, 2] and [change[1] for change in governor.changes] == [1, 2]


def test_a_short_burst_and_looks_closer_than_the_period_change_nothing():
    machine = FakeMachine()
    governor = machine.governor()
    machine.run(2.5, 1.0, 1.0)  # one look with a busy neighbour (a compile worker, a shell command)
    governor.tick()
    machine.run(2.5, 2.0, 0.0)
    governor.tick()
    for _ in range(10):  # ticks every step, well inside the period
        machine.run(0.01, 1.0, 1.0)
        governor.tick()
    assert machine.applied == []


def test_never_below_one_thread_nor_above_the_starting_count():
    machine = FakeMachine()
    governor = machine.governor(max_threads=2, cores=4)
    for _ in range(3):
        machine.run(2.5, 0.5, 3.5)  # three other processes on four cores
        governor.tick()
    assert governor.threads == 1
    for _ in range(3):
        machine.run(2.5, 1.0, 0.0)  # all four free, but the run started with two
        governor.tick()
    assert governor.threads == 2


def test_training_adapts_only_at_the_default_thread_count(tsv_folder, tmp_path, monkeypatch):
    from kbit_dgl.cli import main

    monkeypatch.setenv("KBIT_DGL_ADAPT_THREADS", "1")
    folder = tsv_folder
    before = torch.get_num_threads()
    common = ["--dataset", str(folder), "--model", "transe", "--no-progress", "--set", "model.dim=8",
              "train.max_epochs=1", "train.batch_size=64", "train.num_negatives=4"]
    assert main(["train", *common, "--out", str(tmp_path / "auto")]) == 0
    assert isinstance(json.loads((tmp_path / "auto" / "metrics.json").read_text())["thread_changes"], list)
    assert threads._governor is None and torch.get_num_threads() == before  # stopped, count restored
    assert main(["train", *common, "train.num_threads=1", "--out", str(tmp_path / "fixed")]) == 0
    assert json.loads((tmp_path / "fixed" / "metrics.json").read_text())["thread_changes"] is None
    torch.set_num_threads(before)
    monkeypatch.setenv("KBIT_DGL_ADAPT_THREADS", "0")
    assert threads.adapt() is None
