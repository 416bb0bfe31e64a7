"""kbit_dgl.allocator: large tensors freed by one step are reused by the next, not faulted in again."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
import torch
if sys.argv[1] == "keep":
    import os
    from kbit_dgl.allocator import keep_freed_memory
    wanted = os.environ.get("KBIT_DGL_KEEP_FREED_MEMORY") != "0"
    assert keep_freed_memory() == wanted and keep_freed_memory() == wanted  # once per process
def step():
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    return [bytes(100) for _ in range(100)]  # small objects allocated after it, as in a real step
kept = [step() for _ in range(30)]  # warm-up: the heap grows until freed blocks coalesce
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kept += [step() for _ in range(5)]
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps([faults, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10]))
"""


def faults_per_tensor(mode: str, **env) -> float:
    """Page faults per 64 MiB tensor in the steady state; the peak RSS (MiB) is checked too."""
    output = subprocess.run([sys.executable, "-c", PROBE, mode], check=True, capture_output=True, text=True,
                            env={**os.environ, **env}).stdout
    faults, peak_mib = json.loads(output.strip().splitlines()[-1])
    assert peak_mib < 1500  # the heap grows while freed blocks coalesce, but not without bound
    return faults


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_tensors_are_reused_not_faulted_in_again():
    pages = 64 * 2**20 / 4096
    assert faults_per_tensor("plain") > 0.9 * pages  # glibc maps and unmaps each one: every page faults
    assert faults_per_tensor("keep") < 0.01 * pages
    assert faults_per_tensor("keep", KBIT_DGL_KEEP_FREED_MEMORY="0") > 0.9 * pages  # opted out


def test_the_entry_points_apply_it():
    """The CLI, training and evaluation apply it (a script importing them gets the same speed)."""
    import inspect

    from kbit_dgl import cli
    from kbit_dgl.eval import evaluate
    from kbit_dgl.train.trainer import train

    for function in (cli.main, train, evaluate):
        assert "keep_freed_memory()" in inspect.getsource(function)
