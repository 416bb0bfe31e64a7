"""Read a ``torch.save``'d file of id arrays (OGB's split files) one array at a time, in bounded memory,
without running code from the file.

``torch.load`` of wikikg2's ``test.pt`` (two 598,543 x 500 int64 arrays: 4.8 GB) needs the whole file
in memory and more: the zip format reads its pickle record into one buffer before unpickling, and
ogb's ``get_edge_split`` holds all three splits at once (10 GB peak). Here the pickle is unpickled
from a stream, and each large integer array is handed to ``on_array`` as soon as it is read, which
may narrow it (to int32) and write it out; the next array is read after the first one's buffer is
gone. Peak memory is about one array's raw bytes plus what ``on_array`` keeps.

A pickle can call any importable function (``os.system``), so nothing here uses ``pickle.load``,
``torch.load`` or torch's ``weights_only`` mode (which had code-execution and memory-corruption
bugs before torch 2.6 / 2.10). The unpickler builds only what OGB's files hold, each checked:

* numpy arrays, as numpy pickles them: ``numpy.core.multiarray._reconstruct`` with ``numpy.ndarray``
  and a state (``BUILD``) holding the raw bytes; ``numpy.dtype`` (always a fresh copy); for pickle
  protocols < 3 the bytes come as ``_codecs.encode(text, "latin1")`` (Python's own spelling of
  bytes there); protocol 5 uses ``numpy.core.numeric._frombuffer``. numpy 2 spells the modules
  ``numpy._core.*``. Protocols < 3 write an empty array's ``b""`` as ``builtins.bytes()`` (``__builtin__``
  in protocol 2); a numpy number outside an array is ``numpy.core.multiarray.scalar(dtype, bytes)``;
* torch tensors, as ``torch.save`` writes them: ``torch._utils._rebuild_tensor_v2`` of a persistent
  id ``('storage', torch.<Type>Storage, key, location, numel)`` (the legacy format adds a view
  field), ``collections.OrderedDict`` for the (empty) backward hooks. The storage's bytes are read
  from the zip member ``<archive>/data/<key>``, or in the legacy format from the records after
  the pickle, memory-mapped; every tensor's offset, sizes and strides are checked against its
  storage before a view is made;
* plain dicts, lists, tuples, strings and numbers (no global needed).

Any other global is refused with :class:`UnsafePickleError`, which names the file and the global.
The result is the same object ``torch.load`` returns (numpy arrays for numpy arrays, tensors for
tensors), with the values ``on_array`` returned in place of the large integer arrays and tensors.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import compat
from ..errors import KGFormatError
from .kg import preview

# Arrays of at least this many elements go through ``on_array`` (1M: small ones are not worth a file).
LARGE_ARRAY_ELEMENTS = 1 << 20
_LARGE_BUFFER_BYTES = 1 << 20  # raw payloads above this are dropped from the unpickler's memo once used
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL_VERSION = 1001

# torch.<name>Storage -> (numpy dtype of its elements, torch dtype). bfloat16 is read as its bits.
_STORAGE_TYPES: Dict[str, Tuple[type, torch.dtype]] = {
    "DoubleStorage": (np.float64, torch.float64), "FloatStorage": (np.float32, torch.float32),
    "HalfStorage": (np.float16, torch.float16), "BFloat16Storage": (np.int16, torch.bfloat16),
    "LongStorage": (np.int64, torch.int64), "IntStorage": (np.int32, torch.int32),
    "ShortStorage": (np.int16, torch.int16), "CharStorage": (np.int8, torch.int8),
    "ByteStorage": (np.uint8, torch.uint8), "BoolStorage": (np.bool_, torch.bool),
    "ComplexFloatStorage": (np.complex64, torch.complex64), "ComplexDoubleStorage": (np.complex128, torch.complex128),
}


class UnsafePickleError(KGFormatError, pickle.UnpicklingError):
    """The file's pickle asks for a global (a function or class) that an OGB split file never holds."""


class _NotTorchSave(Exception):
    """The probed first record of a non-zip file holds a large array: a plain pickle, not torch.save's format."""


def _name(module: Any, name: Any) -> str:
    """``module.name`` for a message: one line, at most ~200 characters, whatever the file holds."""
    text = f"{module}.{name}"
    if len(text) <= 200 and text.isprintable():
        return text
    return preview(text)


