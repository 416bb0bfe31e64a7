"""Issue #12: NaN never scores, run folders that cannot lie, config checked before disk, errors a user can act on.

Each test here failed before the fix it guards.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from conftest import copy_run, small_config, train_cli_run

from kbit_dgl import io as kbit_io
from kbit_dgl.cli import main
from kbit_dgl.config import Config
from kbit_dgl.errors import ConfigError, NonFiniteError, RunFolderError, TrainingDivergedError
from kbit_dgl.eval import evaluate, rank_from_scores
from kbit_dgl.io import atomic_save, load_saved
from kbit_dgl.runs import model_from_config, run_lock
from kbit_dgl.train import optim, trainer
from kbit_dgl.train.trainer import train

pytestmark = pytest.mark.shallow  # DGL-free: CI runs it under the newest torch too (.ci/newest)

SMALL = ["model.dim=16", "train.batch_size=128", "train.num_negatives=16", "train.max_epochs=2",
         "train.valid_every=1"]


@pytest.fixture(scope="module")
def trained_run(tsv_folder, tmp_path_factory):
    """A small trained TransE run folder on the generated TSV dataset (copy it before changing it)."""
    return train_cli_run(tsv_folder, tmp_path_factory.mktemp("runs") / "run", SMALL)


_copy = copy_run


def _evaluate_json(run, capsys, *extra):
    capsys.readouterr()
    assert main(["evaluate", run, "--split", "test", *extra]) == 0
    return json.loads(capsys.readouterr().out)


# ---- 1. NaN / inf never scores --------------------------------------------------------------------

def test_nan_target_scores_get_the_worst_rank_and_nan_candidates_count_against_it():
    scores = torch.tensor([[float("nan"), 1.0, 2.0, 3.0], [0.5, float("nan"), 0.1, 0.2]])
    ranks = rank_from_scores(scores, torch.tensor([0, 0]))
    assert ranks.tolist() == [4.0, 2.0]  # NaN target: below all 3 others; NaN candidate: above the target


def test_a_nan_model_does_not_evaluate(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    path = os.path.join(run, "model.pt")
    payload = load_saved(path)
    payload["model"]["entity.weight"][3] = float("nan")
    atomic_save(path, payload)
    assert main(["evaluate", run]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    assert main(["predict", run, "--head", "person_0", "--relation", "lives_in"]) in (0, 2)  # row 3 may not be read


def test_evaluate_refuses_non_finite_scores(small_kg):
    model = model_from_config(small_config("transe"), small_kg)
    with torch.no_grad():
        model.relation.weight[:] = float("inf")
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        evaluate(model, small_kg, "valid")


def test_non_finite_weights_are_never_validated_or_saved(small_kg, tmp_path, monkeypatch):
    """The loss of the last step is finite, the update it makes is not: nothing may be saved from it."""
    real_make, calls = optim.make_optimizer, {"n": 0}
    steps_per_epoch = -(-len(small_kg.train) // small_config("transe").train.batch_size)

    def poisoned_optimizer(model, name, lr):
        optimizer = real_make(model, name, lr)
        real_step = optimizer.step

        def step():
            real_step()
            calls["n"] += 1
            if calls["n"] == steps_per_epoch:  # the epoch's last update
                with torch.no_grad():
                    model.entity.weight[0] = float("inf")
        optimizer.step = step
        return optimizer

    monkeypatch.setattr(optim, "make_optimizer", poisoned_optimizer)
    config = small_config("transe", epochs=1)
    with pytest.raises(TrainingDivergedError, match="NaN or infinite"):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert not any(os.path.exists(tmp_path / "run" / name) for name in ("model.pt", "checkpoint.pt", "metrics.json"))


def test_an_infinite_learning_rate_is_refused_before_anything_is_written(tsv_folder, tmp_path, capsys):
    out = tmp_path / "inf"
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", str(out), "--no-progress",
                 "--set", "train.lr=.inf", "train.max_epochs=1"]) == 2
    assert "train.lr must be finite" in capsys.readouterr().err
    assert not out.exists()


# ---- 2. run folders cannot lie --------------------------------------------------------------------

def test_overwrite_removes_a_leftover_quantized_model(trained_run, tsv_folder, tmp_path, capsys):
    quantized = str(tmp_path / "q")
    assert main(["quantize", trained_run, "--bits", "4", "--out", quantized]) == 0
    # train over the quantized folder: its model.kbit.pt must not survive to be evaluated
    assert main(["train", "--dataset", str(tsv_folder), "--model", "distmult", "--out", quantized, "--overwrite",
                 "--no-progress", "--set", *SMALL]) == 0
    assert sorted(os.listdir(quantized)) == [".lock", "checkpoint.pt", "config.yaml", "entities.dict",
                                             "metrics.json", "model.pt", "relations.dict", "train.log"]
    metrics = json.loads(open(os.path.join(quantized, "metrics.json")).read())
    assert _evaluate_json(quantized, capsys)["mrr"] == pytest.approx(metrics["test"]["mrr"])
    assert "quant" not in _evaluate_json(quantized, capsys)


def test_quantize_overwrite_into_a_trained_run_leaves_no_model_pt(trained_run, tmp_path, capsys):
    other = _copy(trained_run, tmp_path, "other")
    assert main(["quantize", trained_run, "--bits", "8", "--out", other, "--overwrite"]) == 0
    assert not os.path.exists(os.path.join(other, "model.pt"))
    assert "quant" in _evaluate_json(other, capsys)


def test_overwrite_refuses_files_no_run_wrote(trained_run, tsv_folder, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    with open(os.path.join(run, "notes.txt"), "w") as handle:
        handle.write("mine")
    assert main(["train", "--dataset", str(tsv_folder), "--out", run, "--overwrite", "--no-progress",
                 "--set", *SMALL]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert os.path.exists(os.path.join(run, "model.pt")) and os.path.exists(os.path.join(run, "notes.txt"))


def test_a_refused_resume_override_changes_nothing(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    before = {name: open(os.path.join(run, name), "rb").read() for name in ("config.yaml", "checkpoint.pt")}
    for override in ("model.dim=32", "train.optimizer=sparse_adam", "model.name=rotate"):
        assert main(["train", "--out", run, "--resume", "--no-progress", "--set", override]) == 2
        assert "--resume cannot change" in capsys.readouterr().err
    assert {name: open(os.path.join(run, name), "rb").read() for name in before} == before
    _evaluate_json(run, capsys)
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3"]) == 0


def test_a_resume_learning_rate_is_applied_and_recorded(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3",
                 "train.lr=0.5"]) == 0
    metrics = json.loads(open(os.path.join(run, "metrics.json")).read())
    assert {"epoch": 2, "lr": 0.5, "reason": "resume"} in metrics["lr_decays"]
    assert metrics["resume_changes"][0]["train.lr"][1] == 0.5
    assert yaml.safe_load(open(os.path.join(run, "config.yaml")))["train"]["lr"] == 0.5
    checkpoint = load_saved(os.path.join(run, "checkpoint.pt"))
    assert all(group["lr"] == 0.5 for group in checkpoint["optimizer"]["param_groups"])


def test_two_writers_of_one_run_folder_cannot_run_at_once(small_kg, tmp_path):
    run = str(tmp_path / "locked")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kbit_dgl.runs import run_lock
        with run_lock({run!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match="another kbit-dgl process"):
            train(small_config("transe", epochs=1), small_kg, run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):  # released when the holder died (kill -9 included)
        pass
    train(small_config("transe", epochs=1), small_kg, run, progress=False, overwrite=True)


def test_a_run_folder_records_its_id_maps_and_survives_resorted_files(tsv_folder, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tsv_folder, data)
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", str(data), "--model", "transe", "--out", run, "--no-progress",
                 "--set", *SMALL]) == 0
    reference = _evaluate_json(run, capsys)["mrr"]
    assert open(os.path.join(run, "entities.dict")).readline().count("\t") == 1
    for split in ("train", "valid", "test"):  # re-sorting assigns every name another id
        path = data / f"{split}.txt"
        path.write_text("".join(sorted(path.read_text().splitlines(keepends=True), reverse=True)))
    assert _evaluate_json(run, capsys)["mrr"] == reference


def test_a_model_file_of_another_run_is_refused(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    names = open(os.path.join(run, "entities.dict")).read().splitlines()
    # the folder's id maps now differ from those model.pt was trained with, as if it came from another run
    names[0], names[1] = names[0].split("\t")[0] + "\t" + names[1].split("\t")[1], \
        names[1].split("\t")[0] + "\t" + names[0].split("\t")[1]
    with open(os.path.join(run, "entities.dict"), "w") as handle:
        handle.write("\n".join(names) + "\n")
    assert main(["evaluate", run]) == 2
    assert "another run" in capsys.readouterr().err


# ---- 3. config checked before disk ----------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("model.dim=0", "model.dim must be >= 1"), ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.num_negatives=0", "train.num_negatives must be >= 1"),
    ("train.valid_every=0", "train.valid_every must be >= 1"), ("model.gamma=.nan", "model.gamma must be finite"),
    ("train.lr=-1", "train.lr must be finite and > 0"), ("train.loss=hinge", "train.loss must be one of"),
    ("eval.protocol=raw", "eval.protocol must be one of"),
])
def test_bad_values_are_refused_before_the_folder_exists(tsv_folder, tmp_path, capsys, override, message):
    out = tmp_path / "bad"
    assert main(["train", "--dataset", str(tsv_folder), "--out", str(out), "--no-progress",
                 "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_odd_dims_for_complex_models_and_a_typo_in_the_model_leave_nothing_behind(tsv_folder, tmp_path, capsys):
    out = tmp_path / "typo"
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transee", "--out", str(out)]) == 2
    assert "unknown model 'transee'" in capsys.readouterr().err
    assert main(["train", "--dataset", str(tsv_folder), "--model", "complex", "--out", str(out),
                 "--set", "model.dim=15"]) == 2
    assert "must be even" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", str(out), "--no-progress",
                 "--set", *SMALL]) == 0  # the corrected command runs


def test_exponent_floats_parse_in_set_and_yaml(tmp_path):
    config = Config()
    config.apply_overrides(["train.lr=1e-3", "model.gamma=1e6"])
    assert config.train.lr == 1e-3 and config.model.gamma == 1e6
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-4\n  regularization: 1E-6\n")
    config = Config.from_yaml(str(path))
    assert config.train.lr == 5e-4 and config.train.regularization == 1e-6


def test_bad_yaml_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\n  batch_size: [1, 2\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line " in err and "not valid YAML" in err


# ---- 4. errors a user can act on ------------------------------------------------------------------

@pytest.mark.parametrize("name, damage", [
    ("model.pt", "empty"), ("model.pt", "truncate"), ("model.pt", "foreign"), ("config.yaml", "empty"),
    ("config.yaml", "garbage"),
])
def test_damaged_run_files_are_named(trained_run, tmp_path, capsys, name, damage):
    run = _copy(trained_run, tmp_path)
    path = os.path.join(run, name)
    data = open(path, "rb").read()
    content = {"empty": b"", "truncate": data[: len(data) // 2], "foreign": None,
               "garbage": b"train: [unclosed\n"}[damage]
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        open(path, "wb").write(content)
    assert main(["evaluate", run]) == 2
    err = capsys.readouterr().err
    assert path in err and "Traceback" not in err


def test_damaged_checkpoint_and_packed_model_are_named(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    open(os.path.join(run, "checkpoint.pt"), "wb").write(b"\x80\x02garbage")
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3"]) == 2
    assert os.path.join(run, "checkpoint.pt") in capsys.readouterr().err
    quantized = str(tmp_path / "q")
    assert main(["quantize", trained_run, "--bits", "4", "--out", quantized]) == 0
    packed = os.path.join(quantized, "model.kbit.pt")
    open(packed, "wb").write(open(packed, "rb").read()[:100])
    assert main(["evaluate", quantized]) == 2
    assert packed in capsys.readouterr().err


def test_predict_top_must_be_positive(trained_run, capsys):
    for top in ("0", "-1"):
        assert main(["predict", trained_run, "--head", "person_0", "--relation", "lives_in", "--top", top]) == 2
        assert "--top must be >= 1" in capsys.readouterr().err


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(small_kg, tmp_path, monkeypatch):
    run = tmp_path / "full"
    real_save, calls = kbit_io.save_file, {"n": 0}

    def save(tensors, path, metadata=None):
        if '"optimizer"' in (metadata or {}).get("kbit_dgl", ""):
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint: the disk is full half-way through
                with open(path, "wb") as partial:
                    partial.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(kbit_io, "save_file", save)
    with pytest.raises(OSError, match="checkpoint.pt: could not be written .*previous version"):
        train(small_config("transe", epochs=3, valid_every=1), small_kg, str(run), progress=False)
    monkeypatch.setattr(kbit_io, "save_file", real_save)
    assert load_saved(run / "checkpoint.pt")["state"]["epoch"] == 1
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]
    train(small_config("transe", epochs=3, valid_every=1), small_kg, str(run), resume=True, progress=False)


def test_leftover_temporary_files_are_cleaned_up(trained_run, tmp_path):
    run = _copy(trained_run, tmp_path)
    leftover = os.path.join(run, ".checkpoint.pt.abc123.tmp")
    open(leftover, "wb").write(b"half a checkpoint")
    assert main(["train", "--out", run, "--resume", "--no-progress", "--set", "train.max_epochs=3"]) == 0
    assert not os.path.exists(leftover)


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    """cli.main reports the errors a user can act on and lets a bare ValueError (a bug) through."""
    import kbit_dgl.cli as cli

    def broken(args):
        raise ValueError("a bug")
    monkeypatch.setattr(cli, "cmd_evaluate", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["evaluate", str(tmp_path)])


def test_config_errors_are_config_errors():
    with pytest.raises(ConfigError):
        Config().apply_overrides(["model.nope=1"])


# ---- 6 / 7. relayering details and throughput -----------------------------------------------------

def test_compile_failure_falls_back_for_that_kernel_only(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    from kbit_dgl.models import kernels

    monkeypatch.setenv("KBIT_DGL_COMPILE", "1")
    monkeypatch.setenv("KBIT_DGL_NATIVE", "0")  # the compiled path is the one under test
    monkeypatch.setattr(kernels, "_BROKEN", {})

    class NoCompiler(BackendCompilerFailed):
        def __init__(self):  # BackendCompilerFailed's own arguments differ between torch releases
            RuntimeError.__init__(self, "no C++ compiler")

    def failing(*args):
        raise NoCompiler()
    monkeypatch.setattr(kernels, "_compiled", lambda name, function=None: failing)
    query, candidates = torch.randn(3, 8), torch.randn(5, 8)
    with pytest.warns(UserWarning, match="torch.compile failed for the l1 kernel"):
        result = kernels.pairwise_l1(query, candidates)
    assert torch.allclose(result, (query[:, None] - candidates[None]).abs().sum(-1))
    assert list(kernels._BROKEN) == ["l1"] and os.environ["KBIT_DGL_COMPILE"] == "1"
    with pytest.raises(RuntimeError):  # a genuine error (bad shapes) propagates and marks nothing
        kernels.pairwise_complex_l1(query, query, torch.randn(5, 7), torch.randn(5, 7))
    assert list(kernels._BROKEN) == ["l1"]


def test_metrics_report_a_steady_state_rate_beside_the_total(small_kg, tmp_path):
    metrics = train(small_config("transe", epochs=2, batch_size=64), small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["steps"] > trainer.WARMUP_STEPS and metrics["warmup_seconds"] > 0
    assert metrics["train_triples_per_second_steady"] > 0


def test_data_warnings_reach_the_log_and_metrics(tsv_folder, tmp_path):
    data = tmp_path / "dup"
    shutil.copytree(tsv_folder, data)
    train_lines = (data / "train.txt").read_text().splitlines(keepends=True)
    (data / "train.txt").write_text("".join(train_lines + train_lines[:3]))  # 3 duplicate triples
    (data / "test.txt").write_text((data / "test.txt").read_text() + train_lines[5])  # a train triple in test
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--model", "transe", "--out", str(run), "--no-progress",
                 "--set", *SMALL]) == 0
    warnings = json.loads((run / "metrics.json").read_text())["data_warnings"]
    assert any("duplicate" in w for w in warnings) and any("train" in w and "test" in w for w in warnings)
    assert "data: " in (run / "train.log").read_text()


def test_run_finished_reads_the_metrics_file(trained_run, tmp_path):
    from kbit_dgl.runs import run_finished

    assert run_finished(trained_run) and not run_finished(str(tmp_path / "nothing"))
    broken = _copy(trained_run, tmp_path, "broken")
    open(os.path.join(broken, "metrics.json"), "w").write("{not json")
    assert not run_finished(broken)
