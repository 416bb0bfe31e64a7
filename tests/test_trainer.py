"""The training core as an object (issue #28): the Trainer's parts, the versioned TrainState that
checkpoints hold (older checkpoints resume), the one launcher and the run-time settings decided once,
hooks in every mode or refused, and no module writing another module's globals."""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import pytest
import torch
from conftest import small_config

from kbit_dgl.errors import ConfigError, RunFileError
from kbit_dgl.io import atomic_save, load_saved
from kbit_dgl.runtime import launch_mode, resolve_runtime
from kbit_dgl.train.distributed import Group, LocalGroup
from kbit_dgl.train.sampling import epoch_permutation
from kbit_dgl.train.state import VERSION, TrainState
from kbit_dgl.train.trainer import Trainer, train

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kbit_dgl"

# the keys the trainer's state dict had before TrainState (version 1); written only when set
VERSION_1_KEYS = ("epoch", "step", "best_valid_mrr", "best_epoch", "bad_validations", "train_seconds",
                  "warmup_seconds", "warmup_triples", "history", "stopped_early", "batch_in_epoch", "epoch_loss",
                  "epoch_triples", "epoch_seconds", "stopped_at_max_steps", "epoch_generator", "last_epoch_loss",
                  "best_step", "bad_at_decay", "best_valid")


def _as_version_1(path) -> None:
    """Rewrite the checkpoint at ``path`` as the trainer wrote it before TrainState: no version, only
    the keys it had set."""
    checkpoint = load_saved(path)
    state = checkpoint["state"]
    assert state.pop("version") == VERSION
    checkpoint["state"] = {key: value for key, value in state.items() if key in VERSION_1_KEYS
                           and not (key == "best_valid" and value is None)}
    atomic_save(str(path), checkpoint)


# --- TrainState --------------------------------------------------------------------------------

def test_train_state_round_trips_and_checkpoints_carry_its_version(small_kg, tmp_path):
    state = TrainState(epoch=3, step=30, history=[{"epoch": 2, "step": 20, "loss": 0.5, "valid_mrr": 0.1}],
                       epoch_generator=torch.Generator().manual_seed(1).get_state())
    again = TrainState.from_dict(state.to_dict(), "x")
    assert again.epoch == 3 and again.history == state.history and torch.equal(again.epoch_generator,
                                                                               state.epoch_generator)
    train(small_config("transe", epochs=1), small_kg, str(tmp_path / "run"), progress=False)
    saved = load_saved(tmp_path / "run" / "checkpoint.pt")["state"]
    assert saved["version"] == VERSION and set(saved) == {"version"} | {f.name for f in dataclasses.fields(TrainState)}


def test_a_version_1_state_takes_the_defaults_of_what_it_lacks():
    state = TrainState.from_dict({"epoch": 2, "step": 8, "best_valid_mrr": 0.3, "best_epoch": 2,
                                  "bad_validations": 0, "train_seconds": 1.5, "history": [], "stopped_early": False},
                                 "old.pt")
    assert (state.epoch, state.step, state.warmup_seconds, state.last_epoch_loss, state.lr_decays) == \
        (2, 8, 0.0, None, [])


@pytest.mark.parametrize("state, message", [
    ([1, 2], "not the training state"),
    ({"version": VERSION + 1, "epoch": 1}, f"version {VERSION + 1}"),
    ({"version": "2"}, "version is '2'"),
    ({"epoch": "3"}, "'epoch' is '3', expected a int"),
    ({"stopped_early": 1}, "expected a bool"),
    ({"best_step": 1.5}, "expected a int or null"),
    ({"history": {}}, "expected a list"),
    ({"best_valid": [1]}, "expected a dict or null"),
    ({"epoch_generator": [1, 2]}, "expected a tensor or null"),
    ({"surprise": 1}, "unknown entries 'surprise'"),
])
def test_a_damaged_or_newer_state_is_refused_by_name(state, message):
    with pytest.raises(RunFileError, match=message.replace("(", r"\(")):
        TrainState.from_dict(state, "run/checkpoint.pt")


