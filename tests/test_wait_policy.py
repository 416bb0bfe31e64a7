"""The OpenMP wait policy kbit_dgl chooses as it is imported (before torch loads OpenMP)."""
import os
import subprocess
import sys
import time

import pytest

import kbit_dgl

PROBE = "import os, kbit_dgl; print(repr(os.environ.get('OMP_WAIT_POLICY')), os.environ.get('KBIT_DGL_OMP_CHOICE'))"


def test_passive_only_when_other_processes_use_half_the_cores(monkeypatch):
    assert kbit_dgl._choose_wait_policy(1.0, 2) == "PASSIVE"
    assert kbit_dgl._choose_wait_policy(0.3, 2) is None
    assert kbit_dgl._choose_wait_policy(3.9, 8) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 0.0, 0.0))  # no /proc/stat: the load average decides
    assert kbit_dgl._choose_wait_policy(None, 2) == "PASSIVE"


def test_the_sample_counts_cores_in_use():
    busy = kbit_dgl._busy_cores_elsewhere(0.05)
    if busy is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= busy <= (os.cpu_count() or 1) + 1e-6


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat here")
def test_a_busy_neighbour_at_start_makes_it_passive_and_the_environment_always_wins():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KBIT_DGL_OMP_CHOICE")}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)
        chosen = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
        kept = subprocess.run([sys.executable, "-c", PROBE], env={**env, "OMP_WAIT_POLICY": ""}, capture_output=True,
                              text=True, check=True)
    finally:
        for process in spinners:
            process.kill()
            process.wait()
    assert chosen.stdout.split()[0] == "'PASSIVE'" and "busy on" in chosen.stdout
    assert kept.stdout.split()[0] == "''"  # an OMP_WAIT_POLICY of the user's, even empty, is never overridden
