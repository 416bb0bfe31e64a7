"""Training: end to end on the generated KG, resume equality, NaN handling, run-folder safety."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import small_config, train_interrupted

from kbit_dgl.config import Config
from kbit_dgl.errors import RunFolderError, TrainingDivergedError
from kbit_dgl.eval import evaluate
from kbit_dgl.io import atomic_save, load_saved
from kbit_dgl.runs import model_from_config
from kbit_dgl.train import steps, trainer
from kbit_dgl.train.trainer import train


def test_training_beats_untrained_by_a_wide_margin(small_kg, tmp_path):
    config = small_config("rotate", epochs=40, valid_every=20, batch_size=64)
    torch.manual_seed(config.train.seed)
    untrained = evaluate(model_from_config(config, small_kg), small_kg, "test")["mrr"]
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert untrained < 0.1
    assert metrics["test"]["mrr"] > untrained + 0.3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["mrr"] == metrics["test"]["mrr"] and saved["protocol"] == "filtered"
    for key in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
        assert key in saved["valid"] and key in saved["test"]
    assert saved["train_triples_per_second"] > 0 and saved["train_seconds"] > 0
    assert Config.from_yaml(str(tmp_path / "run" / "config.yaml")).to_dict() == config.to_dict()


def test_resume_equals_uninterrupted_run(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=5, negative_chunk_size=1)  # per-triple negatives
    reference = train(config, small_kg, str(tmp_path / "whole"), progress=False)

    train_interrupted(config, small_kg, tmp_path / "split", monkeypatch)
    assert not os.path.exists(tmp_path / "split" / "metrics.json")
    resumed = train(config, small_kg, str(tmp_path / "split"), resume=True, progress=False)

    whole = load_saved(tmp_path / "whole" / "checkpoint.pt")["model"]
    split = load_saved(tmp_path / "split" / "checkpoint.pt")["model"]
    for key in whole:
        assert torch.equal(whole[key], split[key]), key
    assert resumed["test"] == reference["test"]
    assert resumed["history"] == reference["history"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=6)
    real_step, calls = steps.train_step, {"n": 0}

    def diverging_step(*args, **kwargs):
        calls["n"] += 1
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(steps, "train_step", diverging_step)
    with pytest.raises(TrainingDivergedError, match="loss became nan .*checkpoint.pt"):
        train(config, small_kg, str(tmp_path / "run"), progress=False)
    checkpoint = load_saved(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["state"]["epoch"] >= 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


def test_existing_run_folder_is_not_overwritten(small_kg, tmp_path):
    config = small_config("transe", epochs=2)
    run = str(tmp_path / "run")
    train(config, small_kg, run, progress=False)
    before = (tmp_path / "run" / "metrics.json").read_text()
    with pytest.raises(RunFolderError, match="--resume .*--overwrite"):
        train(config, small_kg, run, progress=False)
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    train(config, small_kg, run, overwrite=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(config, small_kg, str(tmp_path / "empty"), resume=True, progress=False)


def test_margin_loss_and_bilinear_models_train(small_kg, tmp_path):
    for name, loss in (("transe_l2", "margin"), ("complex", "self_adversarial")):
        config = small_config(name, epochs=2, loss=loss)
        metrics = train(config, small_kg, str(tmp_path / name), progress=False)
        assert 0 < metrics["test"]["mrr"] <= 1


def test_learning_rate_decays_on_plateau_and_resumes(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=20, valid_every=1, lr=0.01, lr_decay=0.1, lr_decay_patience=2)
    real_evaluate, calls = trainer.evaluate_model, {"n": 0}
    # decays after 2 bad validations (epochs 3 and 6); after the 2nd (the last), 2 more bad ones stop it
    valid_mrrs = [0.5, 0.4, 0.4, 0.6, 0.3, 0.3, 0.3, 0.3]

    def scripted_evaluate(model, kg, split, cfg, per_relation=False, progress=False):
        calls["n"] += 1
        if calls["n"] <= len(valid_mrrs):
            return {"mrr": valid_mrrs[calls["n"] - 1], "hits@10": 0.0, "protocol": "filtered"}
        return real_evaluate(model, kg, split, cfg, per_relation=per_relation)

    monkeypatch.setattr(trainer, "evaluate_model", scripted_evaluate)
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["stopped_early"] and metrics["epochs"] == 8 and metrics["best_epoch"] == 4
    assert [d["epoch"] for d in metrics["lr_decays"]] == [3, 6]
    assert metrics["lr_decays"][-1]["lr"] == pytest.approx(1e-4)
    checkpoint = load_saved(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # resume keeps the rate

    config.train.lr_decay = 1.5
    with pytest.raises(ValueError, match="lr_decay must be in"):
        train(config, small_kg, str(tmp_path / "bad"), progress=False)


def test_scheduled_learning_rate_decay_ignores_plateaus(small_kg, tmp_path, monkeypatch):
    config = small_config("transe", epochs=6, valid_every=1, lr=0.01, lr_decay=0.1, lr_decay_epochs=[2, 4],
                          patience=10)
    real_evaluate, calls = trainer.evaluate_model, {"n": 0}

    # 6 equal validations: plateau decays would fire
    def flat_valid(model, kg, split, cfg, per_relation=False, progress=False):
        calls["n"] += 1
        if calls["n"] <= 6:
            return {"mrr": 0.5, "hits@10": 0.0, "protocol": "filtered"}
        return real_evaluate(model, kg, split, cfg, per_relation=per_relation)

    monkeypatch.setattr(trainer, "evaluate_model", flat_valid)
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["epochs"] == 6 and not metrics["stopped_early"]
    assert [d["epoch"] for d in metrics["lr_decays"]] == [2, 4]
    checkpoint = load_saved(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)

    config.train.lr_decay = 0.0
    with pytest.raises(ValueError, match="lr_decay_epochs"):
        train(config, small_kg, str(tmp_path / "bad"), progress=False)


def _with_inverse_triples(kg):
    """The KG with every triple's inverse (t, r + R, h) added to each split and R inverse relations."""
    import dataclasses

    R = kg.num_relations

    def both(triples):
        return torch.cat([triples, torch.stack([triples[:, 2], triples[:, 1] + R, triples[:, 0]], 1)])

    return dataclasses.replace(kg, train=both(kg.train), valid=both(kg.valid), test=both(kg.test),
                               num_relations=2 * R, relation_names=kg.relation_names + [f"{n}^-1" for n in
                                                                                        kg.relation_names],
                               _filter=None)


