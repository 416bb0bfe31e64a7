"""OGB loaders: small fixtures in the exact on-disk layout, read through the real ogb classes."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from ogb_fixtures import (  # noqa: F401
    BIOKG_NODE_COUNTS,
    BIOKG_OFFSETS,
    BIOKG_TRIPLETS,
    _save_split,
    _write_csv_gz,
    _write_release,
    write_ogb_biokg_fixture,
    write_ogb_wikikg2_fixture,
)

from kbit_dgl.data.kg import KG, KGFormatError
from kbit_dgl.data.ogb import OGB_DATASETS, load_ogb, missing_ogb_files, ogb_dataset_dir

# ------------------------------------------------------------------------------------------- tests


def test_dataset_names():
    assert OGB_DATASETS == ("ogbl-wikikg2", "ogbl-biokg")
    with pytest.raises(ValueError, match="ogbl-wikikg2"):
        load_ogb("ogbl-ppa", "/nonexistent")


@pytest.mark.parametrize("as_tensors", [False, True])
def test_wikikg2_loads_exact_triples_and_negatives(tmp_path, as_tensors):
    expected = write_ogb_wikikg2_fixture(tmp_path, as_tensors=as_tensors)
    kg = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert isinstance(kg, KG)
    assert kg.name == "ogbl-wikikg2"
    assert kg.num_entities == 30 and kg.num_relations == 4
    for split in ("train", "valid", "test"):
        assert kg.split(split).dtype == torch.int64
        assert torch.equal(kg.split(split), expected[split]), split
    assert set(kg.negatives) == {"valid", "test"}
    for split in ("valid", "test"):
        for key in ("head_neg", "tail_neg"):
            got = kg.negatives[split][key]
            assert got.dtype == torch.int64 and got.shape == (6, 5)
            assert torch.equal(got, expected["negatives"][split][key])
    assert kg.entity_names == [str(i) for i in range(30)]
    assert kg.relation_names == ["0", "1", "2", "3"]
    assert kg.entity_type is None and kg.type_names is None
    # ogb cached its processed graph; a second load goes through that path and agrees.
    assert os.path.isfile(os.path.join(expected["dir"], "processed", "data_processed"))
    again = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert torch.equal(again.train, kg.train) and torch.equal(again.test, kg.test)


def write_hand_checked_wikikg2(root) -> str:
    """A 7-entity wikikg2 written by hand (the expectations do not come from the writer's own arrays)."""
    base = ogb_dataset_dir("ogbl-wikikg2", str(root))
    _write_release(base)
    raw = os.path.join(base, "raw")
    _write_csv_gz(os.path.join(raw, "edge.csv.gz"), [[0, 1], [2, 3]])
    _write_csv_gz(os.path.join(raw, "edge_reltype.csv.gz"), [[0], [5]])  # relation 5 only in the graph
    _write_csv_gz(os.path.join(raw, "num-node-list.csv.gz"), [[7]])
    _write_csv_gz(os.path.join(raw, "num-edge-list.csv.gz"), [[2]])
    def arr(*v):
        return np.array(v, dtype=np.int64)
    _save_split(base, "time", {
        "train": {"head": arr(0, 2), "relation": arr(0, 5), "tail": arr(1, 3)},
        "valid": {"head": arr(4), "relation": arr(1), "tail": arr(5),
                  "head_neg": arr([1, 2, 3]), "tail_neg": arr([6, 0, 2])},
        "test": {"head": arr(6), "relation": arr(6), "tail": arr(0),  # relation 6 only in test
                 "head_neg": arr([0, 0, 0]), "tail_neg": arr([1, 1, 1])},
    })
    return base


def test_wikikg2_hand_checked_values(tmp_path):
    """One fixture built by hand, so the expectation does not come from the writer's own arrays."""
    write_hand_checked_wikikg2(tmp_path)
    kg = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert kg.num_entities == 7 and kg.num_relations == 7
    assert kg.train.tolist() == [[0, 0, 1], [2, 5, 3]]
    assert kg.valid.tolist() == [[4, 1, 5]]
    assert kg.test.tolist() == [[6, 6, 0]]
    assert kg.negatives["valid"]["head_neg"].tolist() == [[1, 2, 3]]
    assert kg.negatives["valid"]["tail_neg"].tolist() == [[6, 0, 2]]
    assert kg.negatives["test"]["tail_neg"].tolist() == [[1, 1, 1]]


def test_wikikg2_mapping_names(tmp_path):
    write_ogb_wikikg2_fixture(tmp_path, with_mapping=True)
    kg = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert kg.entity_names == [f"Q{100 + i}" for i in range(30)]
    assert kg.relation_names == ["P10", "P11", "P12", "P13"]
    assert kg.entity_id("Q105") == 5


def test_biokg_global_ids_types_and_negatives(tmp_path):
    raw = write_ogb_biokg_fixture(tmp_path)
    kg = load_ogb("ogbl-biokg", str(tmp_path))
    assert kg.num_entities == 30 and kg.num_relations == 4
    assert kg.type_names == ["disease", "drug", "protein"]
    assert kg.entity_type.tolist() == [0] * 7 + [1] * 10 + [2] * 13
    assert kg.entity_names[:2] == ["disease:0", "disease:1"]
    assert kg.entity_names[7] == "drug:0" and kg.entity_names[29] == "protein:12"
    assert kg.relation_names == ["drug-drug_interaction", "drug-protein", "protein-protein_binding",
                                 "disease-protein"]
    for split in ("train", "valid", "test"):
        data = raw[split]
        head = [h + BIOKG_OFFSETS[t] for h, t in zip(data["head"].tolist(), data["head_type"])]
        tail = [t + BIOKG_OFFSETS[ty] for t, ty in zip(data["tail"].tolist(), data["tail_type"])]
        expected = torch.tensor([head, data["relation"].tolist(), tail], dtype=torch.int64).T
        assert torch.equal(kg.split(split), expected), split
        # Every global id lands in its declared type.
        head_types = [kg.type_names.index(t) for t in data["head_type"]]
        assert kg.entity_type[kg.split(split)[:, 0]].tolist() == head_types
    for split in ("valid", "test"):
        data = raw[split]
        for key, types in (("head_neg", data["head_type"]), ("tail_neg", data["tail_type"])):
            offsets = torch.tensor([BIOKG_OFFSETS[t] for t in types])[:, None]
            expected = torch.from_numpy(data[key]) + offsets
            assert torch.equal(kg.negatives[split][key], expected), (split, key)
            got_types = kg.entity_type[kg.negatives[split][key]]
            assert (got_types == torch.tensor([kg.type_names.index(t) for t in types])[:, None]).all()
    assert set(kg.negatives) == {"valid", "test"}


def test_biokg_hand_checked_row(tmp_path):
    raw = write_ogb_biokg_fixture(tmp_path)
    kg = load_ogb("ogbl-biokg", str(tmp_path))
    # Row 3 of every split is a ("disease", "disease-protein", "protein") triple: disease offset 0,
    # protein offset 7 + 10 = 17.
    row = raw["test"]
    assert (row["head_type"][3], row["tail_type"][3]) == ("disease", "protein")
    assert kg.test[3].tolist() == [int(row["head"][3]), 3, int(row["tail"][3]) + 17]
    assert kg.negatives["test"]["tail_neg"][3].tolist() == (row["tail_neg"][3] + 17).tolist()
    # Row 0 is drug-drug: offset 7 on both sides.
    assert kg.test[0].tolist() == [int(row["head"][0]) + 7, 0, int(row["tail"][0]) + 7]
    assert kg.negatives["test"]["head_neg"][0].tolist() == (row["head_neg"][0] + 7).tolist()


def test_missing_folder_names_every_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_ogb("ogbl-wikikg2", str(tmp_path))
    message = str(info.value)
    base = os.path.join(str(tmp_path), "ogbl_wikikg2")
    for rel in ("RELEASE_v1.txt", "raw/edge.csv.gz", "raw/edge_reltype.csv.gz", "raw/num-node-list.csv.gz",
                "raw/num-edge-list.csv.gz", "split/time/train.pt", "split/time/valid.pt",
                "split/time/test.pt"):
        assert os.path.join(base, *rel.split("/")) in message, rel
    assert "download=True" in message and "wikikg-v2.zip" in message
    assert not os.path.exists(base)  # nothing created, nothing downloaded

    with pytest.raises(FileNotFoundError) as info:
        load_ogb("ogbl-biokg", str(tmp_path))
    message = str(info.value)
    for rel in ("RELEASE_v1.txt", "raw/num-node-dict.csv.gz", "raw/triplet-type-list.csv.gz",
                "split/random/train.pt"):
        assert os.path.join(str(tmp_path), "ogbl_biokg", *rel.split("/")) in message, rel


def test_partly_missing_files_are_listed_exactly(tmp_path):
    expected = write_ogb_wikikg2_fixture(tmp_path)
    base = expected["dir"]
    os.remove(os.path.join(base, "RELEASE_v1.txt"))  # would make ogb call input()
    os.remove(os.path.join(base, "split", "time", "valid.pt"))
    missing = [os.path.join(base, "RELEASE_v1.txt"), os.path.join(base, "split", "time", "valid.pt")]
    assert missing_ogb_files("ogbl-wikikg2", str(tmp_path)) == missing
    with pytest.raises(FileNotFoundError) as info:
        load_ogb("ogbl-wikikg2", str(tmp_path))
    assert all(path in str(info.value) for path in missing)
    assert os.path.join(base, "raw", "edge.csv.gz") not in str(info.value)
    # download=True never lets ogb prompt about the RELEASE file either (and needs no network here).
    with pytest.raises(FileNotFoundError, match="RELEASE_v1.txt"):
        load_ogb("ogbl-wikikg2", str(tmp_path), download=True)


def test_biokg_missing_relation_file(tmp_path):
    raw = write_ogb_biokg_fixture(tmp_path)
    path = os.path.join(raw["dir"], "raw", "relations", "drug___drug-protein___protein", "edge.csv.gz")
    os.remove(path)
    assert missing_ogb_files("ogbl-biokg", str(tmp_path)) == [path]
    with pytest.raises(FileNotFoundError, match="drug___drug-protein___protein"):
        load_ogb("ogbl-biokg", str(tmp_path))


def test_out_of_range_ids_name_the_split_file(tmp_path):
    expected = write_ogb_wikikg2_fixture(tmp_path)
    path = os.path.join(expected["dir"], "split", "time", "test.pt")
    data = torch.load(path)
    data["tail_neg"][2, 1] = 30  # == num_entities
    torch.save(data, path)
    with pytest.raises(KGFormatError, match=r"test\.pt.*tail_neg id 30 at row 2, column 1"):
        load_ogb("ogbl-wikikg2", str(tmp_path))

    raw = write_ogb_biokg_fixture(tmp_path / "bio")
    path = os.path.join(raw["dir"], "split", "random", "valid.pt")
    data = torch.load(path)
    data["head"][1] = 10  # row 1 is drug-protein; drug has 10 entities, so local id 10 is invalid
    torch.save(data, path)
    with pytest.raises(KGFormatError, match=r"valid\.pt.*head id 10 at row 1.*'drug'"):
        load_ogb("ogbl-biokg", str(tmp_path / "bio"))

    data["head"][1] = 0
    data["relation"][0] = -1
    torch.save(data, path)
    with pytest.raises(KGFormatError, match=r"valid\.pt.*relation id -1"):
        load_ogb("ogbl-biokg", str(tmp_path / "bio"))


def test_no_input_left_patched_in_ogb(tmp_path):
    import ogb.linkproppred.dataset as dataset_module
    import ogb.utils.url as url_module

    write_ogb_wikikg2_fixture(tmp_path)
    load_ogb("ogbl-wikikg2", str(tmp_path))
    assert "input" not in dataset_module.__dict__ and "input" not in url_module.__dict__


# ------------------------------------------------------------------ issue #12: bad OGB input, bounded work

def _edit_split(path: str, **changes) -> None:
    data = torch.load(path)
    data.update(changes)
    torch.save(data, path)


def test_ogb_loader_fills_warnings(tmp_path, caplog):
    write_hand_checked_wikikg2(tmp_path)
    with caplog.at_level("WARNING", logger="kbit_dgl"):
        kg = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert kg.warnings == [
        "ogbl-wikikg2: 2 relation(s) occur in valid/test but never in train, so their queries cannot be learned "
        "(1 valid and 1 test triples): '1', '6'",
        "ogbl-wikikg2: 3 entities occur in valid/test but never in train (1 valid and 1 test triples involve them; "
        "KG.unseen_entity_mask marks them): '4', '5', '6'",
    ]
    assert all(message in caplog.messages for message in kg.warnings)


# Loads a fixture under an address-space limit a little above what the imports take, so that a
# regression (a table sized by a corrupt id) fails with MemoryError instead of taking the machine's
# memory; prints the KGFormatError.
_BOUNDED_LOAD = """
import resource, sys
from kbit_dgl.data.kg import KGFormatError
from kbit_dgl.data.ogb import load_ogb
import ogb.linkproppred  # noqa: F401  (imported before the limit: its import maps a lot)
size = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
for name, root in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        load_ogb(name, root)
    except KGFormatError as error:
        print("KGFormatError:", error)
    else:
        print("loaded without error")
"""


def test_huge_relation_id_fails_fast_in_bounded_memory(tmp_path):
    """One relation id of 10^9 once grew loading to ~24 GB (a name per id); now it is an error."""
    import subprocess
    import sys

    wiki = write_ogb_wikikg2_fixture(tmp_path / "wiki")
    _edit_split(os.path.join(wiki["dir"], "split", "time", "test.pt"),
                relation=np.array([0, 1, 2, 10 ** 9, 0, 1], dtype=np.int64))
    bio = write_ogb_biokg_fixture(tmp_path / "bio")
    train_path = os.path.join(bio["dir"], "split", "random", "train.pt")
    relation = torch.load(train_path)["relation"].copy()
    relation[5] = 10 ** 9
    _edit_split(train_path, relation=relation)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _BOUNDED_LOAD, "ogbl-wikikg2", str(tmp_path / "wiki"),
                             "ogbl-biokg", str(tmp_path / "bio")], cwd=repo, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": repo})
    assert result.returncode == 0, result.stderr[-3000:]
    wiki_error, bio_error = [line[len("KGFormatError: "):] for line in result.stdout.splitlines()
                             if line.startswith("KGFormatError: ")]
    assert wiki_error.startswith(os.path.join(wiki["dir"], "split", "time", "test.pt") + ": relation id 1000000000 "
                                 "at row 3 (column 'relation') is out of range; expected 0 <= id < 5 (the graph in ")
    assert bio_error.startswith(train_path + ": relation id 1000000000 at row 5 (column 'relation') is out of range; "
                                "expected 0 <= id < 5")


