"""Convert a folder's pickled tensor files, which kbit-dgl wrote before 0.2, to the safe format.

Before 0.2 every model file was a ``torch.save`` pickle. Reading a pickle runs whatever code the file
names, so kbit-dgl no longer reads one (:class:`kbit_dgl.errors.UnsafeFileError`). A user who trusts
a folder (their own old runs) converts it once with ``kbit-dgl migrate FOLDER``: each pickled file
that kbit-dgl writes (``model.pt``, ``checkpoint.pt``, ``model.kbit.pt``, an export's
``embeddings.pt``, a partition's ``kbit_partition.pt``) is unpickled here, the one place that does,
and rewritten in place as a safetensors file (:func:`kbit_dgl.io.atomic_save`). Files already in
the new format are left alone, so running it twice is harmless.
"""
from __future__ import annotations

import contextlib
import os
from typing import List

import torch

from .errors import MissingRunFileError
from .io import atomic_save, file_kind
from .runs import BEST_MODEL, CHECKPOINT, CONFIG, QUANT_MODEL, run_lock

#: the tensor files kbit-dgl writes: run folders', ``kbit-dgl export --format pt``'s, ``kbit-dgl partition``'s
TENSOR_FILES = (BEST_MODEL, CHECKPOINT, QUANT_MODEL, "embeddings.pt", "kbit_partition.pt")


def migrate_folder(folder: str) -> List[str]:
    """Rewrite the pickled tensor files of ``folder`` (a run, export or partition folder) as safetensors
    files; returns the paths converted (empty when there was nothing to convert).

    This unpickles the files, which runs any code they hold: call it only on folders you trust. A run
    folder is converted under its writer lock, so a training process cannot write it meanwhile.
    """
    if not os.path.isdir(folder):
        raise MissingRunFileError(f"{folder}: no such folder")
    converted = []
    is_run = os.path.exists(os.path.join(folder, CONFIG))
    with run_lock(folder) if is_run else contextlib.nullcontext():
        for name in TENSOR_FILES:
            path = os.path.join(folder, name)
            if os.path.exists(path) and os.path.getsize(path) and file_kind(path) == "pickle":
                payload = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the caller
                atomic_save(path, payload)
                converted.append(path)
    return converted
