"""Load a KG from a folder of ``train.txt``/``valid.txt``/``test.txt`` (head TAB relation TAB tail).

Optional ``entities.dict`` / ``relations.dict`` (``<id> TAB <name>``) fix the id of every name;
without them ids are assigned in order of first appearance (train, then valid, then test).

Files must be UTF-8. What the loader accepts but a user should know about (a UTF-8 byte-order
mark, a header line, then the split-level checks of :meth:`KG.check_splits`) ends up in
``KG.warnings`` and is logged on the ``kbit_dgl`` logger.
"""
from __future__ import annotations

import codecs
import contextlib
import os
from typing import Dict, Iterator, List, Optional, TextIO, Tuple

import torch

from .kg import KG, SPLITS, KGFormatError, add_warning, preview

SPLIT_FILES = {split: f"{split}.txt" for split in SPLITS}

# Column names of header lines seen in the wild (PyKEEN/pandas exports, RDF-style, graph-tool edge
# lists). Compared lowercase; a header must name all three columns, and only a file's first
# non-blank line can be one.
HEADER_HEADS = frozenset({"head", "h", "head_id", "head_entity", "head entity", "subject", "subj", "s",
                          "source", "src", "from", "e1", "entity1", "entity_1", "node1", "start"})
HEADER_RELATIONS = frozenset({"relation", "r", "rel", "relation_id", "relation_type", "relation type",
                              "predicate", "pred", "p", "edge", "edge_type", "label", "type", "property"})
HEADER_TAILS = frozenset({"tail", "t", "tail_id", "tail_entity", "tail entity", "object", "obj", "o",
                          "target", "tgt", "dst", "destination", "to", "e2", "entity2", "entity_2", "node2", "end"})


@contextlib.contextmanager
def _open_utf8(path: str, warnings: Optional[List[str]]) -> Iterator[TextIO]:
    """``path`` opened as UTF-8 text with a leading byte-order mark consumed (and warned about).

    A decoding error anywhere while the caller reads becomes a :class:`KGFormatError` that names the
    line and byte. The happy path is plain text-mode iteration (the fastest way to read lines;
    decoding each line from bytes was 15 % slower on FB15k-237's train.txt), so the bad byte is
    located afterwards by a second, binary pass that only runs on failure.
    """
    with open(path, "rb") as probe:
        start = probe.read(len(codecs.BOM_UTF8))
    with open(path, encoding="utf-8") as handle:
        if start == codecs.BOM_UTF8:
            # Without the strip the BOM would become part of the first name ("\ufeffnetherlands") or,
            # in a dict file, make the first id unparsable.
            handle.read(1)
            add_warning(warnings, f"{path}: 1 UTF-8 byte-order mark at the start of the file; stripped it")
        try:
            yield handle
        except UnicodeDecodeError as error:
            raise _locate_decode_error(path, error) from error


def _locate_decode_error(path: str, error: UnicodeDecodeError) -> KGFormatError:
    """A KGFormatError naming the line, the byte offset and the bytes of the first non-UTF-8 line."""
    with open(path, "rb") as handle:
        start = handle.read(2)
        handle.seek(0)
        hint = ("; the file starts with a UTF-16 byte-order mark: save it as UTF-8"
                if start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "")
        offset = 0
        for line_number, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as line_error:
                bad = raw[line_error.start:line_error.end]
                context = raw[max(0, line_error.start - 40):line_error.start + 20]
                return KGFormatError(f"{path}, line {line_number}: expected UTF-8 text, got the byte(s) {bad!r} at "
                                     f"byte offset {line_error.start} of the line ({offset + line_error.start} of the "
                                     f"file; {line_error.reason}), in {context!r}{hint}")
            offset += len(raw)
    # Decodes line by line but not as a whole: cannot happen for UTF-8, kept so that no error is lost.
    return KGFormatError(f"{path}: expected UTF-8 text ({error}){hint}")


def read_dict(path: str, warnings: Optional[List[str]] = None) -> Tuple[Dict[str, int], List[str]]:
    """Read ``<id> TAB <name>`` lines; ids must be exactly 0..n-1.

    Returns (name -> id, names by id). A leading UTF-8 BOM is stripped and reported in ``warnings``.
    """
    name_to_id: Dict[str, int] = {}
    line_of_id: Dict[int, int] = {}
    with _open_utf8(path, warnings) as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip().isdigit():
                raise KGFormatError(f"{path}, line {line_number}: expected '<integer id>\\t<name>', "
                                    f"got {preview(line)}")
            identifier, name = int(fields[0]), fields[1]
            if name in name_to_id:
                raise KGFormatError(f"{path}, line {line_number}: name {preview(name)} appears twice; "
                                    f"expected each name once")
            if identifier in line_of_id:
                raise KGFormatError(f"{path}, line {line_number}: id {identifier} was already given on line "
                                    f"{line_of_id[identifier]}; expected each id once")
            name_to_id[name] = identifier
            line_of_id[identifier] = line_number
    if name_to_id and max(line_of_id) != len(name_to_id) - 1:
        absent = min(set(range(len(name_to_id))) - set(line_of_id))
        raise KGFormatError(f"{path}: expected ids 0..{len(name_to_id) - 1} each exactly once for "
                            f"{len(name_to_id)} names; id {absent} is missing and the largest is {max(line_of_id)}")
    names = [""] * len(name_to_id)
    for name, identifier in name_to_id.items():
        names[identifier] = name
    return name_to_id, names


