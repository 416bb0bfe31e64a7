"""The run folder: its layout, its lock, its id maps, the model a config builds, and loading a run.

A trained run folder holds ``config.yaml`` (the resolved config), ``entities.dict`` and
``relations.dict`` (the id of every name, ``<id> TAB <name>``, the format of a dataset's dict
files), ``model.pt`` (the best model), ``checkpoint.pt`` (resumable), ``metrics.json`` and
``train.log``; a quantized run folder holds ``config.yaml``, the dict files, ``model.kbit.pt`` and
``quant.json``. Every model file records the fingerprint of the id maps it was trained with, so a
file from another run, or a dataset whose ids were assigned differently (re-sorted TSV files), is
detected at load: a dataset with the same names in another order is re-indexed to the run's ids,
anything else is refused.

A writer holds the folder's lock (``.lock``, a POSIX record lock that the kernel releases when the
process dies, even on kill -9), so two processes can never write one folder at once. (``lockf``
rather than ``flock``: an flock is shared with forked children, and torch.compile's forked
workers would keep it after the run ended.)
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .config import (
    Config,
    check_encoder_import,
    encoder_mode,
    needs_sparse_tables,
    reciprocal_relations,
    resolve_device,
    sparse_table_gradients,
)
from .data.kg import KG
from .errors import ConfigError, MissingRunFileError, RunFileError, RunFolderError
from .io import atomic_write_json, atomic_write_text, load_saved
from .models.decoders import make_decoder
from .models.model import KGEModel, build_model
from .models.regularizers import check_regularizer
from .quant.model import QuantizedKGEModel, quantize_model
from .quant.quantizers import QuantSpec
from .quant.storage import FILE_FORMAT, load_quantized_model, quantize_tables, save_quantized_model

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
BEST_MODEL = "model.pt"
METRICS = "metrics.json"
LOG = "train.log"
QUANT_MODEL = "model.kbit.pt"
QUANT_INFO = "quant.json"
ENTITY_IDS = "entities.dict"
RELATION_IDS = "relations.dict"
LOCK = ".lock"
#: what kbit-dgl's sweeps cache in a run folder (k-bit points, scaling stages, the subsample a run saw)
SWEEP_FILES = ("kbit_points.json", "stages.json", "subsample.json")
#: every file a run folder may hold; --overwrite removes these and refuses to remove anything else
RUN_FILES = (CONFIG, CHECKPOINT, BEST_MODEL, METRICS, LOG, QUANT_MODEL, QUANT_INFO, ENTITY_IDS, RELATION_IDS,
             LOCK) + SWEEP_FILES
log = logging.getLogger("kbit_dgl")


# ---- building a model from a config ------------------------------------------------------------

def check_config(config: Config) -> Config:
    """Validate ``config`` completely (values, ranges and names) without data or disk; returns it.

    Numbers and choices are checked by :meth:`Config.validate`; the decoder, the QAT spec and the
    encoder name are checked by building them (tables aside), so the names accepted are exactly
    those that train; the device by :func:`kbit_dgl.config.resolve_device` (is it on this machine?).
    Memory needs the dataset's size: :func:`kbit_dgl.resources.check_memory`.
    """
    config.validate()
    resolve_device(config.train.device, config.model.encoder)
    check_regularizer(config.train.regularizer, make_decoder(config.model.name, config.model.dim, config.model.gamma))
    if config.train.qat_bits not in (0, 32):
        QuantSpec(config.train.qat_bits, config.train.qat_dtype, config.train.qat_block)
    if config.model.encoder:
        from .models.encoders import resolve_encoder  # imports DGL: only for encoder runs

        resolve_encoder(config.model.encoder)
        if str(config.model.reciprocal).lower() == "true":
            raise ConfigError("model.reciprocal=true is for shallow models: an encoder already passes messages over "
                              "inverse edges; set model.reciprocal=false (or auto) with model.encoder")
    return config


def model_from_config(config: Config, kg: KG, device=None, sparse: Optional[bool] = None) -> KGEModel:
    """The untrained model ``config`` describes for ``kg`` (tables, optional encoder, decoder, QAT), to
    train on ``device`` (the tables' gradient layout follows it; default ``train.device``). ``sparse``:
    the layout the run-time settings decided (:attr:`kbit_dgl.runtime.Runtime.sparse_tables`)."""
    from .quant.qat import attach_qat  # fake quantisation when train.qat_bits is set, else a no-op

    if config.model.encoder:
        return attach_qat(_encoder_model(config, kg), config.train)
    model = build_model(config.model.name, kg.num_entities, kg.num_relations, config.model.dim, config.model.gamma,
                        reciprocal=reciprocal_relations(config.model),
                        sparse=sparse_table_gradients(config.train, device) if sparse is None else sparse)
    return attach_qat(model, config.train)


def _encoder_model(config: Config, kg: KG) -> KGEModel:
    """Tables -> GNN encoder (``model.encoder``, ``encoder.*``) -> decoder; imports DGL."""
    from .models.encoders import build_encoder

    sparse = needs_sparse_tables(config.train.optimizer)
    if sparse and encoder_mode(config, kg.num_entities) != "sampled":
        raise ConfigError(f"train.optimizer={config.train.optimizer}: full-graph encoder training reads every row "
                          f"of the entity table each step, so sparse row updates do not apply; use "
                          f"train.optimizer=adam, or encoder.mode=sampled (which reads only a batch's input nodes)")
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    encoder = build_encoder(config.model.encoder, kg, decoder.entity_dim, config.encoder)
    if sparse and getattr(encoder, "uses_relation_table", True):
        raise ConfigError(f"train.optimizer={config.train.optimizer}: encoder {config.model.encoder!r} reads the "
                          f"whole relation table each step, so sparse row updates do not apply; "
                          f"use train.optimizer=adam")
    return KGEModel(kg.num_entities, kg.num_relations, decoder, encoder, sparse=sparse,
                    reciprocal=reciprocal_relations(config.model))  # raises if set true: shallow models only


# ---- the folder: lock, creation, overwrite ---------------------------------------------------

@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """Hold ``run_dir``'s writer lock for the ``with`` block; fails at once if another process holds it."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, LOCK)
    try:  # O_NOFOLLOW: a .lock that is a symbolic link (a shared folder's) must not create or open a file elsewhere
        handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666), "a")
    except OSError as error:
        if os.path.islink(path):
            raise _linked(run_dir, LOCK) from None
        raise OSError(error.errno, f"{path}: cannot be opened ({error.strerror})") from None
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderError(f"{run_dir}: another kbit-dgl process is writing this run folder (it holds "
                                 f"{os.path.join(run_dir, LOCK)}); wait for it to finish or choose another "
                                 f"folder") from None
        yield
    finally:
        handle.close()  # closing releases the lock


