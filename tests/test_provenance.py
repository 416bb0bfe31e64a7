"""Provenance of stored results: the commit is found from the package, whatever the current directory."""
import os
import subprocess

import pytest

from kbit_dgl import provenance as prov

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)


def test_git_commit_is_the_checkout_of_the_package_from_any_directory(tmp_path, monkeypatch):
    root = prov.source_checkout()
    assert root is not None and os.path.isdir(os.path.join(root, "kbit_dgl"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.chdir(tmp_path)  # outside any repository
    assert prov.project_root() == root
    assert prov.git_commit().split("+")[0] == head
    assert prov.git_commit(str(tmp_path)) == "unknown"


def test_installed_copy_falls_back_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(prov, "PACKAGE_DIR", str(tmp_path / "site-packages" / "kbit_dgl"))
    monkeypatch.chdir(tmp_path)
    assert prov.source_checkout() is None and prov.project_root() == str(tmp_path)
    assert prov.git_commit() == "unknown"


def test_provenance_record_has_command_commit_machine_and_wall_time():
    record = prov.provenance(started=0.0)
    assert set(record) == {"command", "commit", "machine", "wall_seconds", "finished"}
    assert record["machine"]["cpu_cores"] == str(os.cpu_count()) and record["wall_seconds"] > 0
