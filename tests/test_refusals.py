"""Refusals before harm (issue #29): a shared run folder cannot import code by name; outputs never
replace a run's own files; a device the machine lacks, or a run too big for its memory, is refused
before the run folder exists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import conftest
import pytest
import torch
import yaml
from conftest import train_cli_run

from kbit_dgl import api, resources
from kbit_dgl import config as config_module
from kbit_dgl.cli import main
from kbit_dgl.config import Config, resolve_device
from kbit_dgl.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=1",
         "train.valid_every=1"]
RGCN_PATH = "kbit_dgl.models.encoders:RGCNEncoder"


@pytest.fixture(autouse=True)
def fresh_permissions(monkeypatch):
    """Each test starts as a fresh process would: no encoder import allowed yet."""
    monkeypatch.setattr(config_module, "_ALLOWED_ENCODER_IMPORTS", set())


@pytest.fixture(scope="module")
def trained_run(tsv_folder, tmp_path_factory):
    """A shallow TransE run folder, trained for one epoch (copy it before changing it)."""
    return train_cli_run(tsv_folder, tmp_path_factory.mktemp("runs") / "run", SMALL)


def copy_run(run: str, tmp_path, name: str = "run") -> str:
    return conftest.copy_run(run, tmp_path, name)


def set_encoder(run: str, spec: str) -> None:
    path = os.path.join(run, "config.yaml")
    data = yaml.safe_load(open(path))
    data["model"]["encoder"] = spec
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle)


def snapshot(folder: str) -> dict:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


# ---- item 3: a run folder's config.yaml imports nothing it names by module path --------------

def test_a_run_folder_naming_a_module_is_refused_before_anything_is_imported(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    modules = tmp_path / "modules"
    modules.mkdir()
    marker = tmp_path / "imported.marker"
    (modules / "kbit_marker_encoder.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")

        def Encoder(*args):
            open({str(marker)!r}, "w").write("called")
    """))
    system_marker = tmp_path / "system.marker"
    script = textwrap.dedent(f"""
        import json, os, sys
        import yaml
        sys.path.insert(0, {str(modules)!r})
        os.system = lambda command: open({str(system_marker)!r}, "w").write(command)
        from kbit_dgl.cli import main
        results = {{}}
        for spec in ("os:system", "this:x", "kbit_marker_encoder:Encoder"):
            path = os.path.join({run!r}, "config.yaml")
            data = yaml.safe_load(open(path))
            data["model"]["encoder"] = spec
            yaml.safe_dump(data, open(path, "w"))
            results[spec] = main(["evaluate", {run!r}])
        results["imported"] = [name for name in ("this", "kbit_marker_encoder") if name in sys.modules]
        print(json.dumps(results))
    """)
    env = {**os.environ, "PYTHONPATH": REPO}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {"os:system": 2, "this:x": 2, "kbit_marker_encoder:Encoder": 2, "imported": []}
    assert not marker.exists() and not system_marker.exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("kbit-dgl evaluate: error:")]
    assert len(errors) == 3
    config_path = os.path.join(run, "config.yaml")
    for line, spec in zip(errors, ("os:system", "this:x", "kbit_marker_encoder:Encoder")):
        assert config_path in line and repr(spec) in line and f"--allow-import {spec}" in line


