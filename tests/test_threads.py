"""The thread governor: torch's thread count follows the cores other processes leave free."""
import json

import pytest
import torch

from kbit_dgl import threads
from kbit_dgl.threads import ThreadGovernor

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)


class FakeMachine:
    """Wall clock, machine-wide busy CPU seconds and this process's CPU seconds, advanced by hand."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0.0, 0.0
        self.applied = []
        self.others_running, self.passive = 0, True  # other processes' runnable threads; OMP_WAIT_POLICY=PASSIVE

    def run(self, seconds, own_cores, other_cores):
        self.now += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)

    def governor(self, max_threads=2, cores=2):
        return ThreadGovernor(max_threads, cores=cores, busy=lambda: self.busy, own=lambda: self.own,
                              clock=lambda: self.now, apply=self.applied.append,
                              running=lambda: self.others_running, passive=lambda: self.passive)


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


def test_beside_as_many_busy_threads_as_cores_sleeping_threads_keep_the_starting_count():
    """Two busy processes on 2 cores: the scheduler shares the cores by thread, so two sleeping-wait
    threads get half the CPU where one gets a third; spinning ones would waste it, so they still drop."""
    for passive, expected in ((True, []), (False, [1])):
        machine = FakeMachine()
        machine.others_running, machine.passive = 2, passive
        governor = machine.governor()
        for _ in range(4):
            machine.run(2.5, 1.0, 1.0)  # what two threads get beside two busy processes: 1 core
            governor.tick()
        assert machine.applied == expected
    machine = FakeMachine()  # one busy process: one thread keeps a core of its own
    machine.others_running = 1
    governor = machine.governor()
    for _ in range(2):
        machine.run(2.5, 1.0, 1.0)
        governor.tick()
    assert machine.applied == [1]
    machine.others_running = 2  # a second one arrives: back to the starting count
    for _ in range(2):
        machine.run(2.5, 0.67, 1.33)
        governor.tick()
    assert machine.applied == [1, 2]


def test_other_processes_running_threads_are_counted_and_ours_are_not():
    import subprocess
    import sys
    import time

    assert threads.others_running() is not None  # this suite runs on Linux
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert max(threads.others_running() for _ in range(20)) >= 1
    finally:
        busy.kill()
        busy.wait()


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
