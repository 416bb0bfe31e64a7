"""kbit_dgl.allocator: within its scope, large tensors freed by one step are reused by the next instead of
being faulted in again, and given back to the kernel when the scope ends."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys
import torch
from kbit_dgl.allocator import kept_freed_memory

def step():
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    return [bytes(100) for _ in range(100)]  # small objects allocated after it, as in a real step

def faults(steps=5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    kept = [step() for _ in range(steps)]
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

def rss_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

result = {"outside": faults(), "rss_before": rss_mib()}
with kept_freed_memory() as kept:
    with kept_freed_memory() as nested:  # nested scopes share the outer one
        result["applied"] = [kept, nested]
    warm = [step() for _ in range(30)]  # the heap grows until freed blocks coalesce
    result["inside"] = faults()
    result["rss_inside"] = rss_mib()
result["rss_after"] = rss_mib()
result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
print(json.dumps(result))
"""


def probe(**env) -> dict:
    output = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True,
                            env={**os.environ, **env}).stdout
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_tensors_are_reused_within_the_scope_only():
    pages = 64 * 2**20 / 4096
    result = probe()
    assert result["applied"] == [True, True]
    assert result["outside"] > 0.9 * pages  # glibc maps and unmaps each one: every page faults
    assert result["inside"] < 0.01 * pages
    assert result["rss_inside"] > result["rss_before"] + 64  # freed tensors kept in the process
    assert result["rss_after"] < result["rss_before"] + 32  # and given back when the scope ends
    assert result["peak_mib"] < 1500  # the heap grows while freed blocks coalesce, not without bound
    opted_out = probe(KBIT_DGL_KEEP_FREED_MEMORY="0")
    assert opted_out["applied"] == [False, False] and opted_out["inside"] > 0.9 * pages


def test_sampled_encoder_epochs_run_within_the_scope():
    import inspect

    from kbit_dgl.train import encoder_training

    assert "with kept_freed_memory()" in inspect.getsource(encoder_training._sampled_losses)