def test_every_command_that_opens_a_run_folder_refuses_an_unasked_import(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    set_encoder(run, "this:x")
    before = snapshot(run)
    queries = tmp_path / "queries.tsv"
    queries.write_text("person_0\tlives_in\t?\n")
    for argv in (["evaluate", run], ["predict", run, "--head", "person_0", "--relation", "lives_in"],
                 ["predict", run, "--queries", str(queries)], ["quantize", run, "--bits", "4", "--out",
                                                               str(tmp_path / "q")],
                 ["export", run, "--out", str(tmp_path / "e")], ["train", "--out", run, "--resume"]):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert "--allow-import this:x" in error and os.path.join(run, "config.yaml") in error, argv
    assert "this" not in sys.modules
    assert snapshot(run) == before and not (tmp_path / "q").exists() and not (tmp_path / "e").exists()
    with pytest.raises(ConfigError, match="allow_import"):
        api.load_run(run)


def test_an_allowed_or_registered_encoder_path_still_works(tsv_folder, tmp_path, capsys, monkeypatch):
    from kbit_dgl.models import encoders

    run = str(tmp_path / "rgcn")
    # naming the path on the command line is asking for it
    assert main(["train", "--dataset", str(tsv_folder), "--model", "distmult", "--encoder", RGCN_PATH, "--out", run,
                 "--no-progress", "--set", *SMALL, "encoder.num_bases=2"]) == 0
    trained = json.loads(capsys.readouterr().out)["test"]["mrr"]
    assert main(["evaluate", run]) == 0  # the process that trained it reopens it
    capsys.readouterr()
    monkeypatch.setattr(config_module, "_ALLOWED_ENCODER_IMPORTS", set())  # a new process
    assert main(["evaluate", run]) == 2
    assert f"--allow-import {RGCN_PATH}" in capsys.readouterr().err
    assert main(["evaluate", run, "--allow-import", RGCN_PATH]) == 0
    assert json.loads(capsys.readouterr().out)["mrr"] == pytest.approx(trained)

    monkeypatch.setattr(config_module, "_ALLOWED_ENCODER_IMPORTS", set())
    assert api.load_run(run, allow_import=[RGCN_PATH]).evaluate()["mrr"] == pytest.approx(trained)
    monkeypatch.setattr(config_module, "_ALLOWED_ENCODER_IMPORTS", set())
    monkeypatch.setattr(encoders, "ENCODERS", dict(encoders.ENCODERS))
    assert encoders.register_encoder(RGCN_PATH, encoders.RGCNEncoder) is encoders.RGCNEncoder
    assert api.evaluate(run)["mrr"] == pytest.approx(trained)
    with pytest.raises(ConfigError, match="package.module:Attribute"):
        api.load_run(run, allow_import=["rgcn"])


# ---- item 4: outputs never replace a run's own files -------------------------------------------

def test_predict_out_never_replaces_a_run_file_and_asks_before_replacing_any(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    before = snapshot(run)
    queries = tmp_path / "queries.tsv"
    queries.write_text("person_0\tlives_in\t?\n")
    for name in ("model.pt", "config.yaml", "entities.dict", "checkpoint.pt"):
        for extra in ([], ["--overwrite"]):
            target = os.path.join(run, name)
            assert main(["predict", run, "--queries", str(queries), "--out", target, *extra]) == 2
            error = capsys.readouterr().err
            assert f"--out {target}: that is the {name} of the run folder" in error and len(error.splitlines()) == 1
    os.symlink(os.path.join(run, "model.pt"), tmp_path / "link.pt")
    assert main(["predict", run, "--queries", str(queries), "--out", str(tmp_path / "link.pt"), "--overwrite"]) == 2
    assert snapshot(run) == before

    answers = tmp_path / "answers.tsv"
    answers.write_text("mine\n")
    assert main(["predict", run, "--queries", str(queries), "--out", str(answers)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and answers.read_text() == "mine\n"
    assert main(["predict", run, "--queries", str(queries), "--out", str(answers), "--overwrite"]) == 0
    assert answers.read_text().startswith("head\trelation\ttail")
    assert main(["predict", run, "--queries", str(queries), "--out", str(tmp_path / "new.tsv")]) == 0


def test_export_out_is_never_a_run_folder_and_asks_before_writing_into_a_full_folder(trained_run, tmp_path,
                                                                                     capsys):
    run = copy_run(trained_run, tmp_path)
    before = snapshot(run)
    for extra in ([], ["--overwrite"]):
        assert main(["export", run, "--out", run, *extra]) == 2
        assert f"--out {run}: that is a run folder" in capsys.readouterr().err
    other = copy_run(trained_run, tmp_path, "other")
    assert main(["export", run, "--out", other, "--overwrite"]) == 2
    assert snapshot(run) == before and snapshot(other) == before
    assert main(["export", run, "--out", os.path.join(run, "model.pt")]) == 2
    assert snapshot(run) == before

    out = tmp_path / "exported"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", run, "--out", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert main(["export", run, "--out", str(out), "--overwrite"]) == 0
    assert (out / "config.json").exists() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match="that is a run folder"):
        api.export(run, run)


def test_quantize_out_never_replaces_its_source_and_asks_before_replacing_a_run(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    before = snapshot(run)
    os.symlink(run, tmp_path / "same")
    for target in (run, str(tmp_path / "same"), run + "/."):
        for extra in ([], ["--overwrite"]):
            assert main(["quantize", run, "--bits", "4", "--out", target, *extra]) == 2
            assert "is the run folder being quantized" in capsys.readouterr().err
    assert snapshot(run) == before
    other = copy_run(trained_run, tmp_path, "other")
    assert main(["quantize", run, "--bits", "4", "--out", other]) == 2
    error = capsys.readouterr().err
    assert f"--out {other}: the folder already exists and holds another run; pass --overwrite" in error
    assert snapshot(other) == before
    packed = str(tmp_path / "packed")
    assert main(["quantize", run, "--bits", "4", "--out", packed]) == 0
    assert main(["quantize", run, "--bits", "2", "--out", packed]) == 2
    assert main(["quantize", run, "--bits", "2", "--out", packed, "--overwrite"]) == 0
    assert json.loads(open(os.path.join(packed, "quant.json")).read())["bits"] == 2


# ---- item 5: the device and the memory are checked before the run folder exists ------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device, extra", [("cuda", []), ("cuda:0", []), ("cuda", ["--encoder", "rgcn"])])
def test_a_missing_gpu_is_refused_before_the_run_folder_exists(tsv_folder, tmp_path, capsys, device, extra):
    out = tmp_path / "run"
    model = ["--model", "distmult"] if extra else ["--model", "transe"]
    command = ["train", "--dataset", str(tsv_folder), *model, *extra, "--out", str(out), "--no-progress", "--set",
               *SMALL]
    assert main(command + [f"train.device={device}"]) == 2
    assert "0 CUDA device(s) are visible" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # an empty folder made beforehand stays empty
    assert main(command + [f"train.device={device}"]) == 2
    assert os.listdir(out) == []
    capsys.readouterr()
    assert main(command + ["train.device=cpu"]) == 0  # the corrected command, into the same folder
    assert (out / "metrics.json").exists()


def test_devices_resolve_in_one_place(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", encoder="rgcn") == torch.device("cpu")  # DGL's PyPI wheel: the CPU
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="runs with a GNN encoder"):
        resolve_device("cuda", encoder="rgcn")
    with pytest.raises(ConfigError, match="1 CUDA device"):
        resolve_device("cuda:1")
    for name in ("mps", "tpu", "cuda:x"):
        with pytest.raises(ConfigError, match=name):
            resolve_device(name)


def test_a_run_too_big_for_memory_is_refused_at_once(tsv_folder, tmp_path, capsys):
    out = tmp_path / "big"
    started = time.perf_counter()
    assert main(["train", "--dataset", str(tsv_folder), "--out", str(out), "--no-progress",
                 "--set", "model.dim=100000000"]) == 2
    assert time.perf_counter() - started < 30
    error = capsys.readouterr().err
    assert "the run needs about" in error and " GiB" in error and "train.check_memory=false" in error
    assert len(error.strip().splitlines()[-1]) and not out.exists()


def test_the_memory_estimate_and_its_override(small_kg, tmp_path, monkeypatch):
    from conftest import small_config

    config = small_config("transe", epochs=1)
    entities, relations = small_kg.num_entities, small_kg.num_relations
    parts = resources.estimate_training_bytes(config, entities, relations, len(small_kg.train))
    tables = (entities + 2 * relations) * 32 * 4  # reciprocal relations: 2R rows
    assert parts["tables"] == tables and parts["optimizer"] == 2 * tables  # Adam's two moments
    config.train.optimizer = "rowwise_adagrad"
    assert resources.estimate_training_bytes(config, entities, relations)["optimizer"] == (entities + 2 * relations) * 4
    config.train.optimizer = "adam"
    step = 3 * (3 * 256 + 4 * 32) * 32 + 4 * 256 * 32  # 4 chunks of 64 queries share 32 negatives
    assert parts["workspace"] == max(step, 3 * 256 * entities) * 4
    assert parts["total"] == sum(value for name, value in parts.items() if name != "total")

    monkeypatch.setattr(resources, "available_bytes", lambda device: parts["total"] - 1)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"needs about 0\.0\d+ GiB .* train\.check_memory=false"):
        api.train(kg=small_kg, out=str(out), config=config, progress=False)
    assert not out.exists()
    run = api.train(kg=small_kg, out=str(out), config=config, progress=False, check_memory=False)
    assert run.metrics["epochs"] == 1 and Config.from_yaml(str(out / "config.yaml")).train.check_memory is False


def test_a_wikikg2_size_run_under_ogbs_protocol_is_not_refused_on_a_24_gib_machine(monkeypatch):
    """The TransE-500 leaderboard run (measured peak RSS under 14 GiB) is evaluated against OGB's 500 + 500
    negatives, not all 2.5M entities: the estimate counts those (it refused the run at 21.5 GiB before)."""
    from types import SimpleNamespace

    config = Config()
    config.model.name, config.model.dim, config.model.reciprocal = "transe", 500, "false"
    config.train.batch_size, config.train.num_negatives, config.train.negative_chunk_size = 512, 128, 128
    sides = {"head_neg": torch.zeros(1, 500), "tail_neg": torch.zeros(1, 500)}
    negatives = {"valid": sides, "test": sides}
    kg = SimpleNamespace(num_entities=2_500_604, num_relations=535, train=range(16_109_182), negatives=negatives)
    monkeypatch.setattr(resources, "available_bytes", lambda device: 20 << 30)  # a 24 GiB machine, in use
    parts = resources.check_memory_for(config, kg)
    assert parts["total"] < 16 << 30 and parts["workspace"] < 1 << 30
    kg.negatives = {}  # filtered ranking against every entity: 256 queries x 2.5M scores each batch
    assert resources.estimate_training_bytes(config, kg.num_entities, 535)["workspace"] == 3 * 256 * 2_500_604 * 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_run_trained_on_a_gpu_opens_on_a_machine_without_one(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    path = os.path.join(run, "config.yaml")
    data = yaml.safe_load(open(path))
    data["train"]["device"] = "cuda"
    yaml.safe_dump(data, open(path, "w"))
    assert main(["evaluate", run]) == 0  # train.device names where it trained; --device where it evaluates
    assert json.loads(capsys.readouterr().out)["mrr"] > 0
    assert main(["evaluate", run, "--device", "cuda"]) == 2
    assert "0 CUDA device(s)" in capsys.readouterr().err
