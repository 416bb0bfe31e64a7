"""Atomic file writes: a reader never sees a half-written file, a crash never leaves one."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Sequence

import torch

from .errors import MissingRunFileError, RunFileError


def _atomic(path: str, write, by_path: bool = False) -> None:
    """Write ``path`` through a temporary file beside it, fsync it and rename it into place.

    ``write`` gets the open binary stream, or with ``by_path`` the temporary file's path (for
    writers that are faster or leaner on a path than on a Python stream).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to others
        if by_path:
            os.close(handle)
            write(temp_path)
            handle = os.open(temp_path, os.O_RDONLY)
            os.fsync(handle)
            os.close(handle)
        else:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException as error:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):  # a full disk, say
            raise OSError(error.errno, f"{path}: could not be written ({error.strerror or error}); "
                          f"the previous version of the file, if any, is intact") from error
        raise


def atomic_write_text(path: str, text: str) -> None:
    _atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def atomic_write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str, obj: Any) -> None:
    # torch.save on a path writes the storages straight from memory; on a Python stream it first
    # copies each one into a bytes object (5 GB more for wikikg2's TransE-500 table)
    _atomic(path, lambda temp_path: torch.save(obj, temp_path), by_path=True)


def load_torch_file(path: str, required: Sequence[str] = (), what: str = "file") -> Dict[str, Any]:
    """The dict ``torch.save``d in ``path``, with ``required`` keys; a missing, empty, truncated or
    foreign file raises :class:`RunFileError` naming it."""
    if not os.path.exists(path):
        raise MissingRunFileError(f"{path}: missing; expected a kbit-dgl {what}")
    if os.path.getsize(path) == 0:
        raise RunFileError(f"{path}: empty (0 bytes); expected a kbit-dgl {what} (was its write interrupted?)")
    try:
        payload = torch.load(path, map_location="cpu")
    except Exception as error:  # torch.load raises many types for a damaged file; report which file it was
        raise RunFileError(f"{path}: unreadable as a kbit-dgl {what}, truncated or of another format "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise RunFileError(f"{path}: not a kbit-dgl {what} (expected the keys {list(required)}, found {found})")
    return payload
