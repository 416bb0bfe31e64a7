import os
import sys

import pytest

# Let tests import the shared fixture writers (tests/ogb_fixtures.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))

# The thread count stays fixed in tests (and in the runs they start): a count refitted to a busy CI
# machine changes the order of float reductions, and many tests compare runs bit for bit.
# tests/test_threads.py turns adaptation back on where it tests it.
os.environ["KBIT_DGL_ADAPT_THREADS"] = "0"


@pytest.fixture(scope="session")
def tsv_folder(tmp_path_factory):
    """A small generated KG written as a TSV folder, the layout of ../shared/data."""
    from kbit_dgl.data.synthetic import generate_kg

    kg = generate_kg(num_persons=120, num_cities=10, num_countries=3, seed=5)
    folder = tmp_path_factory.mktemp("data") / "family"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        lines = [f"{kg.entity_names[h]}\t{kg.relation_names[r]}\t{kg.entity_names[t]}\n"
                 for h, r, t in kg.split(split).tolist()]
        (folder / f"{split}.txt").write_text("".join(lines))
    return folder


def train_cli_run(tsv_folder, folder, sets) -> str:
    """Train TransE on the generated TSV dataset into ``folder`` through the CLI, with ``sets`` (the
    module's small config); returns the folder (tests copy it before changing it)."""
    from kbit_dgl.cli import main

    folder = str(folder)
    assert main(["train", "--dataset", str(tsv_folder), "--model", "transe", "--out", folder, "--no-progress",
                 "--set", *sets]) == 0
    return folder


def copy_run(run: str, tmp_path, name: str = "copy") -> str:
    """A copy of the run folder ``run`` as ``tmp_path / name``."""
    import shutil

    target = str(tmp_path / name)
    shutil.copytree(run, target)
    return target


def train_interrupted(config, kg, run_dir, monkeypatch) -> None:
    """Train into ``run_dir`` and stop with KeyboardInterrupt in the middle of epoch 3.

    The interruption comes from inside a step (after two whole epochs and two steps), the way a
    user's Ctrl-C would land; ``train_step`` is restored afterwards so the run can be resumed.
    """
    from kbit_dgl.train import steps, trainer

    real_step, calls = steps.train_step, {"n": 0}
    steps_per_epoch = -(-len(kg.train) // config.train.batch_size)

    def interrupted_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * steps_per_epoch + 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(steps, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, kg, str(run_dir), progress=False)
    monkeypatch.setattr(steps, "train_step", real_step)


@pytest.fixture(scope="module")
def small_kg():
    """A generated KG small enough to train for a few epochs in a test."""
    from kbit_dgl.data.synthetic import generate_kg

    return generate_kg(num_persons=240, num_cities=20, num_countries=4, seed=0)


def small_config(model="transe", epochs=4, **train_overrides):
    """A tiny, fast training config; ``train_overrides`` set ``config.train`` fields."""
    from kbit_dgl.config import Config

    config = Config()
    config.model.name = model
    config.model.dim = 32
    config.model.gamma = 6.0
    config.train.batch_size = 256
    config.train.num_negatives = 32
    config.train.negative_chunk_size = 64
    config.train.max_epochs = epochs
    config.train.valid_every = 2
    config.train.lr = 0.01
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    return config
