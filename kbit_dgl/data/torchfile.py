"""Read a ``torch.save``'d file of id arrays (OGB's split files) one array at a time, in bounded memory.

``torch.load`` of wikikg2's ``test.pt`` (two 598,543 x 500 int64 arrays: 4.8 GB) needs the whole file
in memory and more: the zip format reads its pickle record into one buffer before unpickling, and
ogb's ``get_edge_split`` holds all three splits at once (10 GB peak). Here the pickle is unpickled
from a stream, and each large integer array is handed to ``on_array`` as soon as it is read, which
may narrow it (to int32) and write it out; the next array is read after the first one's buffer is
gone. Peak memory is about one array's raw bytes plus what ``on_array`` keeps.

Everything else in the file is unpickled as ``torch.load`` would. Files that hold torch tensors
(storages outside the pickle) are read with ``torch.load`` (memory-mapped for the zip format) and
their large arrays are passed through ``on_array`` one by one.

The result is the same object ``torch.load`` returns, with numpy arrays for numpy arrays, and the
values ``on_array`` returned in place of the large ones.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, List

import numpy as np
import torch

# Arrays of at least this many elements go through ``on_array`` (1M: small ones are not worth a file).
LARGE_ARRAY_ELEMENTS = 1 << 20
_LARGE_BUFFER_BYTES = 1 << 20  # raw payloads above this are dropped from the unpickler's memo once used
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class _HasTensors(Exception):
    """The pickle references torch storages: read the file with torch.load instead."""


class _PendingArray:
    """What ``numpy.core.multiarray._reconstruct`` returns here; ``__setstate__`` (pickle's BUILD) fills it."""

    def __init__(self, unpickler: "_Unpickler", args: tuple) -> None:
        self._unpickler = unpickler
        self._args = args  # (subtype, shape, dtype) for numpy's own _reconstruct
        self.value: Any = None

    def __setstate__(self, state: tuple) -> None:
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        if isinstance(raw, (bytes, bytearray)) and dtype.kind in "iu" and int(np.prod(shape)) >= LARGE_ARRAY_ELEMENTS:
            array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            self.value = self._unpickler.on_array(array)
            del array
            self._unpickler.forget_large_payloads()
        else:
            array = np.core.multiarray._reconstruct(*self._args)
            array.__setstate__(state)
            self.value = array


class _Unpickler(pickle._Unpickler):
    """Python's own pure-Python unpickler (``pickle._Unpickler``), whose memo is a plain dict: the C one
    cannot drop a single memo entry, and it keeps every raw payload of pickle protocols < 5 alive to the
    end. Split files hold a few dozen opcodes, so its speed does not matter; payloads are single reads.
    """

    def __init__(self, file: Any, on_array: Callable[[np.ndarray], Any]) -> None:
        super().__init__(file)
        self.on_array = on_array
        self._stream = file

    def _load_bytearray8(self) -> None:
        """BYTEARRAY8 (protocol 5) read straight into the new bytearray; pickle's own reads a copy and assigns it."""
        size, = struct.unpack("<Q", self.read(8))
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        unframer = self._unframer
        if unframer.current_frame:
            got = unframer.current_frame.readinto(view)
            if got == 0:
                unframer.current_frame = None
            elif got < size:
                raise pickle.UnpicklingError("pickle exhausted before end of frame")
        while got < size:
            count = self._stream.readinto(view[got:])
            if not count:
                raise EOFError("the file ends inside an array (truncated)")
            got += count
        del view
        self.append(buffer)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return lambda *args: _PendingArray(self, args)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return self._frombuffer  # pickle protocol 5: the array's bytes arrive as one in-band buffer
        return super().find_class(module, name)

    def _frombuffer(self, buffer: Any, dtype: np.dtype, shape: tuple, order: str) -> Any:
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
        if dtype.kind in "iu" and array.size >= LARGE_ARRAY_ELEMENTS:
            value = self.on_array(array)
            del array, buffer
            self.forget_large_payloads()
            return value
        return array.copy()  # own, writable memory, as numpy's own unpickling gives

    def persistent_load(self, pid: Any) -> Any:
        raise _HasTensors()

    def forget_large_payloads(self) -> None:
        """Drop raw array payloads from the memo (pickle protocols < 5 memoize them), freeing them now."""
        for key, value in self.memo.items():
            if _holds_payload(value):
                self.memo[key] = None  # not deleted: MEMOIZE (protocol 4+) numbers entries by len(memo)


def _holds_payload(value: Any, depth: int = 2) -> bool:
    """A raw array payload, or a tuple holding one (the state tuple, the args of ``_codecs.encode``)."""
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) > _LARGE_BUFFER_BYTES
    if isinstance(value, tuple) and depth > 0:
        return any(_holds_payload(item, depth - 1) for item in value)
    return False


