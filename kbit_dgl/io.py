"""Atomic file writes (a reader never sees a half-written file, a crash never leaves one), and the one
format of every tensor file the project writes and reads back.

Tensor files (``model.pt``, ``checkpoint.pt``, ``model.kbit.pt``, exported ``embeddings.pt``,
``kbit_partition.pt``) are **safetensors** files: a JSON header, then raw tensor bytes. Reading one
parses JSON and copies bytes; it cannot run code, unlike a pickle (``torch.save``'s format), whose
reader builds whatever objects the file names. ``torch.load(weights_only=True)`` is no substitute on
the torch this project pins: it was bypassed to run code before torch 2.6 (CVE-2025-32434) and to
corrupt memory before 2.10 (CVE-2026-24747).

A payload is a tree of dicts, lists and tuples whose leaves are tensors, ``None``, bools, ints,
floats, strings, ``torch.dtype`` and ``torch.Size``. Its tensors are stored by reference (safetensors
writes them from their own memory, so saving a 15 GB checkpoint costs no copy); the tree, with each
tensor replaced by its key, is stored as JSON in the header's metadata under ``kbit_dgl``. Long lists
of strings (a wikikg2 export's 2.5M entity names) are stored as UTF-8 bytes in a tensor, since the
header is limited to 100 MB.

Files written by kbit-dgl before this format are pickles; they are refused with
:class:`UnsafeFileError`, and ``kbit-dgl migrate FOLDER`` (:func:`kbit_dgl.migrate.migrate_folder`)
converts a folder its owner trusts, once.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import MissingRunFileError, RunFileError, UnsafeFileError


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
            os.chmod(temp_path, 0o666 & ~umask)  # a writer may re-create the file (safetensors does), with 0600
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


def atomic_write_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` of ``array`` to ``path``, atomically (the temporary file is created, never reused:
    a link planted under a fixed temporary name is not written through)."""
    _atomic(path, lambda stream: np.save(stream, array, allow_pickle=False))


