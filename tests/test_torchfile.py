"""Split files read array by array (``data.torchfile``) and the OGB loader's first load through it."""
from __future__ import annotations

import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from ogb_fixtures import SAVES, write_ogb_biokg_fixture, write_ogb_wikikg2_fixture

from kbit_dgl.data import ogb as ogb_module
from kbit_dgl.data import torchfile
from kbit_dgl.data.kg import KGFormatError
from kbit_dgl.data.ogb import load_ogb, ogb_dataset_dir


def _content(rng: np.random.Generator, tensors: bool = False) -> dict:
    convert = torch.from_numpy if tensors else (lambda a: a)
    return {"head": convert(rng.integers(0, 50, 40)), "relation": convert(rng.integers(0, 3, 40)),
            "tail": convert(rng.integers(0, 50, 40)), "head_neg": convert(rng.integers(0, 50, (40, 7))),
            "tail_neg": convert(rng.integers(0, 50, (40, 7)).astype(np.int32)),
            "scale": convert(rng.random(30)), "few": convert(np.arange(3)),
            "head_type": np.array(["a", "b"] * 20, dtype=object), "note": ("text", 3)}


def _equal(a, b) -> bool:
    if isinstance(a, (np.ndarray, torch.Tensor)):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("save", sorted(SAVES))
@pytest.mark.parametrize("tensors", [False, True], ids=["numpy", "tensors"])
def test_reads_what_torch_load_reads_with_large_arrays_passed_on(tmp_path, monkeypatch, save, tensors):
    monkeypatch.setattr(torchfile, "LARGE_ARRAY_ELEMENTS", 40)
    content = _content(np.random.default_rng(0), tensors)
    path = str(tmp_path / "split.pt")
    torch.save(content, path, **SAVES[save])
    seen = []

    def on_array(array):
        seen.append(array.copy())
        return ("replaced", len(seen) - 1)
    result = torchfile.load_id_arrays(path, on_array)
    expected = torch.load(path, weights_only=False)
    large = [key for key in ("head", "relation", "tail", "head_neg", "tail_neg")]
    for key in expected:
        if key in large:
            index = result[key][1]
            assert result[key] == ("replaced", index)
            value = expected[key].numpy() if tensors else expected[key]
            assert seen[index].dtype == value.dtype and np.array_equal(seen[index], value)
        else:
            assert _equal(result[key], expected[key]), key
    assert len(seen) == len(large)
    if not tensors:  # small arrays come back as numpy's own unpickling gives them: writable, own memory
        assert result["few"].flags.writeable and result["few"].flags.owndata


def test_a_recompressed_zip_is_read_through_the_zip_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(torchfile, "LARGE_ARRAY_ELEMENTS", 40)
    content = _content(np.random.default_rng(1))
    stored, packed = str(tmp_path / "stored.pt"), str(tmp_path / "packed.pt")
    torch.save(content, stored)
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    result = torchfile.load_id_arrays(packed, lambda array: array.astype(np.int32))
    assert result["head_neg"].dtype == np.int32 and np.array_equal(result["head_neg"], content["head_neg"])
    assert _equal(result["head_type"], content["head_type"])


