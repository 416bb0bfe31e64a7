"""The OpenMP wait policy kbit_dgl chooses as it is imported (before torch loads OpenMP)."""
import os
import subprocess
import sys
import time

import pytest

import kbit_dgl

# the policy in the environment, whether an invented variable carries the choice, then the recorded choice
PROBE = ("import os, kbit_dgl; print(repr(os.environ.get('OMP_WAIT_POLICY')), 'KBIT_DGL_OMP_CHOICE' in os.environ, "
         "kbit_dgl.settings.omp_wait_policy_choice())")
# the same, in a process the probe starts (as DistDGL's launcher starts its trainers)
CHILD = f"import subprocess, sys; import kbit_dgl; subprocess.run([sys.executable, '-c', {PROBE!r}], check=True)"


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
        child = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    finally:
        for process in spinners:
            process.kill()
            process.wait()
    assert chosen.stdout.split()[0] == "'PASSIVE'" and "busy on" in chosen.stdout
    assert chosen.stdout.split()[1] == "False"  # the choice is recorded in kbit_dgl, not in an invented variable
    assert kept.stdout.split()[0] == "''"  # an OMP_WAIT_POLICY of the user's, even empty, is never overridden
    assert kept.stdout.split()[1:] == ["False", "default"]
    # a process started by a chooser inherits OMP_WAIT_POLICY itself (no sampling: it is set) and reports it
    assert child.stdout.split() == ["'PASSIVE'", "False", "PASSIVE"]


def test_the_recorded_choice_goes_to_metrics_and_to_forked_workers(monkeypatch):
    from kbit_dgl import settings

    monkeypatch.setattr(settings, "_omp_choice", None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert settings.omp_wait_policy_choice() == "default"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert settings.omp_wait_policy_choice() == "ACTIVE"  # the environment's, as given
    monkeypatch.setattr(settings, "_omp_choice", "PASSIVE (other processes busy on 1.5 cores at start)")
    assert settings.omp_wait_policy_choice() == "PASSIVE (other processes busy on 1.5 cores at start)"
    if not hasattr(os, "fork"):
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a forked training process keeps the module's record
        os.write(write, settings.omp_wait_policy_choice().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as handle:
        assert handle.read() == "PASSIVE (other processes busy on 1.5 cores at start)"