@pytest.mark.parametrize("name", ["transe_l2", "rotate"])
def test_reciprocal_head_queries_are_tail_queries_with_the_inverse_relation(small_kg, name):
    from kbit_dgl.eval.ranking import filtered_ranks
    from kbit_dgl.models.model import build_model

    torch.manual_seed(0)
    R, n = small_kg.num_relations, len(small_kg.test)
    model = build_model(name, small_kg.num_entities, R, 32, 6.0, reciprocal=True)
    assert model.relation.weight.shape[0] == 2 * R
    doubled = _with_inverse_triples(small_kg)
    plain = build_model(name, small_kg.num_entities, 2 * R, 32, 6.0)
    plain.load_state_dict(model.state_dict())
    ranks = filtered_ranks(model, small_kg.test, small_kg.filter_index)
    reference = filtered_ranks(plain, doubled.test, doubled.filter_index)["tail"]
    assert torch.equal(ranks["tail"], reference[:n]) and torch.equal(ranks["head"], reference[n:])


def test_reciprocal_training_uses_inverse_rows_and_quantizes(small_kg, tmp_path):
    from kbit_dgl.quant import QuantSpec
    from kbit_dgl.runs import load_any_run, quantize_run

    config = small_config("transe_l2", epochs=20, valid_every=10, batch_size=64)
    config.model.reciprocal = "true"
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=False)
    assert metrics["test"]["mrr"] > 0.15  # untrained: about 0.02
    relation = load_saved(tmp_path / "run" / "model.pt")["model"]["relation.weight"]
    assert relation.shape[0] == 2 * small_kg.num_relations
    _, _, trained = load_any_run(str(tmp_path / "run"), small_kg)
    assert evaluate(trained, small_kg, "test")["mrr"] == metrics["test"]["mrr"]
    quantize_run(str(tmp_path / "run"), str(tmp_path / "q8"), QuantSpec(bits=8, dtype="int", block=32))
    _, _, quantized = load_any_run(str(tmp_path / "q8"), small_kg)
    assert quantized.reciprocal and quantized.num_relations == small_kg.num_relations
    assert abs(evaluate(quantized, small_kg, "test")["mrr"] - metrics["test"]["mrr"]) < 0.02

    config.model.encoder = "rgcn"
    with pytest.raises(ValueError, match="reciprocal is for shallow models"):
        model_from_config(config, small_kg)


def test_run_configs_written_before_a_key_existed_keep_their_behaviour(tmp_path):
    from kbit_dgl.config import reciprocal_relations

    path = tmp_path / "config.yaml"
    path.write_text("model:\n  name: transe\ntrain:\n  lr: 0.01\n")
    user, run = Config.from_yaml(str(path)), Config.from_yaml(str(path), run=True)
    assert reciprocal_relations(user.model) and user.train.lr_decay == 0.1  # a user's file: today's defaults
    assert not reciprocal_relations(run.model) and run.train.lr_decay == 0.0  # an old run folder: as trained
    user.model.encoder = "rgcn"
    assert not reciprocal_relations(user.model)  # auto: off with an encoder
    user.model.reciprocal = "sometimes"
    with pytest.raises(ValueError, match="auto, true or false"):
        reciprocal_relations(user.model)


def test_validation_records_the_loss_of_the_epoch_just_finished(small_kg, tmp_path, capsys):
    """Issue #28.1: each validation line and history entry carry the epoch's loss, not the reset sums (0)."""
    import re

    config = small_config("transe", epochs=3, valid_every=1)
    metrics = train(config, small_kg, str(tmp_path / "run"), progress=True)
    logged = {int(epoch): float(loss) for epoch, loss in
              re.findall(r"epoch (\d+) loss ([0-9.]+)", (tmp_path / "run" / "train.log").read_text())}
    assert sorted(logged) == [1, 2, 3]
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]
    for entry in metrics["history"]:
        assert entry["loss"] > 0
        assert entry["loss"] == pytest.approx(logged[entry["epoch"]], abs=1e-5)
    shown = {int(epoch): float(loss) for epoch, loss in
             re.findall(r"epoch (\d+): loss ([0-9.]+)  valid MRR", capsys.readouterr().err)}
    assert sorted(shown) == [1, 2, 3]
    for epoch, loss in shown.items():
        assert loss > 0 and loss == pytest.approx(logged[epoch], abs=1e-4)


def test_checkpoint_without_last_epoch_loss_resumes(small_kg, tmp_path):
    """A checkpoint written before ``last_epoch_loss`` was kept resumes, and records the next epoch's loss."""
    config = small_config("transe", epochs=2, valid_every=1)
    train(config, small_kg, str(tmp_path / "run"), progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = load_saved(path)
    checkpoint["state"].pop("last_epoch_loss", None)
    atomic_save(str(path), checkpoint)
    (tmp_path / "run" / "metrics.json").unlink()
    config.train.max_epochs = 3
    metrics = train(config, small_kg, str(tmp_path / "run"), resume=True, progress=False)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][-1]["loss"] > 0