def read_triples(path: str, warnings: Optional[List[str]] = None) -> List[Tuple[str, str, str, int]]:
    """Read ``head TAB relation TAB tail`` lines as strings, keeping each line number.

    Blank lines are skipped; a leading UTF-8 BOM is stripped and reported in ``warnings``. Header
    lines are not recognised here (that needs the dict files): see :func:`load_tsv_folder`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; expected one 'head<TAB>relation<TAB>tail' triple per line")
    triples = []
    with _open_utf8(path, warnings) as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3 or not all(fields):
                raise KGFormatError(f"{path}, line {line_number}: expected 3 tab-separated fields "
                                    f"(head, relation, tail), got {len(fields)}: {preview(line)}")
            triples.append((fields[0], fields[1], fields[2], line_number))
    if not triples:
        raise KGFormatError(f"{path}: the split is empty; expected at least one triple")
    return triples


def looks_like_header(head: str, relation: str, tail: str) -> bool:
    """True for column names such as ``head relation tail``, ``subject predicate object``, ``h r t``."""
    def clean(field: str) -> str:
        return field.strip().lstrip("#").strip().lower()

    return clean(head) in HEADER_HEADS and clean(relation) in HEADER_RELATIONS and clean(tail) in HEADER_TAILS


def load_tsv_folder(folder: str, name: Optional[str] = None) -> KG:
    """Load ``folder/{train,valid,test}.txt`` (+ optional ``entities.dict``/``relations.dict``).

    A split file's first line that names the columns (:func:`looks_like_header`) is skipped with a
    warning, unless the dict files list all three of its names (then it is data). The KG's
    ``warnings`` hold those and the split-level checks of :meth:`KG.check_splits`.
    """
    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder; expected train.txt, valid.txt, test.txt inside")
    warnings: List[str] = []
    entity_dict = os.path.join(folder, "entities.dict")
    relation_dict = os.path.join(folder, "relations.dict")
    fixed = {}
    for what, path in (("entity", entity_dict), ("relation", relation_dict)):
        fixed[what] = read_dict(path, warnings) if os.path.exists(path) else None
    raw = {split: read_triples(os.path.join(folder, file), warnings) for split, file in SPLIT_FILES.items()}

    def is_data(what: str, value: str) -> bool:
        return fixed[what] is not None and value in fixed[what][0]

    for split, rows in raw.items():
        head, relation, tail, line_number = rows[0]
        if looks_like_header(head, relation, tail) and not (
                is_data("entity", head) and is_data("relation", relation) and is_data("entity", tail)):
            path = os.path.join(folder, SPLIT_FILES[split])
            header = "\t".join((head, relation, tail))
            add_warning(warnings, f"{path}, line {line_number}: 1 header line {preview(header)}; skipped it")
            del rows[0]
            if not rows:
                raise KGFormatError(f"{path}: the split is empty after its header line; expected at least one triple")

    tables = {}
    for what in ("entity", "relation"):
        if fixed[what] is not None:
            tables[what] = fixed[what]
        else:
            tables[what] = ({}, [])

    def lookup(what: str, value: str, path: str, line_number: int) -> int:
        name_to_id, names = tables[what]
        identifier = name_to_id.get(value)
        if identifier is None:
            if fixed[what] is not None:
                dict_path = entity_dict if what == "entity" else relation_dict
                raise KGFormatError(f"{path}, line {line_number}: {what} {preview(value)} is not in {dict_path}; "
                                    f"expected every name in the splits to be covered by the dict")
            identifier = len(names)
            name_to_id[value] = identifier
            names.append(value)
        return identifier

    splits = {}
    for split, rows in raw.items():
        path = os.path.join(folder, SPLIT_FILES[split])
        ids = [(lookup("entity", h, path, n), lookup("relation", r, path, n), lookup("entity", t, path, n))
               for h, r, t, n in rows]
        splits[split] = torch.tensor(ids, dtype=torch.int64)
    kg = KG(name=name or os.path.basename(folder), num_entities=len(tables["entity"][1]),
            num_relations=len(tables["relation"][1]), entity_names=tables["entity"][1],
            relation_names=tables["relation"][1], warnings=warnings, **splits)
    kg.check_splits()
    return kg
