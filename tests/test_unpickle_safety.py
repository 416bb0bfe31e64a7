"""OGB split files are unpickled without running code (issue #29): only numpy/torch array data is built.

A planted pickle (``__reduce__`` -> ``os.system`` / ``builtins.exec``) in every format torch.save and
pickle write must be refused with one error line naming the file and the global, and leave no trace.
"""
from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from ogb_fixtures import SAVES, write_ogb_wikikg2_fixture

from kbit_dgl.data import torchfile
from kbit_dgl.data.kg import KGFormatError
from kbit_dgl.data.ogb import load_ogb


class _System:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Exec:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({self.marker!r}, 'w').close()",)


# How the file spells the global: os.system is posix.system; pickle protocol 2 writes builtins as __builtin__.
PAYLOADS = {"os.system": (_System, (f"{os.system.__module__}.system",)),
            "builtins.exec": (_Exec, ("builtins.exec", "__builtin__.exec"))}


def _plain(content, path, protocol):
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=protocol)


WRITERS = {
    "pickle-protocol2": lambda content, path: _plain(content, path, 2),
    "pickle-protocol4": lambda content, path: _plain(content, path, 4),
    "torch-zip-protocol2": lambda content, path: torch.save(content, path),
    "torch-zip-protocol4": lambda content, path: torch.save(content, path, pickle_protocol=4),
    "torch-legacy-protocol2": lambda content, path: torch.save(content, path, _use_new_zipfile_serialization=False),
    "torch-legacy-protocol4": lambda content, path: torch.save(content, path, _use_new_zipfile_serialization=False,
                                                               pickle_protocol=4),
}


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_planted_pickle_in_a_split_file_is_refused_and_never_runs(tmp_path, writer, payload):
    fixture = write_ogb_wikikg2_fixture(tmp_path / "root")
    path = os.path.join(fixture["dir"], "split", "time", "train.pt")
    marker = str(tmp_path / "MARKER")
    make, spelled = PAYLOADS[payload]
    relation = fixture["train"][:, 1]  # torch.save's files hold a tensor too (plain pickle cannot: no storages)
    columns = {"head": fixture["train"][:, 0].numpy(), "relation": relation if "torch" in writer else relation.numpy(),
               "tail": fixture["train"][:, 2].numpy()}
    WRITERS[writer]({**columns, "extra": make(marker)}, path)
    with pytest.raises(KGFormatError) as caught:
        load_ogb("ogbl-wikikg2", str(tmp_path / "root"))
    message = str(caught.value)
    assert not os.path.exists(marker)
    assert any(message.startswith(f"{path}: refused to unpickle {name} (only numpy/torch array data is allowed")
               for name in spelled), message
    assert "\n" not in message and len(message) < 400


def test_a_planted_processed_graph_is_refused_before_ogb_loads_it(tmp_path):
    """ogb itself reads ``processed/data_processed`` with a plain torch.load: it is checked first."""
    fixture = write_ogb_wikikg2_fixture(tmp_path / "root")
    load_ogb("ogbl-wikikg2", str(tmp_path / "root"), cache=False)  # ogb writes processed/data_processed
    path = os.path.join(fixture["dir"], "processed", "data_processed")
    graph = torchfile.load_id_arrays(path, lambda array: array)
    marker = str(tmp_path / "MARKER")
    torch.save({**graph, "num_nodes": _System(marker)}, path, pickle_protocol=4)
    with pytest.raises(KGFormatError) as caught:
        load_ogb("ogbl-wikikg2", str(tmp_path / "root"), cache=False)
    assert not os.path.exists(marker)
    assert str(caught.value).startswith(f"{path}: refused to unpickle {os.system.__module__}.system")