def test_a_version_1_checkpoint_resumes_as_if_uninterrupted(small_kg, tmp_path):
    whole = train(small_config("transe", epochs=4, valid_every=1), small_kg, str(tmp_path / "whole"), progress=False)
    train(small_config("transe", epochs=2, valid_every=1), small_kg, str(tmp_path / "old"), progress=False)
    _as_version_1(tmp_path / "old" / "checkpoint.pt")
    resumed = train(small_config("transe", epochs=4, valid_every=1), small_kg, str(tmp_path / "old"), resume=True,
                    progress=False)
    assert resumed["test"] == whole["test"] and resumed["history"][1:] == [
        {**entry, "loss": pytest.approx(entry["loss"])} for entry in whole["history"][1:]]
    assert load_saved(tmp_path / "old" / "checkpoint.pt")["state"]["version"] == VERSION  # written anew


def test_a_checkpoint_of_a_newer_version_is_refused_and_left_as_it_was(small_kg, tmp_path):
    config = small_config("transe", epochs=1)
    train(config, small_kg, str(tmp_path / "run"), progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = load_saved(path)
    checkpoint["state"]["version"] = VERSION + 1
    atomic_save(str(path), checkpoint)
    before = path.read_bytes()
    config.train.max_epochs = 2
    with pytest.raises(RunFileError, match="newer kbit-dgl"):
        train(config, small_kg, str(tmp_path / "run"), resume=True, progress=False)
    assert path.read_bytes() == before


# --- the Trainer's parts -----------------------------------------------------------------------

def test_the_trainer_step_is_the_loop_step(small_kg, tmp_path):
    """Benchmarks time Trainer.step; it is the step the loop takes (same weights after one step)."""
    config = small_config("transe", epochs=1, max_steps=1)
    train(config, small_kg, str(tmp_path / "run"), progress=False)
    looped = load_saved(tmp_path / "run" / "checkpoint.pt")["model"]
    trainer = Trainer(config, small_kg)
    assert trainer.run_dir is None and isinstance(trainer.group, LocalGroup)
    first = epoch_permutation(len(small_kg.train), trainer.order_generator)[:config.train.batch_size]
    assert trainer.direction() == "tail"
    loss = trainer.step(small_kg.train[first])
    assert loss > 0 and trainer.state.step == 1 and trainer.direction() == "head"
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, looped[name]), name


def test_update_reports_its_phases_and_refuses_a_non_finite_loss(small_kg):
    from kbit_dgl.errors import TrainingDivergedError

    trainer = Trainer(small_config("transe"), small_kg)
    times = {}
    trainer.update(trainer.loss(small_kg.train[:64]), times)
    assert set(times) == {"backward", "optimizer"} and all(value >= 0 for value in times.values())
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        trainer.update(torch.tensor(float("nan"), requires_grad=True))


class _TwoRanks(LocalGroup):
    """A group of two as one rank sees it: the broadcasts answer with ``answer``."""

    def __init__(self, rank: int, answer):
        super().__init__("cpu")
        self.rank, self.world_size, self.answer = rank, 2, answer

    def broadcast(self, obj):
        return obj if self.rank == 0 else self.answer


def test_a_hook_that_stops_rank_0_stops_every_rank_without_metrics(small_kg, tmp_path):
    class Pruned(Exception):
        pass

    def prune(epoch, mrr):
        raise Pruned(epoch)

    main = Trainer(small_config("transe"), small_kg, group=_TwoRanks(0, None), run_dir=str(tmp_path),
                   on_validation=prune)
    assert main._after_validation(2, {"mrr": 0.1}) is True and isinstance(main.hook_error, Pruned)
    assert main.finish() is None
    other = Trainer(small_config("transe"), small_kg, group=_TwoRanks(1, True), run_dir=str(tmp_path))
    assert other._after_validation(2, {"mrr": 0.1}) is True and other.hook_error is None
    one = Trainer(small_config("transe"), small_kg, on_validation=prune)
    with pytest.raises(Pruned):  # one process: the hook's exception ends the run at once
        one._after_validation(2, {"mrr": 0.1})


def test_a_hook_is_refused_with_forked_processes_before_anything_is_written(small_kg, tmp_path):
    config = small_config("transe", num_procs=2)
    with pytest.raises(ConfigError, match="validation hook"):
        train(config, small_kg, str(tmp_path / "run"), progress=False, on_validation=lambda epoch, mrr: None)
    assert not (tmp_path / "run").exists()


