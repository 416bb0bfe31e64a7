"""The CLI is a thin layer over :mod:`kbit_dgl.api`: for the same request both build the same config
(one builder, :func:`kbit_dgl.api.make_config`; one resume path, :func:`kbit_dgl.api.resume_config`),
and cli.py imports nothing of the library below the API."""
from __future__ import annotations

import ast
import os
import sys
import types

import pytest

import kbit_dgl.cli as cli
from kbit_dgl import api
from kbit_dgl.config import Config
from kbit_dgl.errors import ConfigError

CLI_PATH = os.path.join(os.path.dirname(cli.__file__), "cli.py")

#: what cli.py may import from kbit_dgl: the API, and the config and errors it speaks in
ALLOWED = {"kbit_dgl.api", "kbit_dgl.config", "kbit_dgl.errors"}
#: further kbit_dgl modules cli.py genuinely needs, each with its reason
EXCEPTIONS = {
    "kbit_dgl.io": "atomic_write_text: the CLI's own printed output saved to a file (predict --queries --out, "
                   "demo's comparison.md) is written whole or not at all",
    "kbit_dgl.settings": "check_environment: a bad KBIT_DGL_* switch is refused before any command runs "
                         "(settings.py is the bottom layer, beside config and errors)",
}


class _Stop(Exception):
    """Raised by the stand-in trainer once it has the config (the demo would go on to compare metrics)."""


@pytest.fixture
def captured(monkeypatch):
    """The configs the CLI and the API hand to training, with no dataset read and nothing trained."""
    configs = []

    def train_folder(config, kg, out, resume=False, overwrite=False, progress=True):
        configs.append((config.to_dict(), out, resume))
        if os.environ.get("_KBIT_TEST_STOP"):
            raise _Stop
        return None  # as a torchrun rank other than 0: nothing to print

    fake_kg = types.SimpleNamespace(name="fake", summary=lambda: "no triples", relation_info={})
    monkeypatch.setattr(api, "train_folder", train_folder)
    monkeypatch.setattr(api, "load_dataset", lambda *a, **k: fake_kg)
    monkeypatch.setattr(api, "load_run", lambda out, kg=None, **k: api.Run(out, Config(), fake_kg, None))
    return configs


def cli_config(captured, argv):
    assert cli.main(argv) == 0
    return captured.pop()[0]


def test_named_options_build_the_config_of_make_config(captured, tmp_path):
    out = str(tmp_path / "run")
    built = cli_config(captured, ["train", "--dataset", "nations", "--model", "rotate", "--data-dir", "/data/kg",
                                  "--encoder", "rgcn", "--out", out, "--no-progress"])
    assert built == api.make_config("nations", "rotate", data__data_dir="/data/kg", encoder="rgcn").to_dict()
    assert built["model"]["encoder"] == "rgcn" and built["data"]["data_dir"] == "/data/kg"
    api.train(dataset="nations", model="rotate", out=out, data_dir="/data/kg", encoder="rgcn")
    assert captured.pop()[0] == built  # api.train builds it the same way


def test_a_config_file_then_named_options_then_set(captured, tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text("model: {name: distmult, dim: 32}\ntrain: {lr: 0.01, batch_size: 128}\n")
    argv = ["train", "--config", str(path), "--model", "transe", "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "train.lr=0.002", "model.dim=16"]
    built = cli_config(captured, argv)
    assert built == api.make_config(model="transe", config=str(path), sets=["train.lr=0.002", "model.dim=16"]).to_dict()
    assert built == api.make_config(model="transe", config=str(path), lr=0.002, dim=16).to_dict()
    assert (built["model"]["name"], built["model"]["dim"], built["train"]["lr"], built["train"]["batch_size"]) == \
        ("transe", 16, 0.002, 128)
    # --set is last: it wins over --model, as sets= wins over model= and the keywords
    built = cli_config(captured, [*argv, "model.name=rotate"])
    assert built["model"]["name"] == "rotate"
    assert built == api.make_config(model="transe", config=str(path), sets=["train.lr=0.002", "model.dim=16",
                                                                           "model.name=rotate"], lr=1.0).to_dict()


def test_num_procs_wins_over_set(captured, tmp_path):
    built = cli_config(captured, ["train", "--out", str(tmp_path / "run"), "--no-progress", "--num-procs", "2",
                                  "--set", "train.num_procs=3"])
    assert built["train"]["num_procs"] == 2
    assert built == api.make_config(sets=["train.num_procs=3", "train.num_procs=2"]).to_dict()


def test_resume_with_changes_reads_the_run_and_applies_them_alike(captured, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = api.make_config("nations", "rotate", dim=24, max_epochs=5)
    (run / "config.yaml").write_text(saved.to_yaml())
    # --resume reads the run's config: --model / --dataset are not part of a resume
    built = cli_config(captured, ["train", "--out", str(run), "--resume", "--no-progress", "--model", "transe",
                                  "--set", "train.max_epochs=9", "train.lr=0.01"])
    assert built == api.resume_config(str(run), sets=["train.max_epochs=9", "train.lr=0.01"]).to_dict()
    assert built == api.resume_config(str(run), max_epochs=9, lr=0.01).to_dict()
    assert (built["model"]["name"], built["model"]["dim"], built["train"]["max_epochs"]) == ("rotate", 24, 9)
    api.train(out=str(run), resume=True, model="ignored-on-resume", max_epochs=9, lr=0.01)
    assert captured.pop() == (built, str(run), True)


def test_tune_and_demo_build_with_the_same_builder(captured, monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(api, "tune", lambda config, *a, **k: seen.setdefault("tune", config.to_dict()) and {})
    assert cli.main(["tune", "--dataset", "kinship", "--model", "complex", "--out", str(tmp_path / "study"),
                     "--set", "model.dim=8"]) == 0
    assert seen["tune"] == api.make_config("kinship", "complex", sets=["model.dim=8"]).to_dict()
    monkeypatch.setenv("_KBIT_TEST_STOP", "1")
    with pytest.raises(_Stop):
        cli.main(["demo", "--models", "pairre", "--out", str(tmp_path / "demo"), "--set", "model.dim=8"])
    assert captured.pop()[0] == api.make_config("synthetic", "pairre", sets=["model.dim=8"]).to_dict()


def test_errors_are_the_builders_own(captured, tmp_path, capsys):
    with pytest.raises(ConfigError) as error:
        api.make_config(sets=["model.nonsense=1"])
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--set", "model.nonsense=1"]) == 2
    assert str(error.value) in capsys.readouterr().err
    with pytest.raises(ConfigError, match="say which"):  # the keyword names' ambiguity error stays
        api.make_config(batch_size=64)
    assert not captured


def _kbit_imports(tree: ast.AST):
    """``(module, line)`` of every import in cli.py (top level and inside functions)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module, node.lineno
            elif node.module:
                yield "kbit_dgl." + node.module, node.lineno
            else:  # from . import api
                for alias in node.names:
                    yield "kbit_dgl." + alias.name, node.lineno


def test_cli_imports_only_the_api_config_and_errors():
    with open(CLI_PATH, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), CLI_PATH)
    wrong = []
    for module, line in _kbit_imports(tree):
        top = module.split(".")[0]
        if module == "__future__" or (top != "kbit_dgl" and top in sys.stdlib_module_names):
            continue
        if module not in ALLOWED and module not in EXCEPTIONS:
            wrong.append(f"cli.py line {line}: {module}")
    assert not wrong, "the CLI reaches past kbit_dgl.api: " + "; ".join(wrong)
