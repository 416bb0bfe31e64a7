"""Loaders, validation errors, the built-in generator, the filter index and DGL graphs."""
from __future__ import annotations

import logging
import os
import re

import pytest
import torch

from kbit_dgl.data import KG, KGFormatError, load_dataset
from kbit_dgl.data.kg import FilterIndex
from kbit_dgl.data.synthetic import PATTERNS, generate_kg
from kbit_dgl.data.tsv import load_tsv_folder, read_dict, read_triples

TRAIN = [("a", "likes", "b"), ("b", "likes", "c"), ("c", "knows", "a"), ("d", "knows", "a")]
VALID = [("a", "knows", "c")]
TEST = [("b", "knows", "d"), ("e", "likes", "a")]


def write_folder(folder, train=TRAIN, valid=VALID, test=TEST, entities=None, relations=None):
    os.makedirs(folder, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(folder, f"{name}.txt"), "w") as handle:
            handle.writelines("\t".join(row) + "\n" for row in rows)
    for name, names in (("entities", entities), ("relations", relations)):
        if names is not None:
            with open(os.path.join(folder, f"{name}.dict"), "w") as handle:
                handle.writelines(f"{i}\t{n}\n" for i, n in enumerate(names))
    return str(folder)


def test_tsv_first_appearance_ids(tmp_path):
    kg = load_tsv_folder(write_folder(tmp_path / "kg"))
    assert kg.entity_names == ["a", "b", "c", "d", "e"]
    assert kg.relation_names == ["likes", "knows"]
    assert kg.train.tolist() == [[0, 0, 1], [1, 0, 2], [2, 1, 0], [3, 1, 0]]
    assert kg.test.tolist() == [[1, 1, 3], [4, 0, 0]]
    assert kg.unseen_entity_mask("test").tolist() == [False, True]  # e never occurs in train


def test_tsv_dicts_fix_ids(tmp_path):
    folder = write_folder(tmp_path / "kg", entities=["e", "d", "c", "b", "a"], relations=["knows", "likes"])
    kg = load_tsv_folder(folder)
    assert kg.train.tolist()[0] == [4, 1, 3]
    assert kg.entity_id("e") == 0 and kg.relation_id("likes") == 1


def test_shared_data_layout_when_present():
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nations")
    if not os.path.isdir(folder):
        pytest.skip("../shared/data is not beside this checkout")
    kg = load_tsv_folder(folder)
    assert kg.summary() == {"entities": 14, "relations": 55, "train": 1592, "valid": 199, "test": 201}


@pytest.mark.parametrize("line,expected", [
    ("a\tlikes\n", r"train.txt, line 2: expected 3 tab-separated fields"),
    ("a likes b\n", r"train.txt, line 2: expected 3 tab-separated fields"),
    ("a\t\tb\n", r"train.txt, line 2: expected 3 tab-separated fields"),
])
def test_bad_line_names_file_and_line(tmp_path, line, expected):
    folder = write_folder(tmp_path / "kg")
    with open(os.path.join(folder, "train.txt"), "w") as handle:
        handle.write("a\tlikes\tb\n" + line)
    with pytest.raises(KGFormatError, match=expected):
        load_tsv_folder(folder)


def test_empty_split(tmp_path):
    folder = write_folder(tmp_path / "kg", valid=[])
    with pytest.raises(KGFormatError, match=r"valid.txt: the split is empty"):
        load_tsv_folder(folder)


def test_missing_split_file(tmp_path):
    folder = write_folder(tmp_path / "kg")
    os.unlink(os.path.join(folder, "test.txt"))
    with pytest.raises(FileNotFoundError, match=r"test.txt: missing"):
        load_tsv_folder(folder)


def test_dict_must_cover_every_name(tmp_path):
    folder = write_folder(tmp_path / "kg", entities=["a", "b", "c", "d"])  # no "e"
    with pytest.raises(KGFormatError, match=r"test.txt, line 2: entity 'e' is not in .*entities.dict"):
        load_tsv_folder(folder)


def test_bad_dict_line(tmp_path):
    folder = write_folder(tmp_path / "kg")
    with open(os.path.join(folder, "relations.dict"), "w") as handle:
        handle.write("0\tlikes\nknows\n")
    with pytest.raises(KGFormatError, match=r"relations.dict, line 2: expected '<integer id>"):
        load_tsv_folder(folder)