@pytest.mark.parametrize("save", sorted(SAVES))
def test_large_arrays_are_read_one_at_a_time(tmp_path, save):
    """Peak memory stays near one array's bytes, where torch.load holds all of them (and more).

    Pickle protocol 2 stores bytes as a latin-1 string that is decoded and re-encoded: two copies.
    """
    arrays = {f"neg{i}": np.full((1 << 18, 8), i, dtype=np.int64) for i in range(6)}  # 16 MiB each
    path = str(tmp_path / "big.pt")
    torch.save(arrays, path, **SAVES[save])
    one = arrays["neg0"].nbytes
    del arrays
    tracemalloc.start()
    try:
        result = torchfile.load_id_arrays(path, lambda array: int(array[0, 0]))
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        torch.load(path, weights_only=False)
        _, whole = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == {f"neg{i}": i for i in range(6)}
    assert streamed < (2.5 if save.endswith("protocol2") else 1.5) * one, (streamed, one)
    assert whole > 5 * one  # what the streaming read avoids


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_files_raise(tmp_path, damage):
    path = str(tmp_path / "split.pt")
    torch.save(_content(np.random.default_rng(2)), path, _use_new_zipfile_serialization=False, pickle_protocol=5)
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write({"truncated": data[: len(data) // 2], "empty": b"", "garbage": b"a,b,c\n1,2,3\n"}[damage])
    with pytest.raises((pickle.UnpicklingError, EOFError, RuntimeError, ValueError)):
        torchfile.load_id_arrays(path, lambda array: array)


# ------------------------------------------------------------------------------- the OGB loader through it


@pytest.mark.parametrize("dataset", ["ogbl-wikikg2", "ogbl-biokg"])
@pytest.mark.parametrize("cache", [True, False])
def test_first_load_with_narrowed_negatives_equals_the_plain_one(tmp_path, monkeypatch, dataset, cache):
    write = write_ogb_wikikg2_fixture if dataset == "ogbl-wikikg2" else write_ogb_biokg_fixture
    write(tmp_path / "plain")
    write(tmp_path / "narrow")
    plain = load_ogb(dataset, str(tmp_path / "plain"), cache=False)
    monkeypatch.setattr(torchfile, "LARGE_ARRAY_ELEMENTS", 1)  # every negative array narrowed (and written)
    narrow = load_ogb(dataset, str(tmp_path / "narrow"), cache=cache)
    for split in ("train", "valid", "test"):
        assert torch.equal(narrow.split(split), plain.split(split))
    for split, arrays in plain.negatives.items():
        for key, value in arrays.items():
            assert torch.equal(narrow.negatives[split][key].long(), value.long())
    processed = os.path.join(ogb_dataset_dir(dataset, str(tmp_path / "narrow")), "processed")
    leftovers = [name for name in os.listdir(processed) if name.startswith(".kbit_cache")]
    assert leftovers == []
    if cache:
        files = sorted(os.listdir(os.path.join(processed, "kbit_cache")))
        assert not [name for name in files if name.startswith(".read-")]
        assert {"valid_head_neg.npy", "test_tail_neg.npy"} <= set(files)
        again = load_ogb(dataset, str(tmp_path / "narrow"))
        for split, arrays in plain.negatives.items():
            for key, value in arrays.items():
                assert torch.equal(again.negatives[split][key].long(), value.long())


def test_a_bad_id_in_a_narrowed_array_is_named_by_row_and_column(tmp_path, monkeypatch):
    fixture = write_ogb_wikikg2_fixture(tmp_path)
    path = os.path.join(fixture["dir"], "split", "time", "valid.pt")
    split = torch.load(path)
    split["tail_neg"][2, 3] = 30  # one past the last entity
    torch.save(split, path)
    monkeypatch.setattr(torchfile, "LARGE_ARRAY_ELEMENTS", 1)
    with pytest.raises(KGFormatError, match=r"tail_neg id 30 at row 2, column 3 is out of range"):
        load_ogb("ogbl-wikikg2", str(tmp_path))
    processed = os.path.join(fixture["dir"], "processed")
    assert [name for name in os.listdir(processed) if "kbit_cache" in name] == []  # nothing half-written


def test_arrays_beyond_int32_are_kept_as_read(tmp_path):
    narrow = ogb_module._NarrowIds(None)
    big = np.array([[0, 2 ** 40]], dtype=np.int64)
    kept = narrow(big)
    assert isinstance(kept, np.ndarray) and kept.dtype == np.int64 and np.array_equal(kept, big)
    ids = narrow(np.array([[1, 5], [2, 3]], dtype=np.int64))
    assert (ids.low, ids.high, ids.shape) == (1, 5, (2, 2)) and ids.tensor().dtype == torch.int32