class _Marker:
    """What an allowlisted global that is only ever an argument (``numpy.ndarray``, ``torch.LongStorage``)
    unpickles to: not callable, not the real class."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_NDARRAY = _Marker("numpy.ndarray")


class _PendingArray:
    """What ``numpy.core.multiarray._reconstruct`` returns here; ``__setstate__`` (pickle's BUILD) fills it."""

    def __init__(self, unpickler: "_Unpickler", args: tuple) -> None:
        if not args or args[0] is not _NDARRAY:
            raise pickle.UnpicklingError(f"numpy's _reconstruct of {args[:1]!r:.100}: expected numpy.ndarray")
        self._unpickler = unpickler
        self.value: Any = None
        self._built = False

    def __setstate__(self, state: tuple) -> None:
        if self._built or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("a numpy array's state is not (version, shape, dtype, fortran, data)")
        self._built = True
        version, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"a numpy array's dtype is {type(dtype).__name__}, not numpy.dtype")
        if isinstance(raw, (bytes, bytearray)) and dtype.kind in "iu" and int(np.prod(shape)) >= LARGE_ARRAY_ELEMENTS:
            array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            self.value = self._unpickler.on_array(array)
            del array
            self._unpickler.forget_large_payloads()
        else:
            array = compat.numpy_reconstruct()(np.ndarray, (0,), b"b")
            array.__setstate__(state)  # numpy checks the data's size against shape and dtype
            self.value = array


class _StorageRef:
    """A persistent id ``('storage', type, key, location, numel[, view])``: ``numel`` elements from element
    ``offset`` of the storage ``key``, read only when a tensor of it is resolved."""

    def __init__(self, key: str, type_name: str, numel: int, offset: int = 0) -> None:
        self.key, self.type_name, self.numel, self.offset = key, type_name, numel, offset
        self.numpy_dtype, self.torch_dtype = _STORAGE_TYPES[type_name]


class _PendingTensor:
    """What ``torch._utils._rebuild_tensor_v2`` returns here: a checked view of a storage, read by ``_resolve``."""

    def __init__(self, storage: _StorageRef, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...],
                 requires_grad: bool) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.requires_grad = requires_grad
        self.done, self.value = False, None

    @property
    def is_large_ids(self) -> bool:
        dtype = self.storage.torch_dtype
        return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool \
            and int(np.prod(self.size)) >= LARGE_ARRAY_ELEMENTS


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise pickle.UnpicklingError(f"a tensor's {what} is {value!r:.100}, expected an integer >= 0")
    return value


def _ints(value: Any, what: str) -> Tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > 64:
        raise pickle.UnpicklingError(f"a tensor's {what} is {value!r:.100}, expected a tuple of integers")
    return tuple(_int(item, what) for item in value)


def _latin1(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode`` as pickle protocols < 3 use it for bytes: ``encode(text, "latin1")``, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r:.40}): only "
                                     f"encode(str, 'latin1') (how pickle writes bytes) is allowed")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()``, as pickle protocols < 3 write ``b""``; with arguments it could allocate or convert anything."""
    if args:
        raise pickle.UnpicklingError(f"bytes() of {len(args)} argument(s): only bytes() (empty) is allowed")
    return b""


def _scalar(dtype: Any, raw: Any = None) -> Any:
    """``numpy.core.multiarray.scalar(dtype, data)`` of a numeric dtype: ``data`` is exactly one element's bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biufcUS" \
            or not isinstance(raw, (bytes, bytearray)) or len(raw) != dtype.itemsize:
        raise pickle.UnpicklingError(f"numpy scalar of {dtype!r:.40}: expected a numeric dtype and its bytes")
    return np.frombuffer(raw, dtype=dtype)[0].copy()


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype`` of a type code (``'i8'``, ``'O8'``), always a copy: ``BUILD`` then sets its state, which
    must never touch numpy's shared built-in dtypes (as ``copy=False`` would let it)."""
    if not isinstance(spec, str) or len(spec) > 8 or not isinstance(align, bool):
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r:.40}, ...): expected a type code such as 'i8'")
    dtype = np.dtype(spec, align, True)
    if dtype.kind not in "biufcOUS" or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy.dtype({spec!r}): only numbers, strings and objects are allowed")
    return dtype