def _legacy_file(path: str, payload: bytes) -> None:
    """torch's legacy layout around a hand-written pickle: magic, protocol version, system info, payload, keys."""
    with open(path, "wb") as handle:
        for record in (torchfile._LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(record, handle, protocol=2)
        handle.write(payload)
        pickle.dump([], handle, protocol=2)


def test_codecs_encode_only_decodes_latin1(tmp_path):
    path = str(tmp_path / "split.pt")
    _legacy_file(path, b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(pickle.UnpicklingError, match=r"only encode\(str, 'latin1'\)"):
        torchfile.load_id_arrays(path, lambda array: array)


def test_a_dtype_is_always_a_copy_so_numpys_own_int64_stays_little_endian(tmp_path):
    """``dtype('i8', False, False)`` is numpy's shared int64; BUILD with '>' would flip it for the process."""
    path = str(tmp_path / "split.pt")
    state = b"(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    _legacy_file(path, b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00i8\x89\x89\x87R" + state + b".")
    loaded = torchfile.load_id_arrays(path, lambda array: array)
    assert loaded.byteorder == ">" and np.dtype("i8").byteorder == "="


@pytest.mark.parametrize("spec, state", [
    (b"S8", b"(K\x03X\x01\x00\x00\x00|NNNK\x08K\x01K?t"),  # bytes made object pointers: flags 63 (hasobject)
    (b"i8", b"(K\x03X\x01\x00\x00\x00<NNNK\x10K\x08K\x00t"),  # itemsize 16 for an 8-byte type
    (b"V8", b"(K\x03X\x01\x00\x00\x00|NNNK\x08K\x01K\x00t"),  # raw void: not array data of OGB's
])
def test_a_dtype_state_that_changes_more_than_the_byte_order_is_refused(tmp_path, spec, state):
    path = str(tmp_path / "split.pt")
    _legacy_file(path, b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00" + spec + b"\x89\x88\x87R" + state + b"b.")
    with pytest.raises(pickle.UnpicklingError, match="numpy.dtype"):
        torchfile.load_id_arrays(path, lambda array: array)


def test_state_of_anything_but_arrays_and_dtypes_is_refused(tmp_path):
    path = str(tmp_path / "split.pt")  # OrderedDict() then BUILD {'x': 1}: sets an attribute on it
    _legacy_file(path, b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00xK\x01sb.")
    with pytest.raises(pickle.UnpicklingError):
        torchfile.load_id_arrays(path, lambda array: array)


class _Storage:
    pass


class _Tensor:
    """Pickles as torch's ``_rebuild_tensor_v2`` of a 3-element storage, with any size and stride."""

    def __init__(self, size, stride, offset=0):
        self.args = (_Storage(), offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def _zip_with_tensor(path: str, tensor: _Tensor, numel: int = 3) -> None:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.LongStorage, "0", "cpu", numel) if isinstance(obj, _Storage) else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"head": tensor})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(3, dtype=np.int64).tobytes())
        archive.writestr("archive/version", "3\n")


@pytest.mark.parametrize("size, stride, offset", [((100,), (1,), 0), ((2,), (1,), 2), ((2, 2), (2, 1), 0),
                                                  ((3,), (-1,), 2)])
def test_a_tensor_outside_its_storage_is_refused(tmp_path, size, stride, offset):
    path = str(tmp_path / "split.pt")
    _zip_with_tensor(path, _Tensor(size, stride, offset))
    with pytest.raises(pickle.UnpicklingError, match="storage|stride"):
        torchfile.load_id_arrays(path, lambda array: array)


def test_a_hand_written_tensor_inside_its_storage_loads(tmp_path):
    path = str(tmp_path / "split.pt")
    _zip_with_tensor(path, _Tensor((2,), (1,), 1))
    loaded = torchfile.load_id_arrays(path, lambda array: array)
    assert torch.equal(loaded["head"], torch.tensor([1, 2]))


def test_a_storage_larger_than_its_zip_member_is_refused(tmp_path):
    path = str(tmp_path / "split.pt")
    _zip_with_tensor(path, _Tensor((2,), (1,)), numel=1000)
    with pytest.raises(pickle.UnpicklingError, match="truncated or damaged"):
        torchfile.load_id_arrays(path, lambda array: array)


