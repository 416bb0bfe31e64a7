"""kbit-dgl's environment switches: one table, one parser (kbit_dgl/settings.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from kbit_dgl import settings
from kbit_dgl.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "kbit_dgl")
NAME = re.compile(r"KBIT_DGL_[A-Z0-9_]*[A-Z0-9]")
# a read of the environment whose key is a KBIT_DGL_ literal: os.environ[...], .get(...), getenv(...), "..." in
READ = re.compile(r"""(?:environ\s*(?:\[|\.get\(|\.pop\(|\.setdefault\()|getenv\()\s*["']KBIT_DGL_"""
                  r"""|["']KBIT_DGL_\w*["']\s+(?:not\s+)?in\s+(?:os\.)?environ""")


def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    yield os.path.relpath(path, ROOT), handle.read()


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE", "Yes", "On", " on ", "\ttrue\n"])
def test_every_on_spelling_is_accepted(monkeypatch, value):
    monkeypatch.setenv("KBIT_DGL_DEBUG", value)  # default off, so on must come from the value
    assert settings.env_flag("KBIT_DGL_DEBUG") is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "FALSE", "No", "OFF", " 0 ", "off\n"])
def test_every_off_spelling_is_accepted(monkeypatch, value):
    monkeypatch.setenv("KBIT_DGL_NATIVE", value)  # default on, so off must come from the value
    assert settings.env_flag("KBIT_DGL_NATIVE") is False


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_means_the_default(monkeypatch, value):
    for name in ("KBIT_DGL_NATIVE", "KBIT_DGL_DEBUG", "KBIT_DGL_LOCAL_PROCS", "KBIT_DGL_DATA"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert settings.env_flag("KBIT_DGL_NATIVE") is True and settings.env_flag("KBIT_DGL_DEBUG") is False
    assert settings.env_int("KBIT_DGL_LOCAL_PROCS") is None and settings.env_int("KBIT_DGL_LOCAL_PROCS", 3) == 3
    assert settings.env_path("KBIT_DGL_DATA") is None and settings.env_path("KBIT_DGL_DATA", "data") == "data"


@pytest.mark.parametrize("value", ["maybe", "2", "enabled", "o n", "-1", "none"])
def test_a_bad_flag_is_refused_naming_the_variable_and_the_spellings(monkeypatch, value):
    monkeypatch.setenv("KBIT_DGL_NATIVE", value)
    with pytest.raises(ConfigError) as error:
        settings.env_flag("KBIT_DGL_NATIVE")
    message = str(error.value)
    assert f"KBIT_DGL_NATIVE={value!r}" in message
    assert all(spelling in message for spelling in settings.TRUE_SPELLINGS + settings.FALSE_SPELLINGS)
    with pytest.raises(ConfigError, match="KBIT_DGL_NATIVE"):
        settings.check_environment()


def test_whole_numbers_and_paths(monkeypatch):
    monkeypatch.setenv("KBIT_DGL_LOCAL_PROCS", " 4 ")
    monkeypatch.setenv("KBIT_DGL_MACHINE", "0")
    monkeypatch.setenv("KBIT_DGL_DATA", " /srv/kg ")
    assert settings.env_int("KBIT_DGL_LOCAL_PROCS", 1) == 4 and settings.env_int("KBIT_DGL_MACHINE") == 0
    assert settings.env_path("KBIT_DGL_DATA") == "/srv/kg"
    settings.check_environment()
    for name, bad in (("KBIT_DGL_LOCAL_PROCS", "four"), ("KBIT_DGL_LOCAL_PROCS", "0"), ("KBIT_DGL_MACHINE", "-1"),
                      ("KBIT_DGL_MACHINE", "1.5")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=rf"{name}={bad!r}: expected a whole number >= \d"):
            settings.env_int(name)
        monkeypatch.setenv(name, "1")


def test_a_name_outside_the_table_or_of_another_kind_is_a_bug():
    with pytest.raises(KeyError, match="KBIT_DGL_NOPE"):
        settings.env_flag("KBIT_DGL_NOPE")
    with pytest.raises(TypeError, match="KBIT_DGL_DATA is a path switch"):
        settings.env_flag("KBIT_DGL_DATA")


def test_the_table_covers_every_name_in_the_code_and_nothing_else():
    seen = {}
    for path, text in _sources():
        if path != os.path.join("kbit_dgl", "settings.py"):
            for name in NAME.findall(text):
                seen.setdefault(name, path)
    missing = {name: path for name, path in seen.items() if name not in settings.SWITCHES}
    assert missing == {}, "add these to kbit_dgl/settings.py's SWITCHES (and docs/reference/config.md)"
    assert set(settings.SWITCHES) - set(seen) == set(), "a switch in the table that no code uses"
    for name, switch in settings.SWITCHES.items():
        assert switch.kind in ("flag", "int", "path") and switch.meaning, name
        assert switch.kind != "flag" or isinstance(switch.default, bool), name


def test_no_environment_read_of_a_switch_outside_settings():
    reads = [f"{path}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}"
             for path, text in _sources() if path != os.path.join("kbit_dgl", "settings.py")
             for match in READ.finditer(text)]
    assert reads == [], "read KBIT_DGL_* switches through kbit_dgl.settings (env_flag / env_int / env_path)"
    # the pattern does catch the reads it is meant to
    assert READ.search('os.environ.get("KBIT_DGL_X", "1")') and READ.search("os.environ['KBIT_DGL_X']")
    assert READ.search('os.getenv("KBIT_DGL_X")') and READ.search('"KBIT_DGL_X" in os.environ')
    assert not READ.search('env = {**os.environ, "KBIT_DGL_MACHINE": str(m)}')  # a write for a child process


def test_the_reference_page_lists_the_table():
    with open(os.path.join(ROOT, "docs", "reference", "config.md"), encoding="utf-8") as handle:
        page = handle.read()
    section = page.split("## Environment variables", 1)[1]
    rows = set(re.findall(r"^\| `(KBIT_DGL_\w+)` \|", section, flags=re.M))
    assert rows == set(settings.SWITCHES)


def test_importing_kbit_dgl_sets_no_invented_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBIT_DGL_") and k != "OMP_WAIT_POLICY"}
    probe = "import os, kbit_dgl; print(sorted(k for k in os.environ if k.startswith('KBIT_DGL_')))"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_readers_follow_the_switches(monkeypatch):
    from kbit_dgl import allocator, threads
    from kbit_dgl.data import data_root
    from kbit_dgl.models import kernels, native

    for value, on in (("off", False), ("Yes", True)):
        for name in ("KBIT_DGL_COMPILE", "KBIT_DGL_NATIVE", "KBIT_DGL_ADAPT_THREADS", "KBIT_DGL_KEEP_FREED_MEMORY"):
            monkeypatch.setenv(name, value)
        assert kernels.compile_enabled() is on and native.enabled() is on
        assert (threads.adapt() is not None) is (on and threads.busy_cpu_seconds() is not None)
        if not on:
            assert allocator._glibc() is None
    threads.adapt(False)
    monkeypatch.setenv("KBIT_DGL_DATA", "")
    assert data_root() == "data"
    monkeypatch.setenv("KBIT_DGL_DATA", "/srv/kg")
    assert data_root() == "/srv/kg" and data_root("elsewhere") == "elsewhere"


def test_the_cli_refuses_a_bad_switch_before_writing(tmp_path, monkeypatch):
    from kbit_dgl import cli

    monkeypatch.setenv("KBIT_DGL_COMPILE", "maybe")
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "synthetic", "--out", str(out)]) == 2
    assert not out.exists()