def load_id_arrays(path: str, on_array: Callable[[np.ndarray], Any]) -> Any:
    """``torch.load(path)`` with every integer array of >= ``LARGE_ARRAY_ELEMENTS`` replaced by ``on_array(array)``.

    ``on_array`` receives a read-only view that is valid only during the call; it returns what the
    result should hold instead (for example a narrowed copy, or a handle to a file it wrote).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                records = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
                if len(records) != 1:
                    raise pickle.UnpicklingError(f"expected one data.pkl record in the zip file, found "
                                                 f"{[info.filename for info in records]}")
                if records[0].compress_type == zipfile.ZIP_STORED:  # torch.save's own: read the bytes in place
                    with _stored_member(path, records[0]) as stream:
                        return _resolve(_Unpickler(stream, on_array).load())
                with archive.open(records[0]) as stream:  # re-packed with compression
                    return _resolve(_Unpickler(stream, on_array).load())
        with open(path, "rb") as handle:
            try:
                legacy = pickle.load(handle) == _LEGACY_MAGIC
            except Exception:
                legacy = False
            if legacy:
                pickle.load(handle)  # protocol version
                pickle.load(handle)  # system info
                return _resolve(_Unpickler(handle, on_array).load())
    except _HasTensors:
        pass
    # Torch tensors: their storages live outside the pickle. Memory-mapped where the format allows.
    try:
        result = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except RuntimeError:  # the legacy format cannot be memory-mapped
        result = torch.load(path, map_location="cpu", weights_only=False)
    return _replace_large(result, on_array)


class _Slice(io.RawIOBase):
    """Bytes ``[start, start + size)`` of a file as a raw stream (large reads land in the caller's buffer)."""

    def __init__(self, path: str, start: int, size: int) -> None:
        self._file = open(path, "rb", buffering=0)
        self._file.seek(start)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[:self._left]
        count = self._file.readinto(view) if len(view) else 0
        self._left -= count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def _stored_member(path: str, info: zipfile.ZipInfo) -> io.BufferedReader:
    """An uncompressed zip member as a buffered stream read straight from the file."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise pickle.UnpicklingError(f"zip member {info.filename}: bad local header")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.file_size > os.path.getsize(path):
        raise EOFError(f"zip member {info.filename} runs past the end of the file (truncated)")
    return io.BufferedReader(_Slice(path, start, info.file_size), 1 << 20)


def _resolve(value: Any) -> Any:
    """Replace the placeholders of the streaming unpickler by their arrays, in dicts, lists and tuples."""
    if isinstance(value, _PendingArray):
        return value.value
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _resolve(value[key])
        return value
    if isinstance(value, list):
        value[:] = [_resolve(item) for item in value]
        return value
    if isinstance(value, tuple):
        return type(value)(*[_resolve(item) for item in value]) if hasattr(value, "_fields") else \
            tuple(_resolve(item) for item in value)
    return value


def _replace_large(value: Any, on_array: Callable[[np.ndarray], Any]) -> Any:
    """Pass large integer arrays and tensors of a loaded object through ``on_array``, one at a time."""
    if isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and not value.dtype.is_complex \
            and value.dtype != torch.bool and value.numel() >= LARGE_ARRAY_ELEMENTS:
        return on_array(value.detach().cpu().contiguous().numpy())
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.size >= LARGE_ARRAY_ELEMENTS:
        return on_array(value)
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _replace_large(value[key], on_array)  # the original is freed before the next
        return value
    if isinstance(value, list):
        for index in range(len(value)):
            value[index] = _replace_large(value[index], on_array)
        return value
    if isinstance(value, tuple):
        items: List[Any] = [_replace_large(item, on_array) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value