@pytest.mark.parametrize("save", sorted(SAVES))
def test_tensors_of_every_kind_load_as_torch_load_loads_them(tmp_path, monkeypatch, save):
    monkeypatch.setattr(torchfile, "LARGE_ARRAY_ELEMENTS", 12)
    base = torch.arange(24).reshape(4, 6)
    content = {"view": base[1:3, 2:5], "transposed": base.t(), "same": base, "step": torch.arange(30)[::3],
               "int32": torch.arange(5, dtype=torch.int32), "bool": torch.tensor([True, False, True]),
               "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "half": torch.tensor([0.5], dtype=torch.half),
               "weight": torch.ones(3, requires_grad=True), "empty": torch.zeros(0, 4, dtype=torch.long),
               "scalar": torch.tensor(7), "u8": torch.arange(4, dtype=torch.uint8), "list": [torch.arange(2)]}
    path = str(tmp_path / "split.pt")
    torch.save(content, path, **SAVES[save])
    expected = torch.load(path, weights_only=False)
    seen = []
    loaded = torchfile.load_id_arrays(path, lambda array: seen.append(array.copy()) or ("large", len(seen) - 1))
    for key in ("same", "transposed"):  # 24 elements >= 12: through on_array
        assert loaded[key][0] == "large" and np.array_equal(seen[loaded[key][1]], expected[key].numpy())
    for key in set(content) - {"same", "transposed", "list"}:
        value = loaded[key]
        assert isinstance(value, torch.Tensor) and value.dtype == expected[key].dtype, key
        assert value.shape == expected[key].shape and torch.equal(value, expected[key]), key
        assert value.requires_grad == expected[key].requires_grad, key
    assert torch.equal(loaded["list"][0], expected["list"][0])
    assert len(seen) == 2


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_numpy_arrays_of_every_kind_load_as_torch_load_loads_them(tmp_path, protocol, zip_format):
    """The globals numpy's pickles use at protocols 2, 4 and 5 (empty arrays: bytes(); 5: _frombuffer)."""
    read_only = np.arange(3)
    read_only.flags.writeable = False
    content = {"empty": np.zeros((6, 0), dtype=np.int64), "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
               "strided": np.arange(10)[::2], "read_only": read_only, "zero_d": np.array(5),
               "text": np.array(["ab", "c"]),
               "bool": np.array([True, False]), "objects": np.array(["a", "b"], dtype=object), "number": np.int64(3),
               "float": np.float32(2.5), "int32": np.arange(4, dtype=np.int32), "nested": {"list": [np.arange(2)]}}
    path = str(tmp_path / "split.pt")
    torch.save(content, path, pickle_protocol=protocol, _use_new_zipfile_serialization=zip_format)
    expected = torch.load(path, weights_only=False)
    loaded = torchfile.load_id_arrays(path, lambda array: array)
    for key, value in expected.items():
        if key == "nested":
            assert np.array_equal(loaded[key]["list"][0], value["list"][0])
            continue
        assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype, key
        assert np.shape(loaded[key]) == np.shape(value) and np.array_equal(loaded[key], value), key


@pytest.mark.parametrize("save", ["zip-protocol2", "legacy-protocol2"])
def test_large_tensors_are_read_one_at_a_time_from_the_mapped_file(tmp_path, save):
    tensors = {f"neg{i}": torch.full((1 << 18, 8), i, dtype=torch.int64) for i in range(4)}  # 16 MiB each
    path = str(tmp_path / "big.pt")
    torch.save(tensors, path, **SAVES[save])
    one = tensors["neg0"].numel() * 8
    del tensors
    sizes = []
    tracemalloc.start()
    try:
        result = torchfile.load_id_arrays(path, lambda array: sizes.append(array.nbytes) or int(array[5, 3]))
        _, streamed = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == {f"neg{i}": i for i in range(4)} and sizes == [one] * 4
    assert streamed < 0.1 * one, (streamed, one)  # the storages are memory-mapped, never copied