def test_ids_out_of_range():
    triples = torch.tensor([[0, 0, 1]])
    with pytest.raises(KGFormatError, match=r"toy/test: triple 0 has tail id 5, expected 0 <= id < 2"):
        KG("toy", triples, triples, torch.tensor([[0, 0, 5]]), 2, 1, ["x", "y"], ["r"])
    with pytest.raises(KGFormatError, match=r"toy/valid: triple 0 has relation id 1"):
        KG("toy", triples, torch.tensor([[0, 1, 1]]), triples, 2, 1, ["x", "y"], ["r"])


def test_named_dataset_missing_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FB15k-237 .*train.txt, valid.txt, test.txt"):
        load_dataset("fb15k-237", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a known dataset"):
        load_dataset(str(tmp_path / "nope"))


def test_dataset_by_path_and_env(tmp_path, monkeypatch):
    write_folder(tmp_path / "kinship")
    monkeypatch.setenv("KBIT_DGL_DATA", str(tmp_path))
    assert load_dataset("kinship").num_entities == 5
    assert load_dataset(str(tmp_path / "kinship")).num_relations == 2


def test_generator_is_deterministic_and_consistent():
    first, second, other = generate_kg(seed=3), generate_kg(seed=3), generate_kg(seed=4)
    for split in ("train", "valid", "test"):
        assert torch.equal(first.split(split), second.split(split))
    assert not torch.equal(first.test, other.test)
    assert first.relation_names == list(PATTERNS)
    assert int(first.unseen_entity_mask("test").sum()) == 0 and int(first.unseen_entity_mask("valid").sum()) == 0
    every = torch.cat([first.train, first.valid, first.test])
    facts = {tuple(t) for t in every.tolist()}
    assert len(facts) == len(every)  # no duplicates across splits
    married, parent, child = (first.relation_id(n) for n in ("married_to", "parent_of", "child_of"))
    for h, r, t in facts:
        if r == married:
            assert (t, married, h) in facts       # symmetric
        if r == parent:
            assert (t, child, h) in facts         # inverse pair
            assert (t, parent, h) not in facts    # antisymmetric


def test_filter_index_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    triples = torch.stack([torch.randint(6, (80,), generator=generator), torch.randint(3, (80,), generator=generator),
                           torch.randint(6, (80,), generator=generator)], 1)
    index = FilterIndex(triples, 6, 3)
    queries = torch.tensor([[0, 0, 1], [5, 2, 3], [2, 1, 2], [0, 0, 4]])
    facts = {tuple(t) for t in triples.tolist()}
    for direction, anchor_col in (("tail", 0), ("head", 2)):
        rows, entities = index.known(queries[:, anchor_col], queries[:, 1], direction)
        got = sorted(zip(rows.tolist(), entities.tolist()))
        expected = sorted((i, e) for i, (h, r, t) in enumerate(queries.tolist()) for e in range(6)
                          if ((h, r, e) if direction == "tail" else (e, r, t)) in facts)
        assert got == expected


def test_to_dgl_graphs():
    from kbit_dgl.data.graph import to_dgl, to_homogeneous

    kg = generate_kg(num_persons=40, num_cities=6, num_countries=2, seed=1)
    graph = to_dgl(kg)
    assert graph.ntypes == ["entity"] and graph.num_nodes() == kg.num_entities
    assert len(graph.canonical_etypes) == kg.num_relations
    assert graph.num_edges() == len(kg.train)
    married = kg.relation_id("married_to")
    src, dst = graph.edges(etype="married_to")
    expected = kg.train[kg.train[:, 1] == married]
    assert sorted(zip(src.tolist(), dst.tolist())) == sorted(zip(expected[:, 0].tolist(), expected[:, 2].tolist()))
    homogeneous = to_homogeneous(kg)
    assert homogeneous.num_edges() == 2 * len(kg.train)
    assert int(homogeneous.edata["etype"].max()) < 2 * kg.num_relations
    src, dst = homogeneous.edges()
    inverse = homogeneous.edata["etype"] >= kg.num_relations
    assert torch.equal(src[inverse], kg.train[:, 2]) and torch.equal(dst[inverse], kg.train[:, 0])


def test_to_dgl_typed_graph():
    from kbit_dgl.data.graph import to_dgl

    train = torch.tensor([[0, 0, 2], [1, 0, 3], [2, 1, 3]])
    kg = KG("typed", train, train[:1], train[:1], 4, 2, list("abcd"), ["treats", "binds"],
            entity_type=torch.tensor([0, 0, 1, 1]), type_names=["drug", "protein"])
    graph = to_dgl(kg)
    assert set(graph.canonical_etypes) == {("drug", "treats", "protein"), ("protein", "binds", "protein")}
    assert graph.num_nodes("drug") == 2 and graph.nodes["protein"].data["entity_id"].tolist() == [2, 3]
    assert graph.edges(etype="binds")[0].tolist() == [0] and graph.edges(etype="binds")[1].tolist() == [1]


# ==================================================== issue #12: bad bytes, giant lines, BOMs, headers

HUGE = 100_000_000  # characters in the giant line: the size that once made a 100 MB error message


def write_bytes(path, data: bytes) -> str:
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


# ------------------------------------------------------------------------------------ non-UTF-8 input

@pytest.mark.parametrize("file,content,line,offset,file_offset", [
    # 'b' + Latin-1 'é' (0xe9) on line 2: a lone lead byte
    ("train.txt", b"a\tlikes\tb\nb\xe9\tlikes\tc\n", 2, 1, 11),
    ("valid.txt", b"a\tknows\tc\xff\n", 1, 9, 9),
    ("entities.dict", b"0\ta\n1\tb\n2\tc\n3\td\n4\te\xc3\n", 5, 3, 19),  # truncated 2-byte sequence
    ("relations.dict", b"0\tlikes\n1\tkn\x80ows\n", 2, 4, 12),
])
def test_non_utf8_bytes_name_file_line_and_byte(tmp_path, file, content, line, offset, file_offset):
    folder = write_folder(tmp_path / "kg", entities=list("abcde"), relations=["likes", "knows"])
    write_bytes(os.path.join(folder, file), content)
    with pytest.raises(KGFormatError) as info:
        load_tsv_folder(folder)
    message = str(info.value)
    assert f"{file}, line {line}: expected UTF-8 text" in message
    assert f"at byte offset {offset} of the line ({file_offset} of the file" in message
    assert isinstance(info.value.__cause__, UnicodeDecodeError)  # chained, not lost


def test_utf16_file_gets_a_hint(tmp_path):
    folder = write_folder(tmp_path / "kg")
    write_bytes(os.path.join(folder, "test.txt"), "b\tknows\td\n".encode("utf-16"))
    with pytest.raises(KGFormatError, match=r"test.txt, line 1: expected UTF-8 text.*UTF-16 byte-order mark"):
        load_tsv_folder(folder)


# ------------------------------------------------------------------------------------ giant lines

@pytest.fixture(scope="module")
def giant_name():
    return "x" * HUGE


@pytest.mark.parametrize("case", ["no newline", "giant field", "dict line", "name not in dict", "dict name twice"])
def test_giant_line_is_quoted_as_a_prefix(tmp_path, giant_name, case):
    folder = write_folder(tmp_path / "kg", entities=list("abcde") if "dict" in case else None)
    giant = giant_name.encode()
    if case == "no newline":  # one 100 MB line with no tab: the whole file is a single line
        write_bytes(os.path.join(folder, "train.txt"), giant)
        expected = "train.txt, line 1: expected 3 tab-separated fields"
    elif case == "giant field":
        write_bytes(os.path.join(folder, "train.txt"), b"a\tlikes\tb\n" + giant + b"\tlikes\tb\tc\n")
        expected = "train.txt, line 2: expected 3 tab-separated fields"
    elif case == "dict line":
        write_bytes(os.path.join(folder, "entities.dict"), b"0\ta\n" + giant + b"\n")
        expected = "entities.dict, line 2: expected '<integer id>"
    elif case == "name not in dict":
        write_bytes(os.path.join(folder, "test.txt"), b"a\tlikes\t" + giant + b"\n")
        expected = "test.txt, line 1: entity 'xxxx"
    else:
        write_bytes(os.path.join(folder, "entities.dict"), b"0\t" + giant + b"\n1\t" + giant + b"\n")
        expected = "entities.dict, line 2: name 'xxxx"
    with pytest.raises(KGFormatError) as info:
        load_tsv_folder(folder)
    message = str(info.value)
    assert expected in message
    assert re.search(r"'\.\.\. \(1000000\d\d characters\)", message), message[:1000]
    assert len(message) < 1000


# ------------------------------------------------------------------------------------ BOM and header lines

def test_bom_is_stripped_and_warned(tmp_path, caplog):
    folder = write_folder(tmp_path / "kg")
    path = os.path.join(folder, "train.txt")
    write_bytes(path, b"\xef\xbb\xbf" + open(path, "rb").read())
    with caplog.at_level(logging.WARNING, logger="kbit_dgl"):
        kg = load_tsv_folder(folder)
    assert kg.entity_names[0] == "a"  # not "\ufeffa"
    assert kg.train.tolist() == [[0, 0, 1], [1, 0, 2], [2, 1, 0], [3, 1, 0]]
    bom = [w for w in kg.warnings if "byte-order mark" in w]
    assert bom == [f"{path}: 1 UTF-8 byte-order mark at the start of the file; stripped it"]
    assert bom[0] in caplog.messages


def test_bom_in_dict_files_is_stripped(tmp_path):
    folder = write_folder(tmp_path / "kg", entities=["e", "d", "c", "b", "a"], relations=["knows", "likes"])
    for name in ("entities.dict", "relations.dict"):
        path = os.path.join(folder, name)
        write_bytes(path, b"\xef\xbb\xbf" + open(path, "rb").read())
    kg = load_tsv_folder(folder)
    assert kg.entity_names == ["e", "d", "c", "b", "a"] and kg.relation_names == ["knows", "likes"]
    assert sum("byte-order mark" in w for w in kg.warnings) == 2


@pytest.mark.parametrize("header", ["head\trelation\ttail", "Subject\tPredicate\tObject", "h\tr\tt",
                                    "source\trelation\ttarget", "# head\trelation\ttail", "HEAD\tREL\tTAIL\r"])
def test_header_line_is_skipped_and_warned(tmp_path, header, caplog):
    folder = write_folder(tmp_path / "kg")
    path = os.path.join(folder, "valid.txt")
    write_bytes(path, b"\n" + header.encode() + b"\n" + open(path, "rb").read())  # blank line first
    with caplog.at_level(logging.WARNING, logger="kbit_dgl"):
        kg = load_tsv_folder(folder)
    assert kg.valid.tolist() == [[0, 1, 2]]
    assert kg.num_entities == 5 and kg.num_relations == 2  # no entity "head", no relation "relation"
    skipped = [w for w in kg.warnings if "header" in w]
    assert len(skipped) == 1 and skipped[0].startswith(f"{path}, line 2: 1 header line ")
    assert skipped[0] in caplog.messages


def test_header_words_after_the_first_line_are_data(tmp_path):
    rows = [("a", "likes", "b"), ("head", "relation", "tail")]
    kg = load_tsv_folder(write_folder(tmp_path / "kg", train=rows, valid=rows[:1], test=rows[:1]))
    assert kg.entity_names == ["a", "b", "head", "tail"] and kg.relation_names == ["likes", "relation"]
    assert not any("header" in w for w in kg.warnings)


def test_header_with_dicts(tmp_path):
    # The dicts do not list "head": the line is a header. Where they list all three names, it is data.
    folder = write_folder(tmp_path / "kg", train=[("head", "relation", "tail")] + list(TRAIN),
                          entities=list("abcde"), relations=["likes", "knows"])
    kg = load_tsv_folder(folder)
    assert len(kg.train) == 4 and any("header" in w for w in kg.warnings)
    folder = write_folder(tmp_path / "data", train=[("head", "relation", "tail")] + list(TRAIN),
                          entities=list("abcde") + ["head", "tail"], relations=["likes", "knows", "relation"])
    kg = load_tsv_folder(folder)
    assert kg.train.tolist()[0] == [5, 2, 6] and not any("header" in w for w in kg.warnings)


def test_header_only_split_is_empty(tmp_path):
    folder = write_folder(tmp_path / "kg", test=[("head", "relation", "tail")])
    with pytest.raises(KGFormatError, match=r"test.txt: the split is empty after its header line"):
        load_tsv_folder(folder)


# ------------------------------------------------------------------------------------ dict files

def test_dict_id_given_twice_or_missing(tmp_path):
    path = tmp_path / "entities.dict"
    write_bytes(path, b"0\ta\n1\tb\n1\tc\n")
    with pytest.raises(KGFormatError, match=r"entities.dict, line 3: id 1 was already given on line 2"):
        read_dict(str(path))
    write_bytes(path, b"0\ta\n2\tb\n3\tc\n")
    with pytest.raises(KGFormatError, match=r"entities.dict: expected ids 0..2 .*id 1 is missing"):
        read_dict(str(path))


def test_read_functions_report_into_a_given_list(tmp_path):
    warnings = []
    path = write_bytes(tmp_path / "train.txt", b"\xef\xbb\xbfa\tr\tb\n")
    assert read_triples(path, warnings) == [("a", "r", "b", 1)]
    assert len(warnings) == 1 and "byte-order mark" in warnings[0]