def test_relation_ids_are_bounded_by_the_mapping_file(tmp_path):
    expected = write_ogb_wikikg2_fixture(tmp_path, with_mapping=True)
    path = os.path.join(expected["dir"], "split", "time", "valid.pt")
    _edit_split(path, relation=np.array([0, 1, 2, 3, 4, 0], dtype=np.int64))
    mapping = os.path.join(expected["dir"], "mapping", "reltype2relid.csv.gz")
    with pytest.raises(KGFormatError) as info:
        load_ogb("ogbl-wikikg2", str(tmp_path))
    assert str(info.value) == (f"{path}: relation id 4 at row 4 (column 'relation') is out of range; expected "
                               f"0 <= id < 4 (the 4 relations of {mapping})")


@pytest.mark.parametrize("dataset,split,key,row,column,bound", [
    ("ogbl-wikikg2", "train", "head", 7, None, "30"),
    ("ogbl-wikikg2", "valid", "tail", 2, None, "30"),
    ("ogbl-wikikg2", "test", "head_neg", 1, 4, "30"),
    ("ogbl-biokg", "test", "tail", 0, None, "10 (local ids of type 'drug')"),  # row 0 is drug-drug
    ("ogbl-biokg", "valid", "head_neg", 3, 2, "7 (local ids of type 'disease')"),  # row 3 is disease-protein
])
def test_every_id_column_is_range_checked(tmp_path, dataset, split, key, row, column, bound):
    if dataset == "ogbl-wikikg2":
        path = os.path.join(write_ogb_wikikg2_fixture(tmp_path)["dir"], "split", "time", f"{split}.pt")
    else:
        path = os.path.join(write_ogb_biokg_fixture(tmp_path)["dir"], "split", "random", f"{split}.pt")
    values = np.array(torch.load(path)[key])
    values[(row,) if column is None else (row, column)] = 10 ** 9
    _edit_split(path, **{key: values})
    where = f"at row {row}" + (f" (column {key!r})" if column is None else f", column {column}")
    with pytest.raises(KGFormatError, match=re.escape(f"{key} id 1000000000 {where}") + ".*out of range.*"
                       + re.escape(f"expected 0 <= id < {bound}")) as info:
        load_ogb(dataset, str(tmp_path))
    assert str(info.value).startswith(path + ": ")


