"""kbit-dgl's own environment switches (``KBIT_DGL_*``): one table, one parser.

Every ``KBIT_DGL_*`` variable that kbit_dgl reads is listed in :data:`SWITCHES` with its kind, default
and meaning, and read only through :func:`env_flag`, :func:`env_int` or :func:`env_path` (tests/test_settings.py
fails on a name missing from the table or read elsewhere). docs/reference/config.md lists the same table.

* A flag accepts exactly ``1``, ``true``, ``yes``, ``on`` (on) and ``0``, ``false``, ``no``, ``off`` (off),
  in any case, surrounding spaces ignored; anything else raises :class:`~kbit_dgl.errors.ConfigError`
  naming the variable and these spellings.
* Unset or empty (spaces only) means the default, for every kind.
* An ``internal`` switch is set by kbit-dgl for the processes it starts (DistDGL's servers and trainers);
  users leave it alone.

:func:`check_environment` parses every switch that is set, so a command can refuse a bad value before it
writes anything (the CLI calls it first).

Variables that other tools own (``OMP_WAIT_POLICY``, ``DGL_*``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_PORT``, ...) keep their own meaning and are read where they are used, not here.

This module also holds the record of the OpenMP wait policy that ``import kbit_dgl`` chose
(:func:`omp_wait_policy_choice`): a module-level value, not an environment variable, so nothing invented
reaches child processes. A forked process inherits the record with the module; a process started anew
(a DistDGL trainer, a torchrun rank) makes its own choice as it imports kbit_dgl, or inherits
``OMP_WAIT_POLICY`` itself, which it then reports.

Bottom layer: imports only the standard library and :mod:`kbit_dgl.errors`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Union

from .errors import ConfigError

PREFIX = "KBIT_DGL_"
TRUE_SPELLINGS = ("1", "true", "yes", "on")
FALSE_SPELLINGS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Switch:
    """One ``KBIT_DGL_*`` variable: ``kind`` is ``flag``, ``int`` or ``path``; ``default`` is what unset
    (or empty) means (None: no value, the caller decides); ``minimum`` bounds an int; ``internal``
    switches are set by kbit-dgl for the processes it starts."""
    kind: str
    default: Union[bool, int, str, None]
    meaning: str
    minimum: Optional[int] = None
    internal: bool = False


SWITCHES: Dict[str, Switch] = {
    "KBIT_DGL_DATA": Switch("path", None, "root folder of named datasets when `--data-dir` (`data.data_dir`) "
                                          "is not given; unset: `./data`"),
    "KBIT_DGL_COMPILE": Switch("flag", True, "compile the distance kernels with torch.compile; off: they run "
                                             "eagerly (same values)"),
    "KBIT_DGL_NATIVE": Switch("flag", True, "use the C++/OpenMP distance loops (built on first use) for float32 "
                                            "CPU scoring; off: the compiled or eager kernels run instead"),
    "KBIT_DGL_ADAPT_THREADS": Switch("flag", True, "refit torch's thread count during a run to the cores other "
                                                   "processes leave free (`kbit_dgl.threads`); off: the count "
                                                   "stays fixed (bit-for-bit reproducible runs)"),
    "KBIT_DGL_KEEP_FREED_MEMORY": Switch("flag", True, "keep freed memory in glibc's heap during training and "
                                                       "evaluation instead of handing it back to the kernel and "
                                                       "faulting it in again (`kbit_dgl.allocator`)"),
    "KBIT_DGL_DEBUG": Switch("flag", False, "show the standard output of the DistDGL servers and trainers that "
                                            "`kbit-dgl train --partitions` starts on this host (dropped otherwise)"),
    "KBIT_DGL_MACHINE": Switch("int", None, "the machine (partition) a DistDGL process started by the local "
                                            "launcher acts as, of several simulated on one host",
                               minimum=0, internal=True),
    "KBIT_DGL_LOCAL_PROCS": Switch("int", None, "DistDGL processes sharing this host's cores (set by the local "
                                                "launcher; unset: this machine's trainers)",
                                   minimum=1, internal=True),
}


def _switch(name: str, kind: str) -> Switch:
    switch = SWITCHES.get(name)
    if switch is None:  # a bug in kbit_dgl, not a user's mistake
        raise KeyError(f"{name} is not in kbit_dgl.settings.SWITCHES; add it there (and to docs/reference/config.md)")
    if switch.kind != kind:
        raise TypeError(f"{name} is a {switch.kind} switch, not {kind}")
    return switch


def _raw(name: str) -> Optional[str]:
    """The variable's value with surrounding spaces removed; None when unset or empty."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _flag_text(default: bool) -> str:
    return (f"expected one of {', '.join(TRUE_SPELLINGS)} (on) or {', '.join(FALSE_SPELLINGS)} (off), any case; "
            f"unset or empty means the default ({'on' if default else 'off'})")


def env_flag(name: str) -> bool:
    """The on/off switch ``name`` (see the module docstring for the spellings); raises ConfigError otherwise."""
    switch = _switch(name, "flag")
    value = _raw(name)
    if value is None:
        return bool(switch.default)
    if value.lower() in TRUE_SPELLINGS:
        return True
    if value.lower() in FALSE_SPELLINGS:
        return False
    raise ConfigError(f"environment variable {name}={os.environ[name]!r}: {_flag_text(bool(switch.default))}")


def env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    """The whole-number switch ``name``; unset or empty: ``default``, else the table's default (may be None).
    Raises ConfigError for anything that is not a whole number at least the table's minimum."""
    switch = _switch(name, "int")
    value = _raw(name)
    if value is None:
        return default if default is not None else switch.default  # type: ignore[return-value]
    bound = "" if switch.minimum is None else f" >= {switch.minimum}"
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or (switch.minimum is not None and number < switch.minimum):
        raise ConfigError(f"environment variable {name}={os.environ[name]!r}: expected a whole number{bound}")
    return number


def env_path(name: str, default: Optional[str] = None) -> Optional[str]:
    """The path switch ``name`` as given (surrounding spaces removed); unset or empty: ``default``, else the
    table's default (may be None)."""
    switch = _switch(name, "path")
    value = _raw(name)
    if value is None:
        return default if default is not None else switch.default  # type: ignore[return-value]
    return value


_READERS = {"flag": env_flag, "int": env_int, "path": env_path}


def check_environment() -> None:
    """Parse every ``KBIT_DGL_*`` switch that is set; raises ConfigError naming the first bad one."""
    for name, switch in SWITCHES.items():
        _READERS[switch.kind](name)


# --- the OpenMP wait policy that ``import kbit_dgl`` chose (kbit_dgl/__init__.py) -----------------------

_omp_choice: Optional[str] = None  # e.g. "PASSIVE (other processes busy on 1.9 cores at start)"; None: no choice


def record_omp_wait_policy_choice(choice: Optional[str]) -> None:
    """Remember what this process's ``import kbit_dgl`` set ``OMP_WAIT_POLICY`` to, and why."""
    global _omp_choice
    _omp_choice = choice


def omp_wait_policy_choice() -> str:
    """OpenMP's wait policy in this process, for metrics.json: what ``import kbit_dgl`` chose and why; else
    ``OMP_WAIT_POLICY`` as the environment gave it (the user's, or a parent process's choice); else
    ``default`` (OpenMP's own)."""
    return _omp_choice or os.environ.get("OMP_WAIT_POLICY") or "default"