def test_tune_refuses_several_processes_before_writing(small_kg, tmp_path):
    from kbit_dgl.tune import tune

    base = small_config("transe", num_procs=2)
    with pytest.raises(ConfigError, match="num_procs"):
        tune(base, small_kg, str(tmp_path / "tune"), {"train.lr": {"low": 0.001, "high": 0.1, "log": True}}, 2)
    assert not (tmp_path / "tune").exists()


# --- the run-time settings, decided once ---------------------------------------------------------

def test_the_launch_mode_is_read_from_the_environment_once():
    config = small_config("transe")
    assert launch_mode(config, {}) == "one"
    config.train.num_procs = 3
    assert launch_mode(config, {}) == "spawn"
    assert launch_mode(config, {"WORLD_SIZE": "2", "RANK": "1"}) == "torchrun"
    assert launch_mode(config, {"WORLD_SIZE": "1", "RANK": "0"}) == "spawn"
    assert launch_mode(config, {"DGL_ROLE": "client", "DGL_IP_CONFIG": "ip.txt", "WORLD_SIZE": "2",
                                "RANK": "0"}) == "distdgl"


def test_the_runtime_decides_device_tables_threads_and_encoder_mode(small_kg):
    config = small_config("transe")
    runtime = resolve_runtime(config, small_kg.num_entities, {})
    assert (str(runtime.device), runtime.launch, runtime.num_procs) == ("cpu" if not torch.cuda.is_available()
                                                                        else "cuda", "one", 1)
    assert runtime.encoder_mode is None and runtime.num_threads is None
    assert runtime.adapt_threads == (runtime.device.type == "cpu")
    config.train.optimizer, config.train.num_threads = "sparse_adam", 2
    runtime = resolve_runtime(config, small_kg.num_entities, {"WORLD_SIZE": "4", "RANK": "2"})
    assert runtime.sparse_tables and runtime.num_threads == 2 and not runtime.adapt_threads
    assert (runtime.launch, runtime.num_procs) == ("torchrun", 4)
    config.model.encoder, config.train.optimizer, config.encoder.mode = "rgcn", "adam", "auto"
    config.encoder.sampled_threshold_entities = small_kg.num_entities - 1
    runtime = resolve_runtime(config, small_kg.num_entities, {})
    assert runtime.encoder_mode == "sampled" and str(runtime.device) == "cpu"  # auto: the CPU with an encoder
    config.train.device = "cuda:7"
    with pytest.raises(ConfigError, match="cuda:7"):
        resolve_runtime(config, small_kg.num_entities, {})


def test_the_trainer_takes_the_runtime_it_is_given(small_kg):
    config = small_config("transe")
    runtime = dataclasses.replace(resolve_runtime(config, small_kg.num_entities, {}), sparse_tables=False,
                                  adapt_threads=False)
    trainer = Trainer(config, small_kg, runtime)
    assert not trainer.model.entity.sparse and trainer.device == runtime.device
    assert Trainer(config, small_kg).model.entity.sparse == (trainer.device.type == "cpu")  # dense Adam, CPU


# --- the structure ----------------------------------------------------------------------------------

def _imported_names(tree: ast.Module):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def test_no_module_writes_another_modules_private_names():
    """``distdgl.py`` once set ``distributed._GROUP``; only compat.py reaches into other libraries."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imported_names(tree)
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                        and target.value.id in imported and target.attr.startswith("_"):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {target.value.id}.{target.attr}")
    assert not found, found


def test_the_training_modules_keep_no_process_group_global():
    for name in ("distributed.py", "distdgl.py", "trainer.py", "encoder_training.py"):
        source = (PACKAGE / "train" / name).read_text(encoding="utf-8")
        assert not re.search(r"\b_GROUP\b|\bcurrent\(\)|^\s*global ", source, re.MULTILINE), name


def test_every_group_answers_what_the_trainer_asks():
    asked = {"broadcast", "gather", "barrier", "threads", "generators", "save_generators", "restore_generators",
             "batch_share", "train_rows", "share_tables", "make_optimizer", "local_copy", "leave"}
    for group_class in (Group, LocalGroup):
        assert asked <= set(dir(group_class)), group_class
    local = LocalGroup("cpu")
    order, negatives = local.generators(5)
    assert order is negatives  # one process: one generator, as before the groups (runs reproduce)
    assert local.broadcast([1]) == [1] and local.gather(2) == [2] and local.threads() is None
    assert set(local.save_generators(order, negatives)) == {"generator"}
