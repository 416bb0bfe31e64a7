"""The kbit-dgl command: train -> evaluate -> predict on a folder dataset; config errors."""
from __future__ import annotations

import json
import os

import pytest

from kbit_dgl.cli import main
from kbit_dgl.config import Config

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=2",
         "train.valid_every=1"]


def test_train_evaluate_predict(tsv_folder, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", run, "--no-progress",
                 "--set", *SMALL]) == 0
    headline = json.loads(capsys.readouterr().out)
    assert headline["model"] == "transe" and headline["protocol"] == "filtered"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["mrr"] == headline["test"]["mrr"]
    config = Config.from_yaml(str(tmp_path / "run" / "config.yaml"))
    assert config.model.dim == 16 and config.data.dataset == str(tsv_folder)

    assert main(["evaluate", run, "--split", "test"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mrr"] == pytest.approx(saved["test"]["mrr"])

    assert main(["predict", run, "--head", "person_0", "--relation", "lives_in", "--top", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "top 5 answers to (person_0, lives_in, ?):" and len(out) == 6
    entities = len(open(os.path.join(run, "entities.dict")).read().splitlines())
    assert main(["predict", run, "--tail", "person_0", "--relation", "married_to", "--top", str(entities)]) == 0
    assert "known true (" in capsys.readouterr().out  # the spouse is listed and marked
    assert main(["predict", run, "--tail", "person_0", "--relation", "married_to", "--top", str(entities + 1)]) == 2
    assert f"more than the {entities} entities" in capsys.readouterr().err

    # the run folder is not silently overwritten; resume extends it
    assert main(["train", "--dataset", str(tsv_folder), "--out", run, "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 3


def test_bad_input_errors(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "train.nope=1"]) == 2
    assert "unknown key 'train.nope'" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "train.lr=fast"]) == 2
    assert "train.lr expects float" in capsys.readouterr().err
    assert main(["train", "--dataset", "wn18rr", "--data-dir", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "WN18RR" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "valid", "test"):
        (bad / f"{split}.txt").write_text("a\tr\tb\n")
    (bad / "valid.txt").write_text("a\tr\tb\nc\td\n")
    assert main(["train", "--dataset", str(bad), "--out", str(tmp_path / "z")]) == 2
    assert "valid.txt, line 2: expected 3 tab-separated fields" in capsys.readouterr().err


def test_config_yaml_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: transe\n  dim: 64\ntrain:\n  lr: 0.01\n")
    config = Config.from_yaml(str(path))
    assert (config.model.name, config.model.dim, config.train.lr) == ("transe", 64, 0.01)
    assert Config.from_dict(config.to_dict()).to_dict() == config.to_dict()
    path.write_text("modle:\n  dim: 3\n")
    with pytest.raises(ValueError, match="unknown section 'modle'"):
        Config.from_yaml(str(path))


def test_demo_prints_comparison_and_per_relation_table(tsv_folder, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", str(tsv_folder), "--out", str(out), "--no-progress", "--set", *SMALL]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "test", "MRR"]
    assert lines[2].startswith("transe") and lines[3].startswith("rotate")
    assert "Test MRR per relation" in text and "married_to" in text
    assert (out / "comparison.md").read_text().strip() == text.strip()
    for model in ("transe", "rotate"):
        assert (out / model / "metrics.json").exists()


def test_predict_a_queries_file_from_a_4_bit_run(tsv_folder, tmp_path, capsys):
    run, packed = str(tmp_path / "run"), str(tmp_path / "run-4bit")
    assert main(["train", "--dataset", str(tsv_folder), "--model", "rotate", "--out", run, "--no-progress",
                 "--set", *SMALL]) == 0
    assert main(["quantize", run, "--bits", "4", "--out", packed]) == 0
    capsys.readouterr()
    queries = tmp_path / "queries.tsv"
    queries.write_text("person_0\tlives_in\t?\n?\tmarried_to\tperson_1\n")
    out = tmp_path / "answers.tsv"
    assert main(["predict", packed, "--queries", str(queries), "--top", "3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "head\trelation\ttail\trank\tscore\tknown" and len(lines) == 1 + 2 * 3
    assert lines[1].startswith("person_0\tlives_in\t") and lines[4].split("\t")[1:4] == ["married_to", "person_1", "1"]
    assert "2 queries in" in capsys.readouterr().err
    assert main(["predict", packed, "--queries", str(queries), "--top", "2", "--format", "json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert answers[1]["query"] == {"head": None, "relation": "married_to", "tail": "person_1"}
    assert len(answers[1]["answers"]) == 2 and answers[1]["source"].endswith("line 2")
    queries.write_text("person_0\tlives_in\t?\nperson_0\tno_relation\t?\n")
    assert main(["predict", packed, "--queries", str(queries)]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["predict", packed, "--queries", str(queries), "--relation", "lives_in"]) == 2
