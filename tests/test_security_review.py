"""Security review of issue #29 (run folders received from strangers): what the review found, each
test failing before its fix.

* a resumed run appended its log through a ``train.log`` that is a symbolic link (to a file outside
  the folder), and opened / created the target of a ``.lock`` link;
* an ``entities.dict`` holding bytes that are not UTF-8 ended in a UnicodeDecodeError traceback;
* a model file whose ``model`` entry is not a state dict, and a packed model file whose tables do
  not match their header (too few rows, a cut scale or codebook tensor, float codes), ended in
  tracebacks (a TypeError, or an IndexError mid-evaluation) instead of one line naming the file;
* tensor files were written with mode 0600 (safetensors re-creates the temporary file), unlike
  every other file of a run folder.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat

import pytest
import torch

from kbit_dgl.cli import main
from kbit_dgl.errors import RunFileError, RunFolderError
from kbit_dgl.export import load_exported
from kbit_dgl.io import atomic_save, atomic_write_json, load_saved
from kbit_dgl.quant.storage import load_quantized_model
from kbit_dgl.runs import read_id_maps, run_lock

pytestmark = pytest.mark.shallow  # DGL-free

SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=1",
         "train.valid_every=1"]


@pytest.fixture(scope="module")
def runs(tsv_folder, tmp_path_factory):
    """A trained run, its packed copy and a pt export (copy them before changing them)."""
    root = tmp_path_factory.mktemp("review")
    trained, packed = str(root / "run"), str(root / "packed")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", trained, "--no-progress",
                 "--set", *SMALL]) == 0
    assert main(["quantize", trained, "--bits", "4", "--out", packed]) == 0
    exported = str(root / "exported")
    assert main(["export", trained, "--out", exported, "--format", "pt"]) == 0
    return {"trained": trained, "packed": packed, "exported": exported}


def _copy(source: str, tmp_path, name: str = "run") -> str:
    target = str(tmp_path / name)
    shutil.copytree(source, target, symlinks=True)
    return target


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


def test_a_resume_never_writes_through_a_symlinked_train_log(runs, tmp_path, capsys):
    folder = _copy(runs["trained"], tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("SAFE\n")
    os.unlink(os.path.join(folder, "train.log"))
    os.symlink(victim, os.path.join(folder, "train.log"))
    assert main(["train", "--out", folder, "--resume", "--no-progress", "--set", "train.max_epochs=2"]) == 2
    error = _one_error(capsys)
    assert "train.log" in error and "symbolic link" in error
    assert victim.read_text() == "SAFE\n"


def test_a_symlinked_lock_is_not_followed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    target = tmp_path / "elsewhere" / "created"
    target.parent.mkdir()
    os.symlink(target, folder / ".lock")
    with pytest.raises(RunFolderError, match="symbolic link"):
        with run_lock(str(folder)):
            pass
    assert not target.exists()


def test_an_id_map_that_is_not_utf8_is_named_with_line_and_offset(runs, tmp_path, capsys):
    folder = _copy(runs["trained"], tmp_path)
    path = os.path.join(folder, "entities.dict")
    with open(path, "rb") as handle:
        lines = handle.read().splitlines(keepends=True)
    lines[2] = b"2\tbad\xff\xfename\n"
    with open(path, "wb") as handle:
        handle.write(b"".join(lines))
    with pytest.raises(RunFileError) as error:
        read_id_maps(folder)
    message = str(error.value)
    assert path in message and "line 3" in message and f"offset {len(lines[0]) + len(lines[1]) + 5}" in message
    assert "\n" not in message
    assert main(["evaluate", folder]) == 2
    assert path in _one_error(capsys)


@pytest.mark.parametrize("entry", ["a string", "a tensor value"])
def test_a_model_file_whose_model_is_not_a_state_dict_is_one_line(runs, tmp_path, capsys, entry):
    folder = _copy(runs["trained"], tmp_path)
    path = os.path.join(folder, "model.pt")
    payload = load_saved(path)
    if entry == "a string":
        payload["model"] = "x"
    else:
        payload["model"]["entity.weight"] = "x"
    atomic_save(path, payload)
    assert main(["evaluate", folder]) == 2
    assert path in _one_error(capsys)


def _few_rows(table):
    table["codes"] = table["codes"][:3].clone()


def _short_scales(table):
    table["scales"] = table["scales"][:2].clone()


def _short_codebook(table):
    table["codebook"] = table["codebook"][:2].clone()


def _float_codes(table):
    table["codes"] = table["codes"].float()


@pytest.mark.parametrize("damage", [_few_rows, _short_scales, _short_codebook, _float_codes],
                         ids=lambda damage: damage.__name__.strip("_"))
def test_a_packed_table_that_does_not_match_its_header_is_refused_at_load(runs, tmp_path, capsys, damage):
    folder = _copy(runs["packed"], tmp_path)
    path = os.path.join(folder, "model.kbit.pt")
    payload = load_saved(path)
    damage(payload["entity"])
    atomic_save(path, payload)
    with pytest.raises(RunFileError, match="damaged quantized model file"):
        load_quantized_model(path)
    assert main(["evaluate", folder]) == 2
    assert path in _one_error(capsys)


def test_the_packed_file_as_written_passes_the_check(runs):
    model = load_quantized_model(os.path.join(runs["packed"], "model.kbit.pt"))
    assert model.entity.num_embeddings > 0


def test_tensor_files_get_the_mode_of_every_other_file(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_save(str(tmp_path / "model.pt"), {"model": {"w": torch.zeros(2)}})
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "model.pt").st_mode) == stat.S_IMODE(os.stat(tmp_path / "other").st_mode)


def test_a_config_of_nested_yaml_aliases_is_refused_before_it_expands(runs, tmp_path, capsys):
    """A "billion laughs": 1 KB of aliases that expands to 9**7 strings wherever printed or copied
    (``data.dataset`` was str()-ed: a MemoryError, or the machine's memory, at depth 9)."""
    folder = _copy(runs["trained"], tmp_path)
    path = os.path.join(folder, "config.yaml")
    value = "[&l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]" + "".join(
        f", &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 6)) + "]"
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(re.sub(r"(?m)^  dataset: .*$", lambda _: f"  dataset: {value}", text, count=1))
    assert len(open(path).read()) < 4096
    assert main(["evaluate", folder]) == 2
    error = _one_error(capsys)
    assert path in error and "YAML aliases" in error


def _edit_config_json(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as handle:
        meta = json.load(handle)
    for key, value in changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    atomic_write_json(path, meta)


@pytest.mark.parametrize("damage", ["huge dim", "huge relation count", "no files entry", "entity not a tensor"])
def test_a_damaged_export_folder_is_one_error_and_allocates_nothing(runs, tmp_path, damage):
    """config.json's numbers built the model before the tables were compared with it: a dim of 10**9
    allocated (and initialised) an entity table of 10**9 columns first."""
    folder = _copy(runs["exported"], tmp_path, "exported")
    if damage == "huge dim":
        _edit_config_json(folder, dim=10 ** 9)
    elif damage == "huge relation count":
        _edit_config_json(folder, num_relations=10 ** 11)
    elif damage == "no files entry":
        _edit_config_json(folder, files=None)
    else:
        path = os.path.join(folder, "embeddings.pt")
        payload = load_saved(path)
        payload["entity"] = "x"
        atomic_save(path, payload)
    with pytest.raises(RunFileError) as error:
        load_exported(folder)
    assert folder in str(error.value) and "\n" not in str(error.value)


def test_a_search_space_with_non_numeric_bounds_is_one_error(tmp_path):
    from kbit_dgl.errors import ConfigError
    from kbit_dgl.tune import read_space

    path = tmp_path / "space.yaml"
    path.write_text("train.lr: {low: abc, high: 1}\n")
    with pytest.raises(ConfigError, match="space.yaml: train.lr needs numbers for low and high"):
        read_space(str(path))


def test_an_npy_export_never_writes_through_a_link_planted_at_its_temporary_name(runs, tmp_path):
    """The npy export wrote ``<name>.npy.tmp.npy`` then renamed it: a link of that name in the --out
    folder (re-exporting into a folder received from elsewhere, with --overwrite) was written through."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("SAFE\n")
    for what in ("entity", "relation"):
        os.symlink(victim, out / f"family_transe_{what}.npy.tmp.npy")
    assert main(["export", runs["trained"], "--out", str(out), "--format", "npy", "--overwrite"]) == 0
    assert victim.read_text() == "SAFE\n"
    model, entity_names, _ = load_exported(str(out))
    assert model.entity.weight.shape[0] == len(entity_names)


class _Reduces:
    """Unpickles to ``function(*args)``."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_a_processed_graph_the_checker_cannot_finish_is_not_handed_to_ogb(tmp_path):
    """The check of ``processed/data_processed`` let any error but a refused global pass and left the
    file to ogb's torch.load: a ``bytes(5)`` (refused with a plain UnpicklingError) placed before an
    ``os.system`` call made the check give up, and ogb then ran the call."""
    pytest.importorskip("ogb")  # not in the newest-torch stage
    from ogb_fixtures import write_ogb_wikikg2_fixture

    from kbit_dgl.data import torchfile
    from kbit_dgl.data.kg import KGFormatError
    from kbit_dgl.data.ogb import load_ogb

    fixture = write_ogb_wikikg2_fixture(tmp_path / "root")
    load_ogb("ogbl-wikikg2", str(tmp_path / "root"), cache=False)  # ogb writes processed/data_processed
    path = os.path.join(fixture["dir"], "processed", "data_processed")
    graph = torchfile.load_id_arrays(path, lambda array: array)
    marker = str(tmp_path / "MARKER")
    torch.save({"first": _Reduces(bytes, 5), **graph, "num_nodes": _Reduces(os.system, f"touch {marker}")}, path,
               pickle_protocol=4)
    with pytest.raises(KGFormatError) as caught:
        load_ogb("ogbl-wikikg2", str(tmp_path / "root"), cache=False)
    assert not os.path.exists(marker), "ogb's torch.load ran the planted call"
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "Delete it" in message


@pytest.mark.parametrize("entry", ["optimizer", "generator", "state", "epoch"])
def test_a_checkpoint_holding_values_of_the_wrong_kind_is_one_error_on_resume(runs, tmp_path, capsys, entry):
    folder = _copy(runs["trained"], tmp_path)
    path = os.path.join(folder, "checkpoint.pt")
    payload = load_saved(path)
    if entry == "epoch":
        payload["state"]["epoch"] = "x"
    else:
        payload[entry] = "x"
    atomic_save(path, payload)
    assert main(["train", "--out", folder, "--resume", "--no-progress", "--set", "train.max_epochs=2"]) == 2
    assert path in _one_error(capsys)


def test_a_tree_naming_one_tensor_many_times_reads_it_once(tmp_path):
    """Every reference was a fresh read of the tensor: a 60 MB header naming a 1 MB tensor five million
    times asked for 5 TB. A tensor met twice when saving is stored once, and comes back once."""
    import json as json_module

    from safetensors.torch import save_file

    from kbit_dgl.io import FILE_FORMAT

    path = str(tmp_path / "model.pt")
    tree = {"model": [{"@t": "t0"}] * 1000}
    save_file({"t0": torch.zeros(1024)}, path,
              metadata={"format": FILE_FORMAT, "kbit_dgl": json_module.dumps(tree)})
    tables = load_saved(path, ("model",))["model"]
    assert len(tables) == 1000 and all(table is tables[0] for table in tables)


def test_a_run_folders_config_passed_as_config_imports_its_encoder_only_when_allowed(runs, tsv_folder, tmp_path,
                                                                                    monkeypatch, capsys):
    """``train --config RUN/config.yaml`` (reproducing a run received from elsewhere) took the file as the
    caller's own config, and training allows the import of the encoder its config names."""
    folder = _copy(runs["trained"], tmp_path)
    marker = tmp_path / "IMPORTED"
    (tmp_path / "planted_encoder.py").write_text(f"open({str(marker)!r}, 'w').close()\nEncoder = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.path.join(folder, "config.yaml")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("  encoder: null", "  encoder: planted_encoder:Encoder", 1))
    out = str(tmp_path / "reproduced")
    assert main(["train", "--config", path, "--dataset", str(tsv_folder), "--out", out, "--no-progress"]) == 2
    error = _one_error(capsys)
    assert path in error and "--allow-import planted_encoder:Encoder" in error
    assert not marker.exists() and not os.path.exists(out)


def test_a_dtype_tag_imports_nothing(tmp_path):
    """``{"@dtype": NAME}`` was ``getattr(torch, NAME)``, and torch's module ``__getattr__`` imports the
    submodule of that name: a file naming ``_inductor`` imported torch's compiler stack (seconds, side effects)."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    from kbit_dgl.io import FILE_FORMAT

    path = str(tmp_path / "model.pt")
    save_file({"t0": torch.zeros(1)}, path,
              metadata={"format": FILE_FORMAT, "kbit_dgl": json.dumps({"model": {"@dtype": "_inductor"}})})
    script = ("import sys\nfrom kbit_dgl.io import load_saved\ntry:\n    load_saved(sys.argv[1])\n"
              "except Exception as error:\n    print(type(error).__name__, error)\n"
              "print('torch._inductor' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("RunFileError") and "unknown dtype '_inductor'" in lines[0], out
    assert lines[-1] == "False", out
