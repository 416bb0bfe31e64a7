import os
import sys

import pytest

# Let tests import the shared fixture writers (tests/ogb_fixtures.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))


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