FILE_FORMAT = "kbit-dgl-tensors/1"
_TREE_KEY = "kbit_dgl"  # metadata key of the payload's tree
_LONG_STRING_LIST = 256  # string lists at least this long go into a byte tensor, not the JSON header


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as safetensors can write it: detached, on the CPU, dense, contiguous and owning its
    whole storage (a view into a larger storage is copied, as torch.save would write the whole storage)."""
    if tensor.layout != torch.strided:
        raise TypeError(f"a {tensor.layout} tensor (only dense tensors are stored)")
    tensor = tensor.detach().cpu()
    if not tensor.is_contiguous() or tensor.storage_offset() != 0 \
            or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


class _Encoder:
    """The payload's tree as JSON-able values, its tensors collected under keys ``t0``, ``t1``, ...

    Tags (a dict of one ``@`` key) mark what JSON cannot say: ``@t`` a tensor, ``@s`` a long string
    list stored as bytes, ``@tuple``, ``@d`` a dict with non-string or ``@`` keys, ``@dtype``, ``@size``.
    """

    def __init__(self) -> None:
        self.tensors: Dict[str, torch.Tensor] = {}
        self._by_storage: Dict[Tuple[int, int], List[Tuple[torch.Tensor, str]]] = {}

    def tensor_key(self, tensor: torch.Tensor) -> str:
        stored = _stored(tensor)
        if stored.numel():  # one key for one tensor met twice; a copy for two views of one storage
            spot = (stored.untyped_storage().data_ptr(), stored.untyped_storage().nbytes())
            for seen, key in self._by_storage.get(spot, []):
                if seen.dtype == stored.dtype and seen.shape == stored.shape:
                    return key
            if spot in self._by_storage:
                stored = stored.clone()
        key = f"t{len(self.tensors)}"
        self.tensors[key] = stored
        if stored.numel():
            spot = (stored.untyped_storage().data_ptr(), stored.untyped_storage().nbytes())
            self._by_storage.setdefault(spot, []).append((stored, key))
        return key

    def encode(self, value: Any, where: str) -> Any:
        if value is None or type(value) in (bool, int, float, str):
            return value
        if isinstance(value, torch.Tensor):
            return {"@t": self.tensor_key(value)}
        if isinstance(value, np.generic):  # numpy scalars (older files held some): their Python value
            return self.encode(value.item(), where)
        if isinstance(value, np.ndarray):
            return self.encode(torch.from_numpy(value), where)
        if isinstance(value, torch.dtype):
            return {"@dtype": str(value).replace("torch.", "")}
        if isinstance(value, torch.Size):
            return {"@size": list(value)}
        if isinstance(value, (list, tuple)):
            if type(value) is list and len(value) >= _LONG_STRING_LIST and all(type(item) is str for item in value) \
                    and not any("\n" in item for item in value):
                data = "\n".join(value).encode("utf-8", "surrogatepass")
                return {"@s": self.tensor_key(torch.frombuffer(bytearray(data), dtype=torch.uint8)
                                              if data else torch.zeros(0, dtype=torch.uint8)), "n": len(value)}
            items = [self.encode(item, f"{where}[{index}]") for index, item in enumerate(value)]
            if type(value) is list:
                return items
            if type(value) is tuple:
                return {"@tuple": items}
        if type(value) in (dict,) or (isinstance(value, dict) and type(value).__name__ == "OrderedDict"):
            if all(type(key) is str and not key.startswith("@") for key in value):
                return {key: self.encode(item, f"{where}[{key!r}]") for key, item in value.items()}
            return {"@d": [[self.encode(key, f"{where} key"), self.encode(item, f"{where}[{key!r}]")]
                           for key, item in value.items()]}
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a kbit-dgl tensor "
                        f"file does not store (tensors, numbers, strings, None, lists, tuples and dicts only)")


def _decode(value: Any, tensors: Callable[[str], torch.Tensor]) -> Any:
    """The tree :class:`_Encoder` made, rebuilt; ``tensors(key)`` reads a tensor (only those the tree names)."""
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 or "@s" in value:
        tag = next(iter(value))
        if tag == "@t":
            return tensors(value["@t"])
        if tag == "@s":
            data = tensors(value["@s"]).numpy().tobytes().decode("utf-8", "surrogatepass")
            names = data.split("\n") if value["n"] else []
            if len(names) != value["n"]:
                raise ValueError(f"a string list of {value['n']} items holds {len(names)}")
            return names
        if tag == "@tuple":
            return tuple(_decode(item, tensors) for item in value["@tuple"])
        if tag == "@d":
            return {_decode(key, tensors): _decode(item, tensors) for key, item in value["@d"]}
        if tag == "@dtype":
            # vars(), not getattr(): torch's module __getattr__ imports submodules by name (torch._inductor)
            dtype = vars(torch).get(value["@dtype"]) if isinstance(value["@dtype"], str) else None
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"unknown dtype {value['@dtype']!r}")
            return dtype
        if tag == "@size":
            return torch.Size(value["@size"])
    return {key: _decode(item, tensors) for key, item in value.items()}


def atomic_save(path: str, payload: Any) -> None:
    """Write ``payload`` (see the module's docstring for what it may hold) to ``path`` as a kbit-dgl
    tensor file (safetensors), atomically; a value of another type raises TypeError naming where it is."""
    encoder = _Encoder()
    tree = encoder.encode(payload, "the payload")
    metadata = {"format": FILE_FORMAT, _TREE_KEY: json.dumps(tree, separators=(",", ":"))}
    # safetensors writes each tensor from its own memory (no copy of a 15 GB checkpoint)
    _atomic(path, lambda temp_path: save_file(encoder.tensors, temp_path, metadata=metadata), by_path=True)


def file_kind(path: str) -> str:
    """``safetensors``, ``pickle`` (torch.save's zip or legacy format, or a bare pickle) or ``unknown``,
    from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < os.path.getsize(path):
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def load_saved(path: str, required: Sequence[str] = (), what: str = "file", folder: str = "",
               only: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The dict that :func:`atomic_save` wrote in ``path``, with ``required`` keys.

    A missing, empty, truncated or foreign file raises :class:`RunFileError` naming it; a pickle (what
    kbit-dgl wrote before safetensors, or a planted file) is never unpickled: it raises
    :class:`UnsafeFileError`, which tells how to migrate ``folder`` (default: the file's folder).
    With ``only``, just those top-level keys are read (a checkpoint's ``state`` without its tables).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingRunFileError(f"{path}: missing; expected a kbit-dgl {what}")
    if os.path.getsize(path) == 0:
        raise RunFileError(f"{path}: empty (0 bytes); expected a kbit-dgl {what} (was its write interrupted?)")
    kind = file_kind(path)
    if kind == "pickle":
        folder = folder or os.path.dirname(os.path.abspath(path))
        raise UnsafeFileError(f"{path}: a pickle (torch.save's format, as kbit-dgl wrote before 0.2), which can run "
                              f"code when read, so it is not read. If you trust where this folder came from, convert "
                              f"it once with `kbit-dgl migrate {folder}`")
    try:
        if kind != "safetensors":
            raise ValueError("not a safetensors file")
        # pread: each tensor in memory of its own, not a view of a mapping of the file, which would
        # crash the process (SIGBUS) if the file were truncated while the tensors live
        with safe_open(path, framework="pt", device="cpu", backend="pread") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FILE_FORMAT or _TREE_KEY not in metadata:
                raise ValueError(f"a safetensors file without kbit-dgl's metadata (format {metadata.get('format')!r})")
            tree = json.loads(metadata[_TREE_KEY])
            if only is not None and isinstance(tree, dict):
                tree = {key: tree[key] for key in only if key in tree}
            read: Dict[str, torch.Tensor] = {}  # each tensor read once: a tree naming one key a million times
            # (60 MB of header) must not read a million copies of it

            def tensor(key: str) -> torch.Tensor:
                if key not in read:
                    read[key] = handle.get_tensor(key)
                return read[key]

            payload = _decode(tree, tensor)
    except Exception as error:  # safetensors, JSON and decoding errors for a damaged file: name the file
        raise RunFileError(f"{path}: unreadable as a kbit-dgl {what}, truncated or of another format "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in required if only is None or key in only):
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise RunFileError(f"{path}: not a kbit-dgl {what} (expected the keys {list(required)}, found {found})")
    return payload
