"""The training state a checkpoint holds: counters, the best validation, histories, and its version.

:class:`TrainState` is the one description of what a run has done so far; the trainer changes it,
checkpoints store it (``checkpoint["state"]``, a plain dict in the file's JSON tree, with
``version``), and a resume reads it back with :meth:`TrainState.from_dict`, which checks every value's
kind and fills what older checkpoints lack:

* version 1 (no ``version`` key): the plain dict of the trainer before this class; its keys were
  added over time (``warmup_*``, ``last_epoch_loss``, ``best_step``...), so a missing one takes its
  default.
* version 2: the same keys, every one present, and ``version``.

A checkpoint of a newer version than this code knows is refused by name rather than half-read.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import torch

from ..errors import RunFileError

VERSION = 2


@dataclasses.dataclass
class TrainState:
    """What a run has done so far; see the module docstring."""

    epoch: int = 0                        # epochs finished
    step: int = 0                         # steps taken, in all epochs
    batch_in_epoch: int = 0               # steps taken in the current epoch (a mid-epoch checkpoint)
    best_valid_mrr: float = -1.0
    best_epoch: int = 0
    best_step: Optional[int] = None
    best_valid: Optional[Dict[str, Any]] = None  # the best model's full-split valid metrics (no sampling)
    bad_validations: int = 0              # validations in a row without improvement
    bad_at_decay: int = 0                 # bad_validations at the last plateau decay
    stopped_early: bool = False
    stopped_at_max_steps: bool = False
    train_seconds: float = 0.0            # step time only: validation and checkpoints are not training
    warmup_seconds: float = 0.0           # of each process's first WARMUP_STEPS steps
    warmup_triples: int = 0
    epoch_loss: float = 0.0               # the current epoch's sums
    epoch_triples: int = 0
    epoch_seconds: float = 0.0
    last_epoch_loss: Optional[float] = None  # the epoch just finished (its sums are reset)
    epoch_generator: Optional[torch.Tensor] = None  # the order generator's state at the epoch's start
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    lr_decays: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    resume_changes: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """The checkpoint's ``state`` entry (with ``version``)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"version": VERSION, **values}

    @classmethod
    def from_dict(cls, saved: Any, path: str) -> "TrainState":
        """The state of a checkpoint's ``state`` entry (any version up to :data:`VERSION`), every value's
        kind checked; ``path`` names the file in errors."""
        if not isinstance(saved, dict):
            raise RunFileError(f"{path}: its 'state' entry is a {type(saved).__name__}, not the training state; "
                               f"a damaged or foreign checkpoint")
        version = saved.get("version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RunFileError(f"{path}: its training state's version is {version!r:.40}; a damaged or foreign "
                               f"checkpoint")
        if version > VERSION:
            raise RunFileError(f"{path}: its training state is version {version}, this kbit-dgl reads versions "
                               f"1 to {VERSION}; resume it with the newer kbit-dgl that wrote it")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - set(fields) - {"version"})
        if unknown:
            raise RunFileError(f"{path}: its training state has unknown entries {', '.join(map(repr, unknown))}; "
                               f"a damaged or foreign checkpoint")
        defaults = cls()
        values = {}
        for name, value in saved.items():
            if name == "version":
                continue
            _check_kind(name, value, getattr(defaults, name), fields[name].type, path)
            values[name] = value
        return cls(**values)


def _check_kind(name: str, value: Any, default: Any, annotation: str, path: str) -> None:
    optional = "Optional" in str(annotation)
    if value is None and optional:
        return
    if "Tensor" in str(annotation):
        ok, expected = isinstance(value, torch.Tensor), "tensor"
    elif "Dict" in str(annotation) and "List" not in str(annotation):
        ok, expected = isinstance(value, dict), "dict"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "bool"
    elif isinstance(default, list):
        ok, expected = isinstance(value, list), "list"
    elif isinstance(default, int) or "int" in str(annotation):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "int"
    else:
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "float"
    if not ok:
        raise RunFileError(f"{path}: its training state's {name!r} is {value!r:.60}, expected a "
                           f"{expected}{' or null' if optional else ''}; a damaged or foreign checkpoint")
