"""Load the OGB knowledge graphs ``ogbl-wikikg2`` and ``ogbl-biokg`` as a :class:`KG`.

Reading goes through the real ``ogb.linkproppred.LinkPropPredDataset`` (which checks the release,
downloads when asked, and parses and processes the graph). The split files are the ones its
``get_edge_split()`` reads, read here array by array (``torchfile.load_id_arrays``) so that the
negatives of wikikg2's valid / test (8.2 GB as int64) never sit in memory whole. The on-disk layout
ogb expects under ``root`` is::

    <root>/ogbl_wikikg2/                       (the zip's folder ``wikikg-v2``, renamed)
        RELEASE_v1.txt
        raw/edge.csv.gz, raw/edge_reltype.csv.gz, raw/num-node-list.csv.gz, raw/num-edge-list.csv.gz
            (or processed/data_processed, written by ogb after the first load)
        split/time/train.pt, valid.pt, test.pt
        mapping/nodeidx2entityid.csv.gz, mapping/reltype2relid.csv.gz   (optional: names)
    <root>/ogbl_biokg/                         (the zip's folder ``biokg``, renamed)
        RELEASE_v1.txt
        raw/num-node-dict.csv.gz, raw/triplet-type-list.csv.gz,
        raw/relations/<head type>___<relation>___<tail type>/edge.csv.gz, num-edge-list.csv.gz
            (and edge_reltype.csv.gz), one folder per line of triplet-type-list.csv.gz
            (or processed/data_processed)
        split/random/train.pt, valid.pt, test.pt
        mapping/<type>_entidx2name.csv.gz, mapping/relidx2relname.csv.gz  (optional: names)

The split files are ``torch.save``d dicts of numpy arrays (torch tensors are accepted too):
``head``, ``relation``, ``tail`` (n,), valid/test also ``head_neg``, ``tail_neg`` (n, K); biokg adds
``head_type``/``tail_type`` (n,) type-name strings, and its ids (negatives included) are LOCAL to
the entity type. They are made global with one offset per type, types in sorted name order, the
order of ogb's ``num_nodes_dict`` and of OGB's own biokg example (``entity_dict``).

ogb asks ``input()`` when the dataset folder lacks ``RELEASE_v1.txt`` (and before downloads over
1 GB); this module checks the files first and never lets ogb prompt.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import urllib.error
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from .. import compat
from .kg import KG, SPLITS, KGFormatError

OGB_DATASETS = ("ogbl-wikikg2", "ogbl-biokg")
log = logging.getLogger("kbit_dgl")

# Fallbacks for the fields of ogb's linkproppred/master.csv that this module needs.
_META_FALLBACK = {
    "ogbl-wikikg2": {"version": "1", "split": "time", "is hetero": "False",
                     "url": "http://snap.stanford.edu/ogb/data/linkproppred/wikikg-v2.zip",
                     "download_name": "wikikg-v2"},
    "ogbl-biokg": {"version": "1", "split": "random", "is hetero": "True",
                   "url": "http://snap.stanford.edu/ogb/data/linkproppred/biokg.zip",
                   "download_name": "biokg"},
}
_HOMO_RAW = ("edge.csv.gz", "edge_reltype.csv.gz", "num-node-list.csv.gz", "num-edge-list.csv.gz")
_HETERO_RAW = ("num-node-dict.csv.gz", "triplet-type-list.csv.gz")
_HETERO_RELATION_RAW = ("edge.csv.gz", "num-edge-list.csv.gz")


def ogb_dataset_dir(name: str, root: str) -> str:
    """The folder ogb reads ``name`` from: ``root/<name with '-' replaced by '_'>``."""
    _check_name(name)
    return os.path.join(root, name.replace("-", "_"))


def missing_ogb_files(name: str, root: str) -> List[str]:
    """Paths that must exist before ``LinkPropPredDataset(name, root)`` can load without a download.

    Empty when everything is there. Raw graph files are not needed when ``processed/data_processed``
    exists; split files are not needed when ``split/<type>/split_dict.pt`` exists.
    """
    meta = _meta(name)
    base = ogb_dataset_dir(name, root)
    missing: List[str] = []
    release = os.path.join(base, f"RELEASE_v{meta['version']}.txt")
    if not os.path.isfile(release):
        missing.append(release)
    if not os.path.isfile(os.path.join(base, "processed", "data_processed")):
        raw = os.path.join(base, "raw")
        if meta["is hetero"] == "True":
            missing += [p for p in (os.path.join(raw, f) for f in _HETERO_RAW) if not os.path.isfile(p)]
            triplet_file = os.path.join(raw, "triplet-type-list.csv.gz")
            if os.path.isfile(triplet_file):
                for triplet in _read_triplet_types(triplet_file):
                    folder = os.path.join(raw, "relations", "___".join(triplet))
                    missing += [p for p in (os.path.join(folder, f) for f in _HETERO_RELATION_RAW)
                                if not os.path.isfile(p)]
            else:
                missing.append(os.path.join(raw, "relations", "<head type>___<relation>___<tail type>",
                                            "{edge.csv.gz,num-edge-list.csv.gz,edge_reltype.csv.gz}"
                                            " (one folder per line of triplet-type-list.csv.gz)"))
        else:
            missing += [p for p in (os.path.join(raw, f) for f in _HOMO_RAW) if not os.path.isfile(p)]
    split_dir = os.path.join(base, "split", meta["split"])
    if not os.path.isfile(os.path.join(split_dir, "split_dict.pt")):
        missing += [p for p in (os.path.join(split_dir, f"{s}.pt") for s in SPLITS) if not os.path.isfile(p)]
    return missing


def load_ogb(name: str, root: str, download: bool = False, cache: bool = True) -> KG:
    """Load ``ogbl-wikikg2`` or ``ogbl-biokg`` from ``root`` through ogb's ``LinkPropPredDataset``.

    With ``download=False`` (the default) the files are checked first and a ``FileNotFoundError``
    lists every missing path. With ``download=True`` the check is skipped and ogb downloads and
    unpacks the release when the files are missing (needs network access).

    ``cache``: the first load through ogb also writes a compact copy to
    ``<dataset>/processed/kbit_cache/`` (triples as ``.npy``, OGB's negatives as int32 ``.npy``,
    the names), and later loads read that instead, with the negatives memory-mapped (resident only
    as evaluation reads them). The cache records the size and modification time of every source
    file (RELEASE, raw/, split/, mapping/) and is rebuilt through ogb when any of them changes.
    Even the first load keeps memory near one negative array: each is narrowed to int32 as it is
    read and written into the new cache at once (without a cache, held in memory as int32).
    """
    meta = _meta(name)
    base = ogb_dataset_dir(name, root)
    release = os.path.join(base, f"RELEASE_v{meta['version']}.txt")
    if download:
        if os.path.isdir(base) and not os.path.isfile(release):
            # ogb would ask interactively whether to delete the folder; refuse instead.
            raise FileNotFoundError(
                f"{name}: {release} is missing, so ogb would ask interactively whether to replace "
                f"{base}. Delete {base} to let ogb download a fresh copy, or add {release} if the "
                f"folder holds the current (version {meta['version']}) release.")
    else:
        missing = missing_ogb_files(name, root)
        if missing:
            raise FileNotFoundError(_missing_message(name, root, meta, missing))
    if os.path.isfile(release):
        # ogb torch.saves its processed graph to processed/data_processed without creating the folder.
        os.makedirs(os.path.join(base, "processed"), exist_ok=True)

    fingerprint = _source_fingerprint(base) if cache and os.path.isfile(release) else None
    if fingerprint is not None:
        kg = _read_cache(name, base, fingerprint)
        if kg is not None:
            return kg

    os.environ.setdefault("OUTDATED_IGNORE", "1")  # ogb's version check would reach for the network
    from ogb.linkproppred import LinkPropPredDataset

    _check_processed_graph(base)

    try:
        with _no_ogb_prompts():
            dataset = LinkPropPredDataset(name=name, root=root)
    except urllib.error.URLError as error:
        raise FileNotFoundError(f"{name}: could not download {meta['url']} ({error}); "
                                + _placement_help(name, root, meta)) from error
    graph = dataset[0]
    split_dir = os.path.join(base, "split", meta["split"])
    sources = {s: (os.path.join(split_dir, "split_dict.pt")
                   if os.path.isfile(os.path.join(split_dir, "split_dict.pt"))
                   else os.path.join(split_dir, f"{s}.pt")) for s in SPLITS}
    # The split files are the ones ogb's get_edge_split() reads, read here array by array: the large
    # negative arrays are narrowed to int32 as they arrive and, when caching, written straight into
    # the new cache folder and memory-mapped, so that the first load peaks near one array's size.
    temp = _new_cache_folder(base) if fingerprint is not None else None
    narrow = _NarrowIds(temp)
    try:
        split_dict = _read_split_files(sources, narrow)
        if meta["is hetero"] == "True":
            kg = _build_hetero(name, base, graph, split_dict, sources)
        else:
            kg = _build_homo(name, base, graph, split_dict, sources)
        del split_dict, graph, dataset
        kg.check_splits()
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    if temp is not None:
        _write_cache(kg, base, fingerprint, temp, narrow.written)
    return kg


# ------------------------------------------------------------------------------------ the compact cache

CACHE_FORMAT = "kbit-dgl-ogb-cache/1"


def _cache_dir(base: str) -> str:
    return os.path.join(base, "processed", "kbit_cache")


def _source_fingerprint(base: str) -> Dict[str, List[int]]:
    """``{relative path: [size, mtime_ns]}`` of every source file (not processed/, which is derived)."""
    files: Dict[str, List[int]] = {}
    for top in ("raw", "split", "mapping"):
        for folder, _, names in os.walk(os.path.join(base, top)):
            for file_name in names:
                path = os.path.join(folder, file_name)
                info = os.stat(path)
                files[os.path.relpath(path, base)] = [info.st_size, info.st_mtime_ns]
    for file_name in os.listdir(base):
        if file_name.startswith("RELEASE"):
            info = os.stat(os.path.join(base, file_name))
            files[file_name] = [info.st_size, info.st_mtime_ns]
    return files


def _new_cache_folder(base: str) -> Optional[str]:
    """A fresh temporary folder beside the cache (renamed into place when complete), or None if none can be made."""
    import tempfile

    try:
        os.makedirs(os.path.join(base, "processed"), exist_ok=True)
        return tempfile.mkdtemp(dir=os.path.join(base, "processed"), prefix=".kbit_cache.")
    except OSError as error:
        log.warning("could not create a folder for the compact cache under %s (%s)", base, error)
        return None


def _write_cache(kg: KG, base: str, fingerprint: Dict[str, List[int]], temp: str,
                 written: Sequence["_LargeIds"] = ()) -> None:
    """Complete the cache in ``temp`` and rename it into place (a reader never sees half).

    ``written``: negative arrays already narrowed into files of ``temp`` while reading; those the KG
    holds unchanged are renamed into place instead of written again.
    """
    import json

    target = _cache_dir(base)
    try:
        for split in SPLITS:
            np.save(os.path.join(temp, f"{split}.npy"), kg.split(split).numpy())
        for split, arrays in kg.negatives.items():
            for key, value in arrays.items():
                path = os.path.join(temp, f"{split}_{key}.npy")
                same = next((ids for ids in written if ids.path is not None and ids.loaded is value), None)
                if same is not None:
                    os.replace(same.path, path)
                    continue
                if int(value.max()) >= 2 ** 31:
                    raise OverflowError("entity ids beyond int32")
                np.save(path, value.numpy().astype(np.int32, copy=False))
        for ids in written:  # narrowed while reading but not kept as they were (biokg's local ids)
            if ids.path is not None and os.path.exists(ids.path):
                os.remove(ids.path)
        if kg.entity_type is not None:
            np.save(os.path.join(temp, "entity_type.npy"), kg.entity_type.numpy())
        for what, names in (("entity", kg.entity_names), ("relation", kg.relation_names)):
            if any("\n" in name for name in names):
                raise ValueError("a name holds a line break")
            with open(os.path.join(temp, f"{what}_names.txt"), "w", encoding="utf-8") as handle:
                handle.write("\n".join(names))
        meta = {"format": CACHE_FORMAT, "name": kg.name, "num_entities": kg.num_entities,
                "num_relations": kg.num_relations, "type_names": kg.type_names,
                "negatives": {split: sorted(arrays) for split, arrays in kg.negatives.items()},
                "sources": fingerprint}
        with open(os.path.join(temp, "meta.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(temp, target)
    except (OSError, OverflowError, ValueError) as error:  # no cache is no error: the next load goes through ogb
        log.warning("%s: could not write the compact cache %s (%s)", kg.name, target, error)
        shutil.rmtree(temp, ignore_errors=True)
        # The KG may hold memory maps of files in ``temp``: they stay readable after the unlink.


def _read_cache(name: str, base: str, fingerprint: Dict[str, List[int]]) -> Optional[KG]:
    """The KG from a cache written for exactly these source files, or None (absent, stale, damaged)."""
    import json

    folder = _cache_dir(base)
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("sources") != fingerprint or meta.get("name") != name:
        log.info("%s: the compact cache in %s is stale (the source files changed); reading through ogb",
                 name, folder)
        return None
    try:
        splits = {split: torch.from_numpy(np.load(os.path.join(folder, f"{split}.npy"))) for split in SPLITS}
        # copy-on-write maps: pages are read when evaluation touches them, and nothing is written back
        negatives = {split: {key: torch.from_numpy(np.load(os.path.join(folder, f"{split}_{key}.npy"),
                                                            mmap_mode="c")) for key in keys}
                     for split, keys in meta["negatives"].items()}
        names = {}
        for what in ("entity", "relation"):
            with open(os.path.join(folder, f"{what}_names.txt"), encoding="utf-8") as handle:
                names[what] = handle.read().split("\n")
        type_path = os.path.join(folder, "entity_type.npy")
        entity_type = torch.from_numpy(np.load(type_path)) if os.path.exists(type_path) else None
    except (OSError, ValueError) as error:
        log.warning("%s: the compact cache in %s is unreadable (%s); reading through ogb", name, folder, error)
        return None
    kg = KG(name=name, train=splits["train"], valid=splits["valid"], test=splits["test"],
            num_entities=meta["num_entities"], num_relations=meta["num_relations"], entity_names=names["entity"],
            relation_names=names["relation"], negatives=negatives, entity_type=entity_type,
            type_names=meta["type_names"])
    kg.check_splits()
    return kg


# --------------------------------------------------------------------------------------------- helpers

def _check_name(name: str) -> None:
    if name not in OGB_DATASETS:
        raise ValueError(f"unknown OGB knowledge graph {name!r}; expected one of {OGB_DATASETS}")


def _meta(name: str) -> Dict[str, str]:
    _check_name(name)
    meta = dict(_META_FALLBACK[name])
    spec = importlib.util.find_spec("ogb")  # locate master.csv without importing ogb (slow)
    if spec is not None and spec.origin:
        path = os.path.join(os.path.dirname(spec.origin), "linkproppred", "master.csv")
        if os.path.isfile(path):
            master = pd.read_csv(path, index_col=0, keep_default_na=False)
            if name in master:
                for key in meta:
                    if key in master.index:
                        meta[key] = str(master[name][key])
    return meta


def _read_triplet_types(path: str) -> List[Tuple[str, str, str]]:
    frame = pd.read_csv(path, compression="gzip", header=None, dtype=str)
    if frame.shape[1] != 3:
        raise KGFormatError(f"{path}: expected 3 columns (head type, relation, tail type), "
                            f"got {frame.shape[1]}")
    return sorted(tuple(row) for row in frame.itertuples(index=False))


def _placement_help(name: str, root: str, meta: Dict[str, str]) -> str:
    base = ogb_dataset_dir(name, root)
    return (f"download {meta['url']}, unzip it into {root} and rename the unpacked folder "
            f"{meta['download_name']!r} to {os.path.basename(base)!r} (so that {base} holds "
            f"RELEASE_v{meta['version']}.txt, raw/ and split/{meta['split']}/), or call "
            f"load_ogb({name!r}, {root!r}, download=True) to let ogb download it when the network allows.")


def _missing_message(name: str, root: str, meta: Dict[str, str], missing: Sequence[str]) -> str:
    base = ogb_dataset_dir(name, root)
    lines = [f"{name}: {len(missing)} file(s) missing under {base}:"]
    lines += [f"  {path}" for path in missing]
    lines.append("The raw/ files may be replaced by processed/data_processed, which ogb writes after "
                 "its first load.")
    lines.append("To fix: " + _placement_help(name, root, meta))
    return "\n".join(lines)


def _no_ogb_prompts():
    """Within: ogb can never block on a prompt (:func:`kbit_dgl.compat.ogb_without_prompts`)."""
    return compat.ogb_without_prompts()


def _ids(value: Any, source: str, key: str, ndim: int) -> Any:
    """An integer id array (numpy, tensor or list) as an int64 tensor of ``ndim`` dimensions.

    A :class:`_LargeIds` (a large array narrowed while reading) is returned as it is, after the shape check.
    """
    if isinstance(value, _LargeIds):
        if value.dim() != ndim:
            raise KGFormatError(f"{source}: {key!r} must be {ndim}-dimensional, got shape {value.shape}")
        return value
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise KGFormatError(f"{source}: {key!r} is not an id array ({error})") from None
        if array.dtype.kind not in "iu":
            raise KGFormatError(f"{source}: {key!r} must hold integer ids, got dtype {array.dtype}")
        tensor = torch.from_numpy(array.astype(np.int64, copy=False))
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise KGFormatError(f"{source}: {key!r} must hold integer ids, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.int64)
    if tensor.dim() == 2 and ndim == 1 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != ndim:
        raise KGFormatError(f"{source}: {key!r} must be {ndim}-dimensional, got shape {tuple(tensor.shape)}")
    return tensor.contiguous()


def _field(split: Dict[str, Any], source: str, key: str) -> Any:
    if not isinstance(split, dict):
        raise KGFormatError(f"{source}: expected a dict of arrays, got {type(split).__name__}")
    if key not in split:
        raise KGFormatError(f"{source}: key {key!r} missing; found keys {sorted(split)}")
    return split[key]


class _LargeIds:
    """A large id array of a split file, narrowed to int32 as it was read: in memory, or in an ``.npy`` file.

    ``low`` / ``high`` are its smallest and largest ids, so range checks need not read it again.
    """

    def __init__(self, shape: Tuple[int, ...], low: int, high: int, array: Optional[np.ndarray] = None,
                 path: Optional[str] = None) -> None:
        self.shape, self.low, self.high, self.path = tuple(shape), low, high, path
        self._array = array
        self.loaded: Optional[torch.Tensor] = None

    def dim(self) -> int:
        return len(self.shape)

    def tensor(self) -> torch.Tensor:
        """The ids as an int32 tensor; a file is memory-mapped copy-on-write (pages are read as used)."""
        if self.loaded is None:
            array = self._array if self._array is not None else np.load(self.path, mmap_mode="c")
            self.loaded = torch.from_numpy(array)
            self._array = None
        return self.loaded


class _NarrowIds:
    """``on_array`` for :func:`torchfile.load_id_arrays`: (n, K) negatives become int32 copies, written to
    ``folder`` when given; other arrays are copied as they are."""

    def __init__(self, folder: Optional[str]) -> None:
        self.folder = folder
        self.written: List[_LargeIds] = []

    def __call__(self, array: np.ndarray) -> Any:
        if array.ndim != 2:  # triple columns: kept as int64 arrays (16M per column for wikikg2's train)
            return array.copy()
        low, high = int(array.min()), int(array.max())
        if low < -2 ** 31 or high >= 2 ** 31:
            return array.copy()  # not narrowable: kept as read, and the range check names the bad id
        narrowed = array.astype(np.int32)
        if self.folder is None:
            return _LargeIds(array.shape, low, high, array=narrowed)
        path = os.path.join(self.folder, f".read-{len(self.written)}.npy")
        np.save(path, narrowed)
        ids = _LargeIds(array.shape, low, high, path=path)
        self.written.append(ids)
        return ids


def _check_processed_graph(base: str) -> None:
    """Refuse a ``processed/data_processed`` that holds anything but array data, before ogb reads it.

    ogb reads that file with a plain ``torch.load`` (full unpickling, able to run code); here it is read
    first by the restricted unpickler of :mod:`.torchfile`, array by array (each one dropped at once),
    and a file that asks for any other global raises its :class:`~.torchfile.UnsafePickleError`.

    A file the restricted reader cannot read to its end for any other reason is refused too, never
    handed to ogb: what stops the reader early (a ``bytes(5)``, a tensor past its storage) may come
    before a global that ogb's ``torch.load`` would call. ogb rebuilds the file from ``raw/`` when it
    is missing, so the remedy is to delete it.
    """
    from .torchfile import UnsafePickleError, load_id_arrays

    path = os.path.join(base, "processed", "data_processed")
    if not os.path.isfile(path):
        return
    try:
        load_id_arrays(path, lambda array: None)
    except (UnsafePickleError, MemoryError):
        raise
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise KGFormatError(f"{path}: not readable as array data ({type(error).__name__}: {first:.200}); ogb "
                            f"would read it with torch.load, which can run code, so it is not read. Delete it "
                            f"(ogb rebuilds it from {os.path.join(base, 'raw')})") from None


def _read_split_files(sources: Dict[str, str], narrow: _NarrowIds) -> Dict[str, Any]:
    """``{split: dict of arrays}`` from the files ogb's ``get_edge_split`` reads, large arrays narrowed.

    ``split_dict.pt`` (when present) holds all three splits, as in ogb; otherwise one file per split.
    """
    from .torchfile import load_id_arrays

    loaded: Dict[str, Any] = {}
    for path in dict.fromkeys(sources.values()):
        try:
            loaded[path] = load_id_arrays(path, narrow)
        except (MemoryError, KGFormatError):  # KGFormatError: a refused global, already naming the file
            raise
        except Exception as error:  # a truncated or foreign file: pickle, zip, EOF or torch errors
            raise KGFormatError(f"{path}: torch.load cannot read it ({type(error).__name__}: {error}); expected "
                                f"a torch.save'd dict of id arrays as in OGB's release. The file may be truncated "
                                f"or damaged: download or unpack it again") from error
    split_dict = {}
    for split, path in sources.items():
        content = loaded[path]
        if os.path.basename(path) == "split_dict.pt":
            content = content.get(split) if isinstance(content, dict) else None
        if content is not None:
            split_dict[split] = content
    return split_dict


def _large_tensor(values: Any) -> torch.Tensor:
    return values.tensor() if isinstance(values, _LargeIds) else values


def _check_range(values: torch.Tensor, low: int, high: int, source: str, what: str, why: str = "") -> None:
    """KGFormatError naming file, row (and column for (n, K) arrays), the id and the allowed range.

    Runs before anything sized by the ids is allocated: it only builds a mask of ``values``' shape.
    Narrowed arrays are checked by their recorded smallest and largest id, without reading them.
    """
    if isinstance(values, _LargeIds):
        if low <= values.low and values.high < high:
            return
        values = values.tensor()
    bad = (values < low) | (values >= high)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        key = what.split()[0]
        where = f"row {index[0]} (column {key!r})" if len(index) == 1 else f"row {index[0]}, column {index[1]}"
        raise KGFormatError(f"{source}: {what} {int(values[index])} at {where} is out of range; "
                            f"expected {low} <= id < {high}" + (f" ({why})" if why else ""))


def _read_split(split_dict: Dict[str, Any], split: str, source: str, typed: bool):
    """Triple columns, optional negatives and (biokg) type names of one split."""
    data = split_dict.get(split) if isinstance(split_dict, dict) else None
    if data is None:
        raise KGFormatError(f"{source}: split {split!r} missing")
    head, relation, tail = (_ids(_field(data, source, key), source, key, 1)
                            for key in ("head", "relation", "tail"))
    if not len(head) == len(relation) == len(tail):
        raise KGFormatError(f"{source}: 'head', 'relation' and 'tail' differ in length "
                            f"({len(head)}, {len(relation)}, {len(tail)})")
    negatives = None
    if "head_neg" in data or "tail_neg" in data:
        head_neg = _ids(_field(data, source, "head_neg"), source, "head_neg", 2)
        tail_neg = _ids(_field(data, source, "tail_neg"), source, "tail_neg", 2)
        for key, neg in (("head_neg", head_neg), ("tail_neg", tail_neg)):
            if neg.shape[0] != len(head) or neg.shape[1] == 0:
                raise KGFormatError(f"{source}: {key!r} has shape {tuple(neg.shape)}; expected (n, K) with n = "
                                    f"{len(head)} triples and K >= 1 candidates per triple")
        negatives = (head_neg, tail_neg)
    types = None
    if typed:
        types = []
        for key in ("head_type", "tail_type"):
            value = _field(data, source, key)
            names = np.asarray(value.tolist() if isinstance(value, torch.Tensor) else value, dtype=object)
            if names.ndim != 1 or len(names) != len(head):
                raise KGFormatError(f"{source}: {key!r} must hold one type name per triple "
                                    f"({len(head)}), got shape {names.shape}")
            codes, uniques = pd.factorize(names)  # hash-based: fast for biokg's millions of strings
            if (codes < 0).any():
                raise KGFormatError(f"{source}: {key!r} has a missing type name at row "
                                    f"{int(np.flatnonzero(codes < 0)[0])}")
            types.append((codes, [str(u) for u in uniques]))
    return head, relation, tail, negatives, types


def _mapping_names(path: str, count: int, what: str) -> Optional[List[str]]:
    """The first ``count`` names of an OGB mapping file (columns: index, name), or None when absent."""
    names = _read_mapping(path, what)
    if names is None:
        return None
    if len(names) < count:
        raise KGFormatError(f"{path}: expected indices 0..n-1 each once with n >= {count} {what}s, "
                            f"got {len(names)} rows")
    return names[:count]


def _read_mapping(path: str, what: str) -> Optional[List[str]]:
    """All names of an OGB mapping file by index, or None when the file is absent."""
    if not os.path.isfile(path):
        return None
    frame = pd.read_csv(path, compression="gzip", dtype=str, keep_default_na=False)
    if frame.shape[1] < 2:
        raise KGFormatError(f"{path}: expected 2 columns (index, {what} name), got {frame.shape[1]}")
    try:
        index = frame.iloc[:, 0].astype(np.int64).to_numpy()
    except ValueError:
        raise KGFormatError(f"{path}: the first column must hold integer indices") from None
    if not np.array_equal(np.sort(index), np.arange(len(index))):
        raise KGFormatError(f"{path}: expected indices 0..n-1 each once, got {len(index)} rows with other indices")
    names = np.empty(len(index), dtype=object)
    names[index] = frame.iloc[:, 1].to_numpy()
    return [str(n) for n in names]


def _relation_count(graph_rel: Sequence[np.ndarray], splits: Dict[str, torch.Tensor],
                    sources: Dict[str, str], graph_source: str, mapping_path: str) -> int:
    """The number of relations: one more than the largest id of the graph and the splits.

    The count sizes the relation names and embedding tables, so every split id is bounded first
    (one corrupt id of 10^9 once grew loading to ~24 GB): by the rows of the relation mapping file
    when there is one; otherwise by the graph's ids plus one per split triple beyond them (a larger
    id would leave ids without a single triple). ogb's processed graph itself is trusted.
    """
    graph_count = 0
    for values in graph_rel:
        values = np.asarray(values)
        if values.size:
            if values.min() < 0:
                raise KGFormatError(f"{graph_source}: negative relation id {int(values.min())}")
            graph_count = max(graph_count, int(values.max()) + 1)
    mapped = _read_mapping(mapping_path, "relation")
    if mapped is not None:
        limit, why = len(mapped), f"the {len(mapped)} relations of {mapping_path}"
    else:
        beyond = sum(int((relation >= graph_count).sum()) for relation in splits.values())
        limit = graph_count + beyond
        why = (f"the graph in {graph_source} uses relation ids below {graph_count} and {beyond} split "
               f"triple{'' if beyond == 1 else 's'} a larger one, so at most {limit} ids can have a triple")
    top = graph_count - 1
    for split, relation in splits.items():
        _check_range(relation, 0, limit, sources[split], "relation id", why)
        if len(relation):
            top = max(top, int(relation.max()))
    return top + 1


def _build_homo(name: str, base: str, graph: Dict[str, Any], split_dict: Dict[str, Any],
                sources: Dict[str, str]) -> KG:
    graph_source = os.path.join(base, "raw")
    num_entities = int(graph["num_nodes"])
    triples, negatives, relations = {}, {}, {}
    for split in SPLITS:
        head, relation, tail, negs, _ = _read_split(split_dict, split, sources[split], typed=False)
        _check_range(head, 0, num_entities, sources[split], "head id")
        _check_range(tail, 0, num_entities, sources[split], "tail id")
        if negs is not None:
            _check_range(negs[0], 0, num_entities, sources[split], "head_neg id")
            _check_range(negs[1], 0, num_entities, sources[split], "tail_neg id")
            if split != "train":
                negatives[split] = {"head_neg": _large_tensor(negs[0]), "tail_neg": _large_tensor(negs[1])}
        relations[split] = relation
        triples[split] = torch.stack([head, relation, tail], dim=1)
    reltype = graph.get("edge_reltype")
    mapping = os.path.join(base, "mapping")
    num_relations = _relation_count([] if reltype is None else [reltype], relations, sources, graph_source,
                                    os.path.join(mapping, "reltype2relid.csv.gz"))
    entity_names = (_mapping_names(os.path.join(mapping, "nodeidx2entityid.csv.gz"), num_entities, "entity")
                    or [str(i) for i in range(num_entities)])
    relation_names = (_mapping_names(os.path.join(mapping, "reltype2relid.csv.gz"), num_relations, "relation")
                      or [str(i) for i in range(num_relations)])
    return KG(name=name, train=triples["train"], valid=triples["valid"], test=triples["test"],
              num_entities=num_entities, num_relations=num_relations, entity_names=entity_names,
              relation_names=relation_names, negatives=negatives)


def _build_hetero(name: str, base: str, graph: Dict[str, Any], split_dict: Dict[str, Any],
                  sources: Dict[str, str]) -> KG:
    graph_source = os.path.join(base, "raw")
    counts_by_type = {str(t): int(n) for t, n in graph["num_nodes_dict"].items()}
    type_names = sorted(counts_by_type)
    type_index = {t: i for i, t in enumerate(type_names)}
    counts = torch.tensor([counts_by_type[t] for t in type_names], dtype=torch.int64)
    offsets = torch.cumsum(counts, 0) - counts
    num_entities = int(counts.sum())

    triples, negatives, relations = {}, {}, {}
    for split in SPLITS:
        source = sources[split]
        head, relation, tail, negs, types = _read_split(split_dict, split, source, typed=True)
        head_types, tail_types = types
        global_ids = []
        type_ids = []
        for key, local, (codes, unique) in (("head", head, head_types), ("tail", tail, tail_types)):
            unknown = [u for u in unique if u not in type_index]
            if unknown:
                raise KGFormatError(f"{source}: {key}_type {unknown[0]!r} is not a node type of the graph; "
                                    f"expected one of {type_names}")
            types = torch.from_numpy(np.array([type_index[u] for u in unique], dtype=np.int64)[codes])
            bad = (local < 0) | (local >= counts[types])
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise KGFormatError(f"{source}: {key} id {int(local[row])} at row {row} (column {key!r}) is out of "
                                    f"range; expected 0 <= id < {int(counts[types[row]])} (local ids of type "
                                    f"{type_names[int(types[row])]!r})")
            global_ids.append(local + offsets[types])
            type_ids.append(types)
        if negs is not None:
            converted = {}
            for key, neg, types in (("head_neg", negs[0], type_ids[0]), ("tail_neg", negs[1], type_ids[1])):
                neg = _large_tensor(neg)
                bad = (neg < 0) | (neg >= counts[types][:, None])
                if bool(bad.any()):
                    row, col = (int(i) for i in bad.nonzero()[0])
                    raise KGFormatError(f"{source}: {key} id {int(neg[row, col])} at row {row}, column {col} "
                                        f"is out of range; expected 0 <= id < {int(counts[types[row]])} (local ids "
                                        f"of type {type_names[int(types[row])]!r})")
                converted[key] = neg + offsets[types][:, None]
            if split != "train":
                negatives[split] = converted
        relations[split] = relation
        triples[split] = torch.stack([global_ids[0], relation, global_ids[1]], dim=1)

    reltype = graph.get("edge_reltype") or {}
    mapping = os.path.join(base, "mapping")
    num_relations = _relation_count(list(reltype.values()), relations, sources, graph_source,
                                    os.path.join(mapping, "relidx2relname.csv.gz"))
    entity_type = torch.repeat_interleave(torch.arange(len(type_names)), counts)
    entity_names: List[str] = []
    for t in type_names:
        names = _mapping_names(os.path.join(mapping, f"{t}_entidx2name.csv.gz"), counts_by_type[t], "entity")
        entity_names += [f"{t}:{n}" for n in (names if names is not None else range(counts_by_type[t]))]
    relation_names = _mapping_names(os.path.join(mapping, "relidx2relname.csv.gz"), num_relations, "relation")
    if relation_names is None:
        relation_names = _relation_names_from_triplets(reltype, num_relations)
    return KG(name=name, train=triples["train"], valid=triples["valid"], test=triples["test"],
              num_entities=num_entities, num_relations=num_relations, entity_names=entity_names,
              relation_names=relation_names, negatives=negatives, entity_type=entity_type,
              type_names=type_names)


def _relation_names_from_triplets(reltype: Dict[Tuple[str, str, str], np.ndarray],
                                  num_relations: int) -> List[str]:
    """Relation id -> the relation part of its (head type, relation, tail type) key, where unambiguous."""
    names_by_id: Dict[int, set] = {}
    for triplet, values in reltype.items():
        for rel_id in np.unique(np.asarray(values)):
            names_by_id.setdefault(int(rel_id), set()).add(str(triplet[1]))
    names = [str(i) for i in range(num_relations)]
    chosen = {i: next(iter(s)) for i, s in names_by_id.items() if len(s) == 1}
    taken: Dict[str, int] = {}
    for name in chosen.values():
        taken[name] = taken.get(name, 0) + 1
    for i, name in chosen.items():
        if taken[name] == 1 and 0 <= i < num_relations:
            names[i] = name
    if len(set(names)) != len(names):  # a derived name equals some other id's number
        return [str(i) for i in range(num_relations)]
    return names
