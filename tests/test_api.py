"""The Python API (kbit_dgl.api), embedding export, and what a newcomer sees on import."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from kbit_dgl import api
from kbit_dgl.cli import main
from kbit_dgl.errors import ConfigError
from kbit_dgl.export import load_exported

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(dim=16, train__batch_size=128, num_negatives=16, max_epochs=2, valid_every=1)


@pytest.fixture(scope="module")
def run(tsv_folder, tmp_path_factory):
    return api.train(dataset=str(tsv_folder), model="transe", out=str(tmp_path_factory.mktemp("api") / "run"),
                     progress=False, **SMALL)


def test_train_returns_a_run_with_metrics_model_and_kg(run, tsv_folder):
    assert run.metrics["test"]["mrr"] == pytest.approx(run.evaluate("test")["mrr"])
    assert run.config.model.dim == 16 and run.config.train.batch_size == 128 and not run.quantized
    assert run.kg.name == os.path.basename(str(tsv_folder)) and "trained transe" in repr(run)
    reopened = api.load_run(run.path)
    assert reopened.metrics == run.metrics
    assert reopened.evaluate("valid")["mrr"] == run.evaluate("valid")["mrr"]
    rows = run.predict("lives_in", head="person_0", top=4)
    assert len(rows) == 4 and {"entity", "id", "score", "known"} <= set(rows[0])


def test_keyword_overrides_name_their_section_when_ambiguous():
    config = api.make_config(dataset="synthetic", model="rotate", dim=32, lr=0.01, encoder__layers=3)
    assert (config.model.dim, config.train.lr, config.encoder.layers) == (32, 0.01, 3)
    with pytest.raises(ConfigError, match="train__batch_size or eval__batch_size"):
        api.make_config(batch_size=64)
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        api.make_config(nope=1)
    with pytest.raises(ConfigError, match="model.dim must be >= 1"):
        api.make_config(dim=0)


def test_quantize_from_python(run, tmp_path):
    packed = run.quantize(str(tmp_path / "q4"), bits=4, dtype="quantile")
    metrics = packed.evaluate("test")
    assert packed.quantized and metrics["quant"]["entity"]["bits"] == 4
    assert metrics["quant"]["relation"]["bits"] == 8  # the CLI's default: max(bits, 8)


@pytest.mark.parametrize("fmt", ["npy", "tsv", "pt"])
def test_exported_embeddings_score_exactly_as_the_run(run, tmp_path, fmt):
    paths = run.export(str(tmp_path / fmt), format=fmt)
    model, entity_names, relation_names = load_exported(str(tmp_path / fmt))
    assert entity_names == run.kg.entity_names
    assert relation_names == run.kg.relation_names + [name + "_inverse" for name in run.kg.relation_names]
    exported, reference = api.evaluate(api.Run(run.path, run.config, run.kg, model), "test"), run.evaluate("test")
    exported.pop("eval_seconds"), reference.pop("eval_seconds")
    assert exported == reference
    if fmt == "npy":  # DGL-KE's layout: <dataset>_<model>_entity.npy + an id map
        entity = np.load(paths["entity"])
        assert entity.dtype == np.float32 and entity.shape == (run.kg.num_entities, 16)
        assert os.path.basename(paths["entity"]) == f"{run.kg.name}_transe_entity.npy"
        assert open(paths["entities"]).readline() == f"0\t{run.kg.entity_names[0]}\n"


def test_export_dequantizes_packed_runs_and_runs_from_the_cli(run, tmp_path, capsys):
    packed = run.quantize(str(tmp_path / "q3"), bits=3)
    assert main(["export", packed.path, "--out", str(tmp_path / "exported"), "--format", "pt"]) == 0
    assert json.loads(capsys.readouterr().out)["embeddings"].endswith("embeddings.pt")
    model, _, _ = load_exported(str(tmp_path / "exported"))
    assert torch.equal(model.entity.weight, packed.model.entity.dequantize_all())
    scores = api.Run(packed.path, packed.config, packed.kg, model).evaluate("test")
    assert scores["mrr"] == packed.evaluate("test")["mrr"]


def test_export_of_an_encoder_run_gives_the_encoder_output(tmp_path, monkeypatch):
    from kbit_dgl.data.synthetic import generate_kg

    monkeypatch.setenv("KBIT_DGL_COMPILE", "0")
    kg = generate_kg(num_persons=60, num_cities=8, num_countries=3)
    run = api.train(kg=kg, model="distmult", out=str(tmp_path / "rgcn"), encoder="rgcn", progress=False,
                    encoder__num_bases=4, **SMALL)
    run.export(str(tmp_path / "out"))
    model, _, _ = load_exported(str(tmp_path / "out"))
    exported = api.Run(run.path, run.config, run.kg, model).evaluate("test")
    assert exported["mrr"] == pytest.approx(run.evaluate("test")["mrr"], abs=1e-12)


def test_the_example_runs(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), "--epochs", "2",
                             "--out", str(tmp_path / "example")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "done in" in result.stdout and "reloaded test MRR" in result.stdout


def test_no_import_noise_for_a_newcomer(tmp_path):
    """No DGL 'backend not selected' notice, no torch 'No CUDA runtime is found' line."""
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.dgl/config.json yet
    env.pop("DGLBACKEND", None)
    result = subprocess.run([sys.executable, "-c", "import kbit_dgl.models.encoders, kbit_dgl.cli"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_tune_prunes_writes_the_best_config_and_continues_a_stopped_study(tsv_folder, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-3, high: 5.0e-2, log: true}\nmodel.gamma: {choices: [3.0, 9.0]}\n")
    out = tmp_path / "study"
    args = ["tune", "--dataset", str(tsv_folder), "--model", "transe", "--space", str(space), "--out", str(out),
            "--no-progress", "--set", "model.dim=16", "train.batch_size=256", "train.num_negatives=16",
            "train.max_epochs=4", "train.valid_every=1"]
    assert main([*args, "--trials", "3"]) == 0
    assert main([*args, "--trials", "7", "--baseline"]) == 0  # continues: 4 more trials, then the baseline
    report = json.loads((out / "tune.json").read_text())
    assert report["trials"] == 7 and report["complete"] + report["pruned"] == 7
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,valid_mrr,test_mrr,epochs,train_seconds,train.lr,model.gamma")
    assert len(rows) == 8
    best = api.make_config(config=str(out / "best.yaml"))
    assert best.train.lr == pytest.approx(report["best_params"]["train.lr"]) and best.model.dim == 16
    assert "test_mrr_gain" in report and (out / "defaults" / "metrics.json").exists()
    assert "Tuning transe" in (out / "README.md").read_text()


def test_a_bad_search_space_is_refused_before_any_trial(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.nope: {choices: [1]}\n")
    assert main(["tune", "--space", str(space), "--out", str(tmp_path / "s"), "--trials", "1"]) == 2
    assert "unknown key 'train.nope'" in capsys.readouterr().err
    space.write_text("train.lr: {low: 0, high: 1, log: true}\n")
    assert main(["tune", "--space", str(space), "--out", str(tmp_path / "s"), "--trials", "1"]) == 2
    assert "low > 0 with log" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