def _set_dtype_state(dtype: np.dtype, state: Any) -> None:
    """BUILD of a dtype: numpy's state ``(3, byte order, None, None, None, itemsize, alignment, flags)``, where
    only the byte order may differ from what the type code gave. numpy takes any flags from a state: with
    the object flags, a dtype of raw bytes would make numpy treat those bytes as object pointers."""
    if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None) and state[5] in (-1, dtype.itemsize)
            and state[6] in (-1, dtype.alignment) and state[7] == dtype.flags):
        raise pickle.UnpicklingError(f"the state {state!r:.120} of numpy.dtype({dtype.str!r}) changes more than "
                                     f"its byte order")
    dtype.__setstate__(state)


class _Unpickler(compat.PurePythonUnpickler):
    """Python's own pure-Python unpickler (``pickle._Unpickler``), whose memo is a plain dict: the C one
    cannot drop a single memo entry, and it keeps every raw payload of pickle protocols < 5 alive to the
    end. Split files hold a few dozen opcodes, so its speed does not matter; payloads are single reads.

    Only the globals listed in :meth:`find_class` are built; ``BUILD`` only fills numpy arrays and dtypes;
    persistent ids (torch storages) go to ``storages`` (refused when ``None``).
    """

    def __init__(self, file: Any, on_array: Callable[[np.ndarray], Any], path: str,
                 storages: Optional["_Storages"] = None) -> None:
        compat.check_pure_python_unpickler()
        super().__init__(file)
        self.on_array = on_array
        self.path = path
        self.storages = storages
        self._stream = file

    def _load_bytearray8(self) -> None:
        """BYTEARRAY8 (protocol 5) read straight into the new bytearray; pickle's own reads a copy and assigns it."""
        size, = struct.unpack("<Q", self.read(8))
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        frame = compat.unpickler_frame(self)
        if frame:
            got = frame.readinto(view)
            if got == 0 and size:  # the frame is used up (an empty array reads nothing from a frame that is not)
                compat.end_unpickler_frame(self)
            elif got < size:
                raise pickle.UnpicklingError("pickle exhausted before end of frame")
        while got < size:
            count = self._stream.readinto(view[got:])
            if not count:
                raise EOFError("the file ends inside an array (truncated)")
            got += count
        del view
        self.append(buffer)

    def _load_build(self) -> None:
        """BUILD: only numpy arrays (their data) and numpy dtypes (byte order, flags) have a state here."""
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _PendingArray):
            target.__setstate__(state)
        elif isinstance(target, np.dtype):
            _set_dtype_state(target, state)
        else:
            raise pickle.UnpicklingError(f"cannot set the state of a {type(target).__name__} from "
                                         f"a {type(state).__name__} (only numpy arrays and dtypes have one here)")

    dispatch = dict(compat.PurePythonUnpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return lambda *args: _PendingArray(self, args)  # protocols < 5: an empty array, then BUILD
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            return self._frombuffer  # pickle protocol 5: the array's bytes arrive as one in-band buffer
        if module == "numpy" and name == "ndarray":
            return _NDARRAY  # only ever _reconstruct's first argument
        if module == "numpy" and name == "dtype":
            return _dtype
        if module in ("_codecs", "codecs") and name == "encode":
            return _latin1
        if module in ("builtins", "__builtin__") and name == "bytes":
            return _empty_bytes  # protocols < 3: an empty array's data, b"", as bytes()
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _scalar  # a numpy number (np.int64(3)) outside an array
        if self.storages is not None:
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return self._rebuild_tensor
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict  # a tensor's backward hooks (empty)
            if module == "torch" and name in _STORAGE_TYPES:
                return _Marker(name)  # only ever inside a storage's persistent id
        raise UnsafePickleError(
            f"{self.path}: refused to unpickle {_name(module, name)} (only numpy/torch array data is allowed in "
            f"an OGB split file); expected a torch.save'd dict of id arrays as in OGB's release: this file is "
            f"not one of OGB's, replace it with the one from OGB's download")

    def _frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
        if not isinstance(buffer, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or order not in ("C", "F"):
            raise pickle.UnpicklingError("numpy's _frombuffer: expected (bytes, dtype, shape, 'C' or 'F')")
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
        if dtype.kind in "iu" and array.size >= LARGE_ARRAY_ELEMENTS:
            value = self.on_array(array)
            del array, buffer
            self.forget_large_payloads()
            return value
        return array.copy()  # own, writable memory, as numpy's own unpickling gives

    def _rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                        backward_hooks: Any = None, metadata: Any = None) -> _PendingTensor:
        """``torch._utils._rebuild_tensor_v2``, checked: the view must lie inside its storage."""
        if not isinstance(storage, _StorageRef):
            raise pickle.UnpicklingError(f"a tensor of a {type(storage).__name__}, expected a storage")
        offset, size, stride = _int(storage_offset, "storage offset"), _ints(size, "size"), _ints(stride, "stride")
        if len(size) != len(stride) or not isinstance(requires_grad, bool) or backward_hooks or metadata:
            raise pickle.UnpicklingError(f"a tensor of size {size} and stride {stride} (with requires_grad "
                                         f"{requires_grad!r:.20}, hooks or metadata): not a plain tensor")
        if 0 not in size:
            last = offset + sum((extent - 1) * step for extent, step in zip(size, stride))
            if last >= storage.numel:
                raise pickle.UnpicklingError(f"a tensor of size {size}, stride {stride} at offset {offset} reaches "
                                             f"element {last} of a storage of {storage.numel} (truncated or damaged)")
        return _PendingTensor(storage, offset, size, stride, requires_grad)

    def persistent_load(self, pid: Any) -> Any:
        if self.storages is None:
            raise pickle.UnpicklingError("a persistent id (torch storage) outside a torch.save'd file")
        return self.storages.reference(pid)

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


# ------------------------------------------------------------------------------------------ torch storages


class _Storages:
    """The storages a file's pickle refers to, and where their bytes are: read memory-mapped, one at a time."""

    def __init__(self, path: str, legacy: bool) -> None:
        self.path = path
        self.legacy = legacy
        self.roots: Dict[str, _StorageRef] = {}
        self.cache: Dict[str, torch.Tensor] = {}  # small storages, shared by the tensors that view them

    def reference(self, pid: Any) -> _StorageRef:
        fields = 6 if self.legacy else 5
        if not isinstance(pid, tuple) or len(pid) != fields or pid[0] != "storage":
            raise pickle.UnpicklingError(f"persistent id {pid!r:.100}: expected ('storage', type, key, location, "
                                         f"numel{', view' if self.legacy else ''})")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, _Marker) or storage_type.name not in _STORAGE_TYPES \
                or not isinstance(key, str) or not isinstance(location, str):
            raise pickle.UnpicklingError(f"persistent id {pid!r:.100}: not a torch storage")
        root = _StorageRef(key, storage_type.name, _int(numel, "storage size"))
        known = self.roots.setdefault(key, root)
        if (known.type_name, known.numel) != (root.type_name, root.numel):
            raise pickle.UnpicklingError(f"storage {key!r:.40} is both {known.numel} x {known.type_name} and "
                                         f"{root.numel} x {root.type_name}")
        view = pid[5] if self.legacy else None
        if view is None:
            return known
        if not isinstance(view, tuple) or len(view) != 3:  # (view key, offset, size): torch < 0.4's storage views
            raise pickle.UnpicklingError(f"persistent id {pid!r:.100}: bad storage view")
        offset, size = _int(view[1], "storage view offset"), _int(view[2], "storage view size")
        if offset + size > known.numel:
            raise pickle.UnpicklingError(f"a view of elements {offset}..{offset + size} of storage {key!r:.40}, "
                                         f"which has {known.numel}")
        return _StorageRef(key, known.type_name, size, offset)

    def read(self, root: _StorageRef) -> np.ndarray:
        """The root storage's elements as a read-only 1-D array (memory-mapped where the file allows)."""
        raise NotImplementedError

    def array(self, ref: _StorageRef) -> np.ndarray:
        base = self.read(self.roots[ref.key])
        return base[ref.offset:ref.offset + ref.numel]

    def tensor(self, pending: _PendingTensor, on_array: Callable[[np.ndarray], Any]) -> Any:
        """The tensor (a view of its storage), or for a large integer one what ``on_array`` makes of it."""
        ref = pending.storage
        if pending.is_large_ids:
            base = self.array(ref)
            itemsize = base.itemsize
            view = np.lib.stride_tricks.as_strided(base[pending.offset:], pending.size,
                                                   tuple(step * itemsize for step in pending.stride), writeable=False)
            value = on_array(view)  # the bounds were checked in _rebuild_tensor
            del view, base
            return value
        name = f"{ref.key}/{ref.offset}/{ref.numel}"
        if name not in self.cache:
            data = np.array(self.array(ref))  # a private, writable copy
            if ref.torch_dtype == torch.bool:
                data = data.view(np.uint8) != 0
            storage = torch.from_numpy(data)
            self.cache[name] = storage.view(torch.bfloat16) if ref.torch_dtype == torch.bfloat16 else storage
        tensor = self.cache[name].as_strided(pending.size, pending.stride, pending.offset)
        if pending.requires_grad and tensor.dtype.is_floating_point:
            tensor.requires_grad_(True)
        return tensor


