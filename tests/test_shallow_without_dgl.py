"""The shallow-model path without DGL: train, evaluate, predict, quantize, evaluate the packed run,
predict from it, and export in every format, for every decoder, through the ``kbit-dgl`` command in a
subprocess in which ``import dgl`` fails (tests/shallow_cli.py).

This runs in the pinned environment with the rest of the suite (DGL is installed there, so an import
would succeed without the block) and, in CI's second stage, in an environment with the newest torch
and numpy and no DGL at all (``pytest -m shallow``).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import kbit_dgl

pytestmark = pytest.mark.shallow

HELPER = os.path.join(os.path.dirname(__file__), "shallow_cli.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(kbit_dgl.__file__)))
# every name the command accepts for --model (kbit_dgl.models.decoders.make_decoder)
MODELS = ("transe", "transe_l2", "rotate", "distmult", "complex", "pairre", "cp", "rescal")
FORMATS = ("npy", "tsv", "pt")
TINY = ["model.dim=8", "train.batch_size=256", "train.num_negatives=8", "train.negative_chunk_size=8",
        "train.max_epochs=1", "train.valid_every=1"]
METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


def run_without_dgl(commands, tmp_path):
    """Run ``commands`` (argument lists of ``kbit-dgl``) in one fresh interpreter that cannot import
    DGL; return the helper's summary (per command: code, stdout, stderr; DGL import attempts)."""
    commands_path, results_path = tmp_path / "commands.json", tmp_path / "results.json"
    commands_path.write_text(json.dumps(commands))
    # this checkout's kbit_dgl, whatever the environment has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    done = subprocess.run([sys.executable, HELPER, str(commands_path), str(results_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{HELPER} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return json.loads(results_path.read_text())


def assert_finite_metrics(metrics, where):
    for key in METRICS:
        value = metrics[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), f"{where}: {key} = {value!r}"
    assert 0 < metrics["mrr"] <= 1 and metrics["mr"] >= 1, f"{where}: {metrics}"


def commands_for(model, tsv_folder, folder):
    """The commands run for ``model``, writing under ``folder``: train, evaluate, predict, quantize to 4
    bits, evaluate and predict from the packed run, evaluate at 2 bits in memory, export in each format,
    resume training for one more epoch."""
    run, packed = os.path.join(folder, "run"), os.path.join(folder, "run-4bit")
    predict = ["--head", "person_0", "--relation", "lives_in", "--top", "3"]
    return [
        ["train", "--dataset", str(tsv_folder), "--model", model, "--out", run, "--no-progress", "--set", *TINY],
        ["evaluate", run, "--split", "test"],
        ["predict", run, *predict],
        ["quantize", run, "--bits", "4", "--out", packed],
        ["evaluate", packed, "--split", "test"],
        ["predict", packed, *predict],
        ["evaluate", run, "--split", "valid", "--bits", "2"],  # quantized in memory
        *(["export", run, "--out", os.path.join(folder, f"export-{fmt}"), "--format", fmt] for fmt in FORMATS),
        ["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=2"],  # reads the checkpoint
    ]


@pytest.fixture(scope="module")
def shallow_runs(tsv_folder, tmp_path_factory):
    """Every model's commands, run in one interpreter (one torch import, one compile per kernel);
    returns (summary, {model: (its folder, its results)})."""
    tmp_path = tmp_path_factory.mktemp("shallow")
    folders = {model: str(tmp_path / model) for model in MODELS}
    per_model = [commands_for(model, tsv_folder, folders[model]) for model in MODELS]
    summary = run_without_dgl([argv for commands in per_model for argv in commands], tmp_path)
    results, by_model = iter(summary["results"]), {}
    for model, commands in zip(MODELS, per_model):
        by_model[model] = (folders[model], [next(results) for _ in commands])
    return summary, by_model


def test_dgl_never_imported(shallow_runs):
    summary, _ = shallow_runs
    assert summary["dgl_import_attempts"] == [] and summary["dgl_in_sys_modules"] == []
    if summary["native_error"] and summary["compiler"]:  # a compiler and ninja are there: the kernels build
        pytest.fail(f"the native CPU kernels did not build under torch {summary['versions']['torch']}: "
                    f"{summary['native_error']}")


def test_the_block_catches_an_import_of_dgl(tmp_path):
    """The guard itself: an encoder run imports DGL (models/encoders.py), which is seen and refused."""
    argv = ["train", "--model", "transe", "--encoder", "rgcn", "--out", str(tmp_path / "run"), "--no-progress"]
    summary = run_without_dgl([argv], tmp_path)
    assert summary["dgl_import_attempts"][0] == "dgl" and summary["dgl_in_sys_modules"] == []
    assert summary["results"][0]["code"] == "raised"
    assert "blocked: the shallow-model path must not import DGL" in summary["results"][0]["stderr"]


@pytest.mark.parametrize("model", MODELS)
def test_shallow_path_without_dgl(model, shallow_runs):
    summary, by_model = shallow_runs
    folder, model_results = by_model[model]
    for result in model_results:
        assert result["code"] == 0, f"kbit-dgl {' '.join(result['argv'])} exited {result['code']}:\n{result['stderr']}"
        warned = [line for line in result["stderr"].splitlines() if "Warning:" in line]
        assert not warned, f"kbit-dgl {' '.join(result['argv'])} warned:\n" + "\n".join(warned)
    exports = {fmt: os.path.join(folder, f"export-{fmt}") for fmt in FORMATS}
    results = [r["stdout"] for r in model_results]

    headline = json.loads(results[0])
    assert headline["model"] == model and headline["protocol"] == "filtered"
    assert_finite_metrics(headline["valid"], "train: valid")
    assert_finite_metrics(headline["test"], "train: test")
    evaluated = json.loads(results[1])
    assert_finite_metrics(evaluated, "evaluate")
    assert evaluated["mrr"] == pytest.approx(headline["test"]["mrr"], rel=1e-5)
    for out in (results[2], results[5]):
        lines = out.splitlines()
        assert lines[0] == "top 3 answers to (person_0, lives_in, ?):" and len(lines) == 4, out
    assert_finite_metrics(json.loads(results[4]), "evaluate the 4-bit run")
    assert_finite_metrics(json.loads(results[6]), "evaluate --bits 2")
    resumed = json.loads(results[10])
    assert_finite_metrics(resumed["test"], "resumed: test")
    assert json.loads(open(os.path.join(folder, "run", "metrics.json")).read())["epochs"] == 2

    # every export loads back (in this process: under the newest torch, torch.load of the pt file), finite, alike
    import torch

    from kbit_dgl.export import load_exported
    tables = {}
    for fmt in FORMATS:
        loaded, entity_names, relation_names = load_exported(exports[fmt])
        assert "person_0" in entity_names and "lives_in" in relation_names
        assert torch.isfinite(loaded.entity.weight).all() and torch.isfinite(loaded.relation.weight).all()
        tables[fmt] = loaded.entity.weight.detach()
    # npy and pt hold the float32 rows; tsv their text
    assert torch.equal(tables["npy"], tables["pt"])
    assert torch.allclose(tables["tsv"], tables["npy"], rtol=1e-5, atol=1e-6)