def _linked(run_dir: str, name: str) -> RunFolderError:
    path = os.path.join(run_dir, name)
    return RunFolderError(f"{path}: a symbolic link (to {os.readlink(path)}); a run folder's files must be files "
                          f"of its own (writing it would write the file linked to); replace the link by the file, "
                          f"or start a new run folder")


def _leftover_temp_files(run_dir: str) -> List[str]:
    """Temporary files of atomic writes that a killed process left behind (``.<name>.*.tmp``)."""
    return [path for name in RUN_FILES for path in glob.glob(os.path.join(glob.escape(run_dir), f".{name}.*.tmp"))]


def prepare_run_folder(run_dir: str, resume: bool, overwrite: bool, resume_file: str = CHECKPOINT) -> None:
    """Make ``run_dir`` ready for a writer that holds its lock.

    A folder holding a run is refused unless ``resume`` (then ``resume_file`` must exist) or
    ``overwrite``; overwrite empties the run's files and refuses a folder that holds anything else
    (naming it), so it never deletes what it did not write. Leftover temporary files of a killed
    writer are removed.
    """
    for path in _leftover_temp_files(run_dir):
        os.unlink(path)
    present = sorted(name for name in os.listdir(run_dir) if name != LOCK)
    if resume:  # a resume appends to train.log and rewrites the rest: none may lead out of the folder
        for name in present:
            if name in RUN_FILES and os.path.islink(os.path.join(run_dir, name)):
                raise _linked(run_dir, name)
        if not os.path.exists(os.path.join(run_dir, resume_file)):
            raise MissingRunFileError(f"{run_dir}: nothing to resume (no {resume_file})")
        return
    if not present:
        return
    if not overwrite:
        raise RunFolderError(f"{run_dir}: the run folder already exists and is not empty; pass --resume to "
                             f"continue that run or --overwrite to replace it")
    foreign = [name for name in present if name not in RUN_FILES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunFolderError(f"{run_dir}: --overwrite replaces a run folder, but this one also holds {shown}, "
                             f"which no run writes; move those away or choose another folder")
    for name in present:
        os.unlink(os.path.join(run_dir, name))


def is_run_folder(path: str) -> bool:
    """Whether ``path`` is a folder that holds a run (its config.yaml or one of its model files)."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, name))
                                       for name in (CONFIG, BEST_MODEL, CHECKPOINT, QUANT_MODEL))


def check_output_file(path: str, overwrite: bool, option: str = "--out") -> None:
    """Refuse an output file (``predict --out``) that would replace a file a run needs (a name of
    :data:`RUN_FILES` in a run folder: never, even with ``overwrite``), a folder, or an existing file
    without ``overwrite``. Call it before the work, so a refusal costs nothing."""
    for candidate in dict.fromkeys((path, os.path.realpath(path))):  # a symbolic link to a run's file too
        folder, name = os.path.split(os.path.abspath(candidate))
        if name in RUN_FILES and is_run_folder(folder):
            raise RunFolderError(f"{option} {path}: that is the {name} of the run folder {folder}, which the run "
                                 f"needs; write the output to another path (--overwrite never replaces a run's files)")
    if os.path.isdir(path):
        raise RunFolderError(f"{option} {path}: is a folder; name the file to write")
    if os.path.lexists(path) and not overwrite:
        raise RunFolderError(f"{option} {path}: the file already exists; pass --overwrite to replace it, or choose "
                             f"another path")


def check_output_folder(path: str, overwrite: bool, option: str = "--out") -> None:
    """Refuse an output folder (``export --out``) that is a run folder (never, even with ``overwrite``:
    its files would mix with the run's), is a file, or already holds files without ``overwrite``."""
    if is_run_folder(path):
        raise RunFolderError(f"{option} {path}: that is a run folder (it holds a run's {CONFIG} or model file); "
                             f"write the output to a folder of its own")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RunFolderError(f"{option} {path}: is a file, not a folder; name a folder to write")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise RunFolderError(f"{option} {path}: the folder already exists and is not empty; pass --overwrite to "
                             f"replace the files written there, or choose another folder")


# ---- id maps ---------------------------------------------------------------------------------

def id_fingerprint(entity_names: Sequence[str], relation_names: Sequence[str]) -> str:
    """SHA-1 of both id maps: equal exactly when every id names the same entity and relation."""
    digest = hashlib.sha1()
    for names in (entity_names, relation_names):
        digest.update(f"{len(names)}\n".encode())
        digest.update("\n".join(names).encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def kg_fingerprint(kg: KG) -> str:
    return id_fingerprint(kg.entity_names, kg.relation_names)


def _write_dict(path: str, names: Sequence[str]) -> None:
    atomic_write_text(path, "".join(f"{i}\t{name}\n" for i, name in enumerate(names)))


def write_id_maps(run_dir: str, kg: KG) -> None:
    """``entities.dict`` / ``relations.dict``: the ids this run's tables are indexed by."""
    _write_dict(os.path.join(run_dir, ENTITY_IDS), kg.entity_names)
    _write_dict(os.path.join(run_dir, RELATION_IDS), kg.relation_names)


def _read_dict(path: str) -> List[str]:
    names = []
    with open(path, "rb") as handle:  # bytes until decoded: a bad byte is named by line and offset
        offset = 0
        for line_number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise RunFileError(f"{path}, line {line_number}: not UTF-8 (byte 0x{raw[error.start]:02x} at byte "
                                   f"offset {offset + error.start} of the file); expected the run's id map, "
                                   f"written by kbit-dgl") from None
            offset += len(raw)
            identifier, tab, name = line.rstrip("\n").partition("\t")
            if not tab or identifier != str(line_number - 1):
                raise RunFileError(f"{path}, line {line_number}: expected '{line_number - 1}<TAB><name>' "
                                   f"(the run's id map, written by kbit-dgl)")
            names.append(name)
    return names


def run_finished(run_dir: str) -> bool:
    """Whether ``run_dir`` holds a finished training run: a readable ``metrics.json`` with test metrics."""
    try:
        with open(os.path.join(run_dir, METRICS), encoding="utf-8") as handle:
            return "test" in json.load(handle)
    except (OSError, ValueError):
        return False


def read_id_maps(run_dir: str) -> Optional[Tuple[List[str], List[str]]]:
    """(entity names, relation names) of a run folder, or None for a run that predates id maps."""
    paths = [os.path.join(run_dir, name) for name in (ENTITY_IDS, RELATION_IDS)]
    if not all(os.path.exists(path) for path in paths):
        return None
    return _read_dict(paths[0]), _read_dict(paths[1])


def align_kg(run_dir: str, kg: KG) -> KG:
    """``kg`` with the ids of the run in ``run_dir``: unchanged when they agree, re-indexed when the
    same names came in another order (re-sorted TSV files), refused when the names differ."""
    maps = read_id_maps(run_dir)
    if maps is None or (maps[0] == kg.entity_names and maps[1] == kg.relation_names):
        return kg
    log.warning("%s: the dataset assigns other ids than the run was trained with; re-indexing it to the run's "
                "%s and %s", kg.name, ENTITY_IDS, RELATION_IDS)
    return kg.reindexed(maps[0], maps[1])


def check_fingerprint(path: str, payload: Dict, run_dir: str) -> None:
    """Refuse a model file whose recorded id maps are not those of its run folder."""
    maps = read_id_maps(run_dir)
    recorded = payload.get("id_maps")
    if maps is None or recorded is None:
        return  # written before id maps were recorded
    if recorded != id_fingerprint(*maps):
        raise RunFileError(f"{path} was written by another run: its id maps differ from {run_dir}'s "
                           f"{ENTITY_IDS} / {RELATION_IDS}; copy the whole run folder, not single files")


# ---- loading a run ---------------------------------------------------------------------------

def run_config(run_dir: str) -> Config:
    """The resolved config of the run in ``run_dir``."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        raise MissingRunFileError(f"{run_dir}: no {CONFIG}; expected a run folder written by kbit-dgl train "
                                  f"or quantize")
    config = Config.from_yaml(path, run=True)
    check_encoder_import(config, path)  # a shared folder must not import and call code by name
    return config


def run_kind(run_dir: str) -> str:
    """``trained`` or ``quantized``; a folder holding both model files is refused as ambiguous."""
    trained, quantized = (os.path.exists(os.path.join(run_dir, name)) for name in (BEST_MODEL, QUANT_MODEL))
    if trained and quantized:
        raise RunFileError(f"{run_dir} holds both {BEST_MODEL} and {QUANT_MODEL}: a file of another run was left "
                           f"in it; remove the one that does not belong (or re-create the folder with --overwrite)")
    return "quantized" if quantized else "trained"


def load_model_file(path: str, run_dir: str) -> Dict:
    """A trained run's model file (``model.pt`` / ``checkpoint.pt``), checked against the run's id maps."""
    payload = load_saved(path, ("model",), "model file", folder=run_dir)
    check_state(payload["model"], path)
    check_fingerprint(path, payload, run_dir)
    return payload


def check_state(state, path: str) -> None:
    """Refuse a model file whose ``model`` entry is not a state dict (names -> tensors), naming the file."""
    if not isinstance(state, dict) or not all(type(key) is str and isinstance(value, torch.Tensor)
                                              for key, value in state.items()):
        found = type(state).__name__ if not isinstance(state, dict) else \
            ", ".join(f"{key!r:.40}: {type(value).__name__}" for key, value in list(state.items())[:3])
        raise RunFileError(f"{path}: its 'model' entry is not a table of named tensors (found {found}); "
                           f"a damaged or foreign model file")


def load_state(model: torch.nn.Module, state: Dict, path: str) -> None:
    """``model.load_state_dict(state)`` with a mismatch reported as the file's fault."""
    check_state(state, path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as error:
        raise RunFileError(f"{path}: its tables do not fit the model that the run's config and dataset build "
                           f"({str(error).splitlines()[0]}); is it another run's file?") from None


def load_dataset_for(config: Config, run_dir: str, kg: Optional[KG] = None) -> KG:
    """The run's dataset (``kg`` if given) with the run's ids."""
    from .data import load_dataset

    kg = kg or load_dataset(config.data.dataset, config.data.data_dir, config.data.seed)
    return align_kg(run_dir, kg)


def load_run(run_dir: str, kg: Optional[KG] = None):
    """(config, kg, model) of a finished or interrupted trained run, with the best model's weights."""
    config = run_config(run_dir)
    kg = load_dataset_for(config, run_dir, kg)
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(path):
        raise MissingRunFileError(f"{run_dir}: no {BEST_MODEL}; the run has not validated yet")
    payload = load_model_file(path, run_dir)
    # the tables' gradient layout matters only to training: a run trained on a GPU opens on a CPU machine
    model = model_from_config(config, kg, device="cpu")
    load_state(model, payload["model"], path)
    model.eval()
    return config, kg, model


def load_quantized_run(run_dir: str, kg: Optional[KG] = None):
    """(config, kg, quantized model) of a quantized run folder; the dataset is loaded unless given."""
    config = run_config(run_dir)
    path = os.path.join(run_dir, QUANT_MODEL)
    payload = load_saved(path, ("format", "model", "entity", "relation"), "quantized model file",
                         folder=run_dir)
    if payload.get("format") != FILE_FORMAT:
        raise RunFileError(f"{path}: not a kbit-dgl quantized model file (expected format {FILE_FORMAT})")
    check_fingerprint(path, payload, run_dir)
    model = load_quantized_model(path, payload=payload)
    kg = load_dataset_for(config, run_dir, kg)
    if (kg.num_entities, kg.num_relations) != (model.num_entities, model.num_relations):
        raise RunFileError(f"{path}: the model has {model.num_entities} entities and {model.num_relations} "
                           f"relations, the dataset {kg.num_entities} and {kg.num_relations}")
    return config, kg, model


def load_any_run(run_dir: str, kg: Optional[KG] = None, spec: Optional[QuantSpec] = None,
                 relation_spec: Optional[QuantSpec] = None, device: str = "cpu"):
    """(config, kg, model) of a trained or a quantized run folder, the model on ``device``
    (``auto``, ``cpu``, ``cuda[:N]``).

    With ``spec``, a trained run's model is quantised in memory (nothing is written); a quantized
    folder cannot be quantised again.
    """
    if not os.path.isdir(run_dir):
        raise MissingRunFileError(f"{run_dir}: no such run folder")
    target = resolve_device(device, run_config(run_dir).model.encoder)  # before the dataset and the model are read
    if run_kind(run_dir) == "quantized":
        if spec is not None:
            raise ConfigError(f"{run_dir} is already quantized; --bits applies to a trained run folder")
        config, kg, model = load_quantized_run(run_dir, kg)
    else:
        config, kg, model = load_run(run_dir, kg)
        if spec is not None:
            model = quantize_model(model, spec, relation_spec)
    return config, kg, model.to(target)


# ---- quantizing a run into a folder of its own -----------------------------------------------

def _float_tables(run_dir: str) -> Tuple[Config, Dict, torch.Tensor, torch.Tensor]:
    """(config, model file payload, entity table, relation table) of a trained run, read without its dataset.

    A run trained with fake quantisation (QAT) stores its latent float tables under
    ``*.parametrizations.weight.original``; those are what gets quantised.
    """
    config = run_config(run_dir)
    if config.model.encoder:
        raise ConfigError(f"{run_dir}: quantizing models with a GNN encoder is not supported")
    if run_kind(run_dir) == "quantized":
        raise ConfigError(f"{run_dir} is already quantized; quantize a trained run folder")
    path = os.path.join(run_dir, BEST_MODEL)
    if not os.path.exists(path):
        raise MissingRunFileError(f"{run_dir}: no {BEST_MODEL}; the run has not validated yet")
    payload = load_model_file(path, run_dir)
    state = payload["model"]

    def table(name: str) -> torch.Tensor:
        for key in (f"{name}.weight", f"{name}.parametrizations.weight.original"):
            if key in state:
                return state[key]
        raise RunFileError(f"{path}: no {name} table among {sorted(state)}")

    return config, payload, table("entity"), table("relation")


def relation_spec_for_run(run_dir: str, spec: QuantSpec, relation_bits: Optional[int] = None) -> QuantSpec:
    """The relation table's spec when a trained run is quantized with ``spec``: ``relation_bits``, by
    default max(bits, 8), or ``spec.bits`` for a run trained with QAT (see ``quant.model.table_specs``)."""
    from .quant.model import default_relation_bits, table_specs

    config = run_config(run_dir)
    if relation_bits is None:
        relation_bits = default_relation_bits(spec.bits, qat=bool(config.train.qat_bits))
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    return table_specs(decoder, spec, relation_bits)[1]


def quantize_run(run_dir: str, out_dir: str, spec: QuantSpec, overwrite: bool = False,
                 relation_spec: Optional[QuantSpec] = None) -> Dict[str, object]:
    """Quantise a trained run into ``out_dir`` (config.yaml, id maps, model.kbit.pt, quant.json); returns quant.json."""
    if os.path.abspath(out_dir) == os.path.abspath(run_dir) or (
            os.path.exists(out_dir) and os.path.exists(run_dir) and os.path.samefile(out_dir, run_dir)):
        raise ConfigError(f"quantize: --out {out_dir} is the run folder being quantized; choose another folder "
                          f"(--overwrite never replaces the source run)")
    present = os.path.isdir(out_dir) and [name for name in os.listdir(out_dir) if name != LOCK]
    if present and not overwrite:
        what = "holds another run" if is_run_folder(out_dir) else "is not empty"
        raise RunFolderError(f"quantize: --out {out_dir}: the folder already exists and {what}; pass --overwrite "
                             f"to replace it, or choose another folder")
    config, payload, entity, relation = _float_tables(run_dir)
    decoder = make_decoder(config.model.name, config.model.dim, config.model.gamma)
    model = quantize_tables(decoder, entity, relation, spec, relation_spec, reciprocal_relations(config.model))
    maps = read_id_maps(run_dir)
    with run_lock(out_dir):
        prepare_run_folder(out_dir, resume=False, overwrite=overwrite)
        atomic_write_text(os.path.join(out_dir, CONFIG), config.to_yaml())
        if maps is not None:
            _write_dict(os.path.join(out_dir, ENTITY_IDS), maps[0])
            _write_dict(os.path.join(out_dir, RELATION_IDS), maps[1])
        file_bytes = save_quantized_model(os.path.join(out_dir, QUANT_MODEL), model, config.model.name,
                                          config.model.dim, config.model.gamma, id_maps=payload.get("id_maps"))
        report = model.byte_report()
        totals = report["all"]
        info = {"source_run": os.path.abspath(run_dir), "model": config.model.name, "dataset": config.data.dataset,
                **spec.to_dict(),
                "codes_bytes": totals["codes"], "scales_bytes": totals["scales"],
                "metadata_bytes": totals["metadata"], "total_bytes": totals["total"], "fp32_bytes": totals["fp32"],
                "ratio_to_fp32": totals["ratio_to_fp32"], "bits_per_number": totals["bits_per_number"],
                "file": {"name": QUANT_MODEL, "bytes": file_bytes,
                         "container_overhead_bytes": file_bytes - totals["total"]},
                "tables": {"entity": report["entity"], "relation": report["relation"]}}
        atomic_write_json(os.path.join(out_dir, QUANT_INFO), info)
    return info


def is_quantized(model) -> bool:
    return isinstance(model, QuantizedKGEModel)