def _mapped(path: str, dtype: type, start: int, count: int) -> np.ndarray:
    """``count`` elements of ``dtype`` at byte ``start`` of ``path``, memory-mapped read-only."""
    if count == 0:
        return np.empty(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=(count,))


class _ZipStorages(_Storages):
    """Storages of torch's zip format: member ``<archive>/data/<key>`` holds storage ``key``'s bytes."""

    def __init__(self, path: str, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(path, legacy=False)
        self.archive, self.prefix = archive, prefix

    def read(self, root: _StorageRef) -> np.ndarray:
        name = f"{self.prefix}data/{root.key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise pickle.UnpicklingError(f"the zip file has no member {name!r:.100} (storage {root.key!r:.40})") \
                from None
        dtype = np.dtype(root.numpy_dtype)
        nbytes = root.numel * dtype.itemsize
        if info.file_size < nbytes:
            raise pickle.UnpicklingError(f"zip member {name}: {info.file_size} bytes, expected {nbytes} "
                                         f"({root.numel} x {root.type_name}; truncated or damaged)")
        if info.compress_type == zipfile.ZIP_STORED:  # torch.save's own
            return _mapped(self.path, dtype, _member_start(self.path, info), root.numel)
        with self.archive.open(info) as stream:  # re-packed with compression: this one storage in memory
            data = stream.read(nbytes)
        if len(data) != nbytes:
            raise EOFError(f"zip member {name} is truncated")
        return np.frombuffer(data, dtype=dtype)


class _LegacyStorages(_Storages):
    """Storages of torch's legacy format: after the pickle, the list of keys, then per key an int64 element
    count and the bytes."""

    def __init__(self, path: str) -> None:
        super().__init__(path, legacy=True)
        self.starts: Dict[str, int] = {}

    def locate(self, handle: Any, keys: Any) -> None:
        """Find each storage's bytes (``handle`` stands after the key list); reads 8 bytes per storage."""
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise pickle.UnpicklingError("the list of storage keys after the pickle is not a list of strings")
        size = os.fstat(handle.fileno()).st_size
        position = handle.tell()
        for key in keys:
            root = self.roots.get(key)
            if root is None or key in self.starts:
                raise pickle.UnpicklingError(f"storage {key!r:.40} in the key list is not one of the pickle's "
                                             f"storages, or listed twice")
            handle.seek(position)
            header = handle.read(8)
            if len(header) != 8:
                raise EOFError(f"the file ends before storage {key!r:.40} (truncated)")
            count, = struct.unpack("<q", header)
            end = position + 8 + count * np.dtype(root.numpy_dtype).itemsize
            if count != root.numel or end > size:
                raise pickle.UnpicklingError(f"storage {key!r:.40}: {count} elements at byte {position}, expected "
                                             f"{root.numel} within the file's {size} bytes (truncated or damaged)")
            self.starts[key] = position + 8
            position = end

    def read(self, root: _StorageRef) -> np.ndarray:
        if root.key not in self.starts:
            raise pickle.UnpicklingError(f"storage {root.key!r:.40} is not in the file's list of storages")
        return _mapped(self.path, root.numpy_dtype, self.starts[root.key], root.numel)


# ------------------------------------------------------------------------------------------ reading a file


def load_id_arrays(path: str, on_array: Callable[[np.ndarray], Any]) -> Any:
    """``torch.load(path)`` with every integer array of >= ``LARGE_ARRAY_ELEMENTS`` replaced by ``on_array(array)``.

    ``on_array`` receives a read-only view that is valid only during the call; it returns what the
    result should hold instead (for example a narrowed copy, or a handle to a file it wrote).
    Raises :class:`UnsafePickleError` for a file whose pickle asks for anything but array data, and
    ``pickle.UnpicklingError`` / ``EOFError`` for a damaged or foreign one.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = [info for info in archive.infolist() if info.filename.endswith("data.pkl")]
            if len(records) != 1:
                raise pickle.UnpicklingError(f"expected one data.pkl record in the zip file, found "
                                             f"{[info.filename for info in records][:5]}")
            prefix = records[0].filename[:-len("data.pkl")]
            if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
                raise pickle.UnpicklingError("the file was written on a big-endian machine; expected little-endian")
            storages = _ZipStorages(path, archive, prefix)
            if records[0].compress_type == zipfile.ZIP_STORED:  # torch.save's own: read the bytes in place
                with _stored_member(path, records[0]) as stream:
                    result = _Unpickler(stream, on_array, path, storages).load()
            else:
                with archive.open(records[0]) as stream:  # re-packed with compression
                    result = _Unpickler(stream, on_array, path, storages).load()
            return _resolve(result, storages, on_array)
    with open(path, "rb") as handle:
        header = _legacy_header(handle, path)
        if not header["little_endian"]:
            raise pickle.UnpicklingError("the file was written on a big-endian machine; expected little-endian")
        storages = _LegacyStorages(path)
        result = _Unpickler(handle, on_array, path, storages).load()
        storages.locate(handle, _Unpickler(handle, _no_arrays, path).load() if storages.roots else [])
        return _resolve(result, storages, on_array)


def _no_arrays(array: np.ndarray) -> Any:
    raise _NotTorchSave()


def _legacy_header(handle: Any, path: str) -> dict:
    """The three records before the pickle of torch's legacy format: magic number, protocol version, system info.

    Read with the restricted unpickler, so that a file that is a plain (or planted) pickle is refused
    or reported, never run.
    """
    try:
        magic = _Unpickler(handle, _no_arrays, path).load()
        if isinstance(magic, int) and magic == _LEGACY_MAGIC:
            version = _Unpickler(handle, _no_arrays, path).load()
            info = _Unpickler(handle, _no_arrays, path).load()
            if version != _LEGACY_PROTOCOL_VERSION or not isinstance(info, dict):
                raise pickle.UnpicklingError(f"torch's legacy format of protocol {version!r:.40}, expected "
                                             f"{_LEGACY_PROTOCOL_VERSION}")
            return {"little_endian": info.get("little_endian", True) is True}
    except UnsafePickleError:
        raise
    except _NotTorchSave:
        pass
    except Exception as error:
        raise pickle.UnpicklingError(f"not a torch.save'd file: neither a zip archive nor torch's legacy format "
                                     f"({type(error).__name__}: {str(error)[:200]})") from None
    raise pickle.UnpicklingError("not a torch.save'd file: neither a zip archive nor torch's legacy format "
                                 "(the file starts with another pickle, not torch's magic number)")


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


def _member_start(path: str, info: zipfile.ZipInfo) -> int:
    """Where an uncompressed zip member's bytes start in the file (checked to lie inside it)."""
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise pickle.UnpicklingError(f"zip member {info.filename}: bad local header")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    if start + info.file_size > os.path.getsize(path):
        raise EOFError(f"zip member {info.filename} runs past the end of the file (truncated)")
    return start


def _stored_member(path: str, info: zipfile.ZipInfo) -> io.BufferedReader:
    """An uncompressed zip member as a buffered stream read straight from the file."""
    return io.BufferedReader(_Slice(path, _member_start(path, info), info.file_size), 1 << 20)


def _resolve(value: Any, storages: Optional[_Storages] = None,
             on_array: Optional[Callable[[np.ndarray], Any]] = None) -> Any:
    """Replace the placeholders of the streaming unpickler by their arrays and tensors, in dicts, lists and
    tuples; tensors are read here, one at a time, large integer ones through ``on_array``."""
    if isinstance(value, _PendingArray):
        return value.value
    if isinstance(value, _PendingTensor):
        if not value.done:  # the same tensor twice (pickle's memo) is read once
            value.value, value.done = storages.tensor(value, on_array), True
        return value.value
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _resolve(value[key], storages, on_array)
        return value
    if isinstance(value, list):
        value[:] = [_resolve(item, storages, on_array) for item in value]
        return value
    if isinstance(value, tuple):
        return tuple(_resolve(item, storages, on_array) for item in value)
    return value


__all__: List[str] = ["LARGE_ARRAY_ELEMENTS", "UnsafePickleError", "load_id_arrays"]
