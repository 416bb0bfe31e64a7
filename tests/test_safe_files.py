"""Issue #29: reading any file the project wrote cannot run code (safetensors, not pickles), and old
pickled folders are converted only by the explicit ``kbit-dgl migrate``.

Each test here failed before the fix: every file was read with ``torch.load`` (full unpickling).
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from kbit_dgl.cli import main
from kbit_dgl.errors import RunFileError, UnsafeFileError
from kbit_dgl.export import load_exported
from kbit_dgl.io import atomic_save, file_kind, load_saved
from kbit_dgl.migrate import TENSOR_FILES

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=2",
         "train.valid_every=1"]


class _Planted:
    """Unpickling this runs ``touch MARKER`` (what an attacker's file would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(path: str, marker: str, legacy: bool = False) -> None:
    """A malicious pickle where a kbit-dgl file belongs, shaped as the real file (torch.save of a dict)."""
    torch.save({"model": _Planted(marker), "entity": _Planted(marker), "format": _Planted(marker)}, path,
               _use_new_zipfile_serialization=not legacy)


@pytest.fixture(scope="module")
def runs(tsv_folder, tmp_path_factory):
    """A trained run, its packed copy and a pt export (copy them before changing them)."""
    root = tmp_path_factory.mktemp("safe")
    trained, packed, exported = (str(root / name) for name in ("run", "packed", "exported"))
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", trained, "--no-progress",
                 "--set", *SMALL]) == 0
    assert main(["quantize", trained, "--bits", "4", "--out", packed]) == 0
    assert main(["export", trained, "--out", exported, "--format", "pt"]) == 0
    return {"trained": trained, "packed": packed, "exported": exported}


def _copy(source: str, tmp_path, name: str) -> str:
    target = str(tmp_path / name)
    shutil.copytree(source, target)
    return target


def test_every_file_written_is_safetensors_and_round_trips(runs):
    for folder, names in ((runs["trained"], ("model.pt", "checkpoint.pt")), (runs["packed"], ("model.kbit.pt",)),
                          (runs["exported"], ("embeddings.pt",))):
        for name in names:
            path = os.path.join(folder, name)
            assert file_kind(path) == "safetensors", path
            with open(path, "rb") as handle:  # nothing a pickle reader would accept
                assert handle.read(1) != b"\x80" and b"PK\x03\x04" not in handle.read(64)


def test_the_payload_tree_survives_a_round_trip(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    payload = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": base}, 7: {}},
               "param_groups": [{"params": [0, 7], "betas": (0.9, 0.999), "lr": 0.01, "amsgrad": False,
                                 "maximize": None}],
               "view": base[:, 1:3], "same": base, "transposed": base.t(), "empty": torch.zeros(0, 5),
               "flags": torch.tensor([True, False]), "half": torch.ones(2, dtype=torch.bfloat16),
               "generator": torch.Generator().manual_seed(3).get_state(), "dtype": torch.int32,
               "size": torch.Size([2, 3]), "floats": [float("inf"), -1.0], "@key": "tagged-looking key",
               "names": [f"entity {i} é" for i in range(1000)], "with_newline": ["a\nb"] * 300,
               "no_names": [], "history": [{"epoch": 1, "valid_mrr": 0.25, "loss": None}]}
    path = str(tmp_path / "payload.pt")
    atomic_save(path, payload)
    loaded = load_saved(path)
    assert set(loaded) == set(payload)
    assert list(loaded["state"]) == [0, 7] and torch.equal(loaded["state"][0]["exp_avg"], base)
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.999) and loaded["param_groups"][0]["maximize"] is None
    for key in ("view", "same", "transposed", "empty", "flags", "half", "generator"):
        assert loaded[key].dtype == payload[key].dtype and torch.equal(loaded[key], payload[key]), key
    assert loaded["dtype"] is torch.int32 and loaded["size"] == torch.Size([2, 3])
    assert loaded["floats"] == [float("inf"), -1.0] and loaded["@key"] == "tagged-looking key"
    assert loaded["names"] == payload["names"] and loaded["with_newline"] == payload["with_newline"]
    assert loaded["no_names"] == [] and loaded["history"] == payload["history"]
    torch.Generator().set_state(loaded["generator"])


def test_a_value_that_is_not_data_is_refused_when_saving_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"\['optimizer'\]\['hook'\] is a builtins.builtin_function_or_method"):
        atomic_save(str(tmp_path / "x.pt"), {"optimizer": {"hook": print}})
    assert not os.listdir(tmp_path)  # nothing half-written


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("target", ["model.pt", "checkpoint.pt", "model.kbit.pt", "embeddings.pt",
                                    "kbit_partition.pt"])
