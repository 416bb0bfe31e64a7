"""Loading knowledge graphs: named benchmarks, any TSV folder, OGB, and the built-in generator."""
from __future__ import annotations

import os
from typing import Optional

from ..settings import env_path
from .kg import KG, FilterIndex, KGFormatError  # noqa: F401
from .synthetic import generate_kg
from .tsv import load_tsv_folder

# --dataset name -> folder name under the data root (the layout of ../shared/data and DGL's raw_dir).
TSV_DATASETS = {"fb15k-237": "FB15k-237", "wn18rr": "WN18RR", "codex-s": "codex-s", "codex-m": "codex-m",
                "kinship": "kinship", "nations": "nations", "umls": "umls"}
OGB_DATASETS = ("ogbl-wikikg2", "ogbl-biokg")
SYNTHETIC = ("synthetic", "default", "builtin")


def data_root(data_dir: Optional[str] = None) -> str:
    return data_dir or env_path("KBIT_DGL_DATA") or "data"


def load_dataset(dataset: Optional[str] = None, data_dir: Optional[str] = None, seed: int = 0,
                 download: bool = False) -> KG:
    """Load a KG by known name, by folder path, or the built-in generator (``None``/"synthetic").

    Named datasets are looked up under ``data_dir`` (default ``$KBIT_DGL_DATA``, else ``./data``).
    Whatever the source, the KG's ``warnings`` list what the data holds silently (duplicates,
    leakage, relations only in test, a skipped header line, ...); each is also logged.
    """
    if dataset is None or dataset.lower() in SYNTHETIC:
        kg = generate_kg(seed=seed)
        kg.check_splits()  # load_tsv_folder and load_ogb run this check themselves
        return kg
    key = dataset.lower()
    if key in OGB_DATASETS:
        from .ogb import load_ogb

        return load_ogb(key, data_root(data_dir), download=download)
    if key in TSV_DATASETS:
        folder = os.path.join(data_root(data_dir), TSV_DATASETS[key])
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"dataset {dataset!r} not found: expected the folder {os.path.abspath(folder)} holding "
                f"train.txt, valid.txt, test.txt (head<TAB>relation<TAB>tail) and optionally entities.dict "
                f"and relations.dict; set --data-dir or $KBIT_DGL_DATA to the folder that contains "
                f"{TSV_DATASETS[key]}/")
        return load_tsv_folder(folder, name=key)
    if os.path.isdir(dataset):
        return load_tsv_folder(dataset)
    known = ", ".join(list(TSV_DATASETS) + list(OGB_DATASETS) + ["synthetic"])
    raise FileNotFoundError(f"--dataset {dataset!r}: neither a known dataset ({known}) nor an existing folder")