@pytest.mark.parametrize("shape,expected", [
    ((5, 5), r"'head_neg' has shape \(5, 5\); expected \(n, K\) with n = 6 triples and K >= 1"),
    ((6, 0), r"'head_neg' has shape \(6, 0\); expected \(n, K\) with n = 6 triples and K >= 1"),
    ((6,), r"'head_neg' must be 2-dimensional, got shape \(6,\)"),
    ((6, 5, 1), r"'head_neg' must be 2-dimensional, got shape \(6, 5, 1\)"),
])
def test_negatives_of_the_wrong_shape(tmp_path, shape, expected):
    fixture = write_ogb_wikikg2_fixture(tmp_path)
    path = os.path.join(fixture["dir"], "split", "time", "valid.pt")
    _edit_split(path, head_neg=np.zeros(shape, dtype=np.int64))
    with pytest.raises(KGFormatError, match=re.escape(path) + ": " + expected):
        load_ogb("ogbl-wikikg2", str(tmp_path))


def test_columns_of_different_lengths(tmp_path):
    fixture = write_ogb_wikikg2_fixture(tmp_path)
    path = os.path.join(fixture["dir"], "split", "time", "test.pt")
    _edit_split(path, tail=np.zeros(5, dtype=np.int64))
    with pytest.raises(KGFormatError, match=re.escape(path) + r": 'head', 'relation' and 'tail' differ in length "
                                                              r"\(6, 6, 5\)"):
        load_ogb("ogbl-wikikg2", str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a torch file"])
def test_unreadable_split_file_is_named(tmp_path, damage):
    fixture = write_ogb_wikikg2_fixture(tmp_path)
    path = os.path.join(fixture["dir"], "split", "time", "valid.pt")
    content = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write({"truncated": content[: len(content) // 2], "empty": b"",
                      "not a torch file": b"head,relation,tail\n0,1,2\n"}[damage])
    with pytest.raises(KGFormatError, match=re.escape(path) + r": torch.load cannot read it .*truncated or damaged"):
        load_ogb("ogbl-wikikg2", str(tmp_path))


@pytest.mark.parametrize("dataset", ["ogbl-wikikg2", "ogbl-biokg"])
def test_the_compact_cache_is_read_instead_of_ogb_and_scores_the_same(tmp_path, monkeypatch, dataset):
    import ogb.linkproppred

    from kbit_dgl.eval import evaluate
    from kbit_dgl.models.model import build_model

    (write_ogb_wikikg2_fixture if dataset == "ogbl-wikikg2" else write_ogb_biokg_fixture)(tmp_path)
    first = load_ogb(dataset, str(tmp_path))
    assert os.path.exists(os.path.join(ogb_dataset_dir(dataset, str(tmp_path)), "processed", "kbit_cache",
                                       "meta.json"))

    def no_ogb(*args, **kwargs):
        raise AssertionError("ogb was asked although the cache is fresh")
    monkeypatch.setattr(ogb.linkproppred, "LinkPropPredDataset", no_ogb)
    cached = load_ogb(dataset, str(tmp_path))
    for split in ("train", "valid", "test"):
        assert torch.equal(cached.split(split), first.split(split))
        if split != "train":
            for key in ("head_neg", "tail_neg"):
                assert cached.negatives[split][key].dtype == torch.int32
                assert torch.equal(cached.negatives[split][key].long(), first.negatives[split][key])
    assert cached.entity_names == first.entity_names and cached.relation_names == first.relation_names
    assert (cached.entity_type is None) == (first.entity_type is None)
    if first.entity_type is not None:
        assert torch.equal(cached.entity_type, first.entity_type) and cached.type_names == first.type_names
    model = build_model("transe", first.num_entities, first.num_relations, 8, 6.0)
    assert evaluate(model, cached, "test") == evaluate(model, first, "test")


def test_a_changed_source_file_invalidates_the_cache(tmp_path):
    expected = write_ogb_wikikg2_fixture(tmp_path)
    load_ogb("ogbl-wikikg2", str(tmp_path))
    base = ogb_dataset_dir("ogbl-wikikg2", str(tmp_path))
    path = os.path.join(base, "split", "time", "test.pt")
    split = torch.load(path)
    split["tail"] = (split["tail"] + 1) % 30
    torch.save(split, path)
    reloaded = load_ogb("ogbl-wikikg2", str(tmp_path))
    assert torch.equal(reloaded.test[:, 2], (expected["test"][:, 2] + 1) % 30)
    assert torch.equal(load_ogb("ogbl-wikikg2", str(tmp_path)).test, reloaded.test)  # the rebuilt cache