def test_a_planted_pickle_runs_no_code_in_any_file_the_project_reads(runs, tmp_path, capsys, target, legacy):
    marker = str(tmp_path / "MARKER")
    if target == "kbit_partition.pt":
        from kbit_dgl.train import distdgl

        folder = str(tmp_path / "partition")
        os.makedirs(folder)
        path = os.path.join(folder, target)
        _plant(path, marker, legacy)
        with pytest.raises(UnsafeFileError) as error:
            distdgl.load_maps(os.path.join(folder, "kg.json"), kg=None)
    elif target == "embeddings.pt":
        folder = _copy(runs["exported"], tmp_path, "exported")
        path = os.path.join(folder, target)
        _plant(path, marker, legacy)
        with pytest.raises(UnsafeFileError) as error:
            load_exported(folder)
    else:
        source = runs["packed"] if target == "model.kbit.pt" else runs["trained"]
        folder = _copy(source, tmp_path, "run")
        path = os.path.join(folder, target)
        _plant(path, marker, legacy)
        argv = (["train", "--out", folder, "--resume", "--no-progress", "--set", "train.max_epochs=3"]
                if target == "checkpoint.pt" else ["evaluate", folder])
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and path in errors[0] and f"kbit-dgl migrate {folder}" in errors[0], errors
        error = None
    if error is not None:
        message = str(error.value)
        assert path in message and "\n" not in message and "kbit-dgl migrate" in message
    assert not os.path.exists(marker), "the planted pickle ran its code"


def _metrics(out: str) -> dict:
    return {key: value for key, value in json.loads(out).items() if not key.endswith("seconds")}


def _as_old_kbit_dgl_wrote_it(folder: str) -> None:
    """Rewrite the folder's tensor files as kbit-dgl < 0.2 did: torch.save pickles of the same payloads."""
    for name in TENSOR_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            torch.save(load_saved(path), path)
            assert file_kind(path) == "pickle"


def test_an_old_pickled_run_is_refused_then_migrated_explicitly_and_reads_the_same(runs, tmp_path, capsys):
    run = _copy(runs["trained"], tmp_path, "old")
    assert main(["evaluate", run]) == 0
    before = _metrics(capsys.readouterr().out)
    _as_old_kbit_dgl_wrote_it(run)
    assert main(["evaluate", run]) == 2
    assert "can run code" in capsys.readouterr().err
    assert main(["migrate", run]) == 0
    out = capsys.readouterr().out
    assert "2 pickled file(s) rewritten" in out and os.path.join(run, "model.pt") in out
    assert all(file_kind(os.path.join(run, name)) == "safetensors" for name in ("model.pt", "checkpoint.pt"))
    assert main(["evaluate", run]) == 0
    assert _metrics(capsys.readouterr().out) == before
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3"]) == 0
    assert main(["migrate", run]) == 0 and "nothing to convert" in capsys.readouterr().out
    assert sorted(os.listdir(run)) == sorted(os.listdir(runs["trained"]))  # migrate adds no files


def test_old_packed_and_exported_folders_migrate_too(runs, tmp_path, capsys):
    packed, exported = _copy(runs["packed"], tmp_path, "packed"), _copy(runs["exported"], tmp_path, "exported")
    assert main(["evaluate", packed]) == 0
    before = _metrics(capsys.readouterr().out)
    reference = load_exported(exported)[0].entity.weight.clone()
    for folder in (packed, exported):
        _as_old_kbit_dgl_wrote_it(folder)
        assert main(["migrate", folder]) == 0
    capsys.readouterr()
    assert main(["evaluate", packed]) == 0
    assert _metrics(capsys.readouterr().out) == before
    assert torch.equal(load_exported(exported)[0].entity.weight, reference)
    assert ".lock" not in os.listdir(exported)  # an export folder is not a run folder


def test_a_damaged_safetensors_file_is_named(runs, tmp_path, capsys):
    run = _copy(runs["trained"], tmp_path, "damaged")
    path = os.path.join(run, "model.pt")
    data = open(path, "rb").read()
    for content in (data[: len(data) // 2], data[:8] + b"{not json" + data[17:], b"\x00" * 64):
        open(path, "wb").write(content)
        with pytest.raises(RunFileError, match=path):
            load_saved(path)
        assert main(["evaluate", run]) == 2
        err = capsys.readouterr().err
        assert path in err and "Traceback" not in err
