"""Run configuration: dataclasses that load from and dump to YAML, with ``key=value`` overrides.

The defaults are the product: they are general (not tuned per benchmark), and every run writes
its fully resolved config next to its metrics so it can be re-run from its folder.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional

import yaml

from .errors import ConfigError

OPTIMIZERS = ("adam", "sparse_adam", "sparse_adagrad", "rowwise_adagrad", "adagrad")
LOSSES = ("self_adversarial", "margin")
OBJECTIVES = ("negative_sampling", "1vsall", "kvsall")
REGULARIZERS = ("l2", "n3", "dura")
ENCODER_MODES = ("auto", "full", "sampled")
PROTOCOLS = ("auto", "filtered", "ogb")


@dataclass
class DataConfig:
    dataset: str = "synthetic"      # a known name, a folder path, or "synthetic" (the built-in KG)
    data_dir: Optional[str] = None  # root of named datasets; default $KBIT_DGL_DATA
    seed: int = 0                   # generator seed for the synthetic KG


@dataclass
class ModelConfig:
    name: str = "rotate"            # transe (L1), transe_l2, rotate, distmult, complex, pairre, cp, rescal
    dim: int = 200                  # real numbers per entity row (RotatE/ComplEx: dim/2 complex)
    gamma: float = 6.0              # margin of distance-based scores: score = gamma - distance
    encoder: Optional[str] = None   # optional GNN encoder between tables and decoder: rgcn | compgcn |
                                    # a registered name | package.module:Class (see the encoder section)
    # reciprocal relations (Lacroix et al. 2018; LibKGE, the CoDEx configs): a second relation row
    # r^-1 per relation, and a head query (?, r, t) is answered as the tail query (t, r^-1, ?).
    # auto = on for shallow models, off with an encoder (which already sees inverse edges); true | false
    reciprocal: str = "auto"


@dataclass
class TrainConfig:
    # negative_sampling: each positive against shared sampled negatives (train.loss) | 1vsall: each query
    # (h, r, ?) and (?, r, t) against every entity, cross-entropy (kbc, LibKGE) | kvsall: each distinct query
    # against every entity, binary cross-entropy over all its true answers (LibKGE); see kbit_dgl/train/objectives.py
    objective: str = "negative_sampling"
    num_candidates: int = 0         # 1vsall: a shared uniform sample of this many entities per batch instead of all
                                    # (sampled softmax, corrected; for large KGs); 0 = every entity
    label_smoothing: float = 0.0    # 1vsall / kvsall: smooth the cross-entropy targets by this much
    relation_prediction: float = 0.0  # 1vsall / kvsall: weight of the relation-prediction term (Chen et al. 2021)
    loss: str = "self_adversarial"  # self_adversarial (RotatE paper) | margin (TransE paper)
    adversarial_temperature: float = 1.0
    margin: float = 1.0             # for loss=margin
    subsampling: bool = False       # weigh positives by 1/sqrt(frequency of (h,r) + (r,t)) (RotatE code)
    batch_size: int = 256
    num_negatives: int = 256
    negative_chunk_size: int = 128  # queries sharing one negative set; 1 = per-triple negatives
    lr: float = 1e-3
    optimizer: str = "adam"         # adam (dense) | sparse_adam | sparse_adagrad: update only the rows of a step |
                                    # rowwise_adagrad: sparse, one accumulator per row (DGL-KE's; least memory) |
                                    # adagrad: dense (kbc's optimizer for 1vsall)
    regularization: float = 0.0     # weight of train.regularizer on the rows of a batch
    regularizer: str = "l2"         # l2 (mean square) | n3 (Lacroix et al. 2018; cp, distmult, complex) |
                                    # dura (Zhang et al. 2020; cp, distmult, complex, rescal)
    max_epochs: int = 500
    max_steps: int = 0              # stop after this many steps in all, inside an epoch too (0 = no limit)
    valid_every: int = 10           # epochs between validations (early stopping, best checkpoint)
    valid_every_steps: int = 0      # validate every this many steps instead of every valid_every epochs (0 = off)
    patience: int = 5               # validations without improvement before stopping
    # learning-rate decay on plateau: after lr_decay_patience validations without improvement the
    # rate is multiplied by lr_decay (0 = off), at most lr_decays times (as RotatE's code drops it 10x
    # half-way and LibKGE reduces it on plateau); after the last decay, lr_decay_patience more
    # validations without improvement end the run (patience still caps the count)
    lr_decay: float = 0.1
    lr_decay_patience: int = 2
    lr_decays: int = 2
    # or a fixed schedule instead: multiply the rate by lr_decay after each of these epochs (as RotatE's
    # code drops it 10x half-way through a fixed budget); plateau decays are then off, patience still stops
    lr_decay_epochs: List[int] = field(default_factory=list)
    seed: int = 0
    checkpoint_every: int = 1       # epochs between resumable checkpoints
    checkpoint_every_steps: int = 0     # also every this many steps, inside an epoch (0 = off); resumes exactly
    checkpoint_every_minutes: float = 0.0  # also when this many minutes passed since the last one (0 = off)
    num_threads: int = 0            # 0 = torch's default
    device: str = "auto"            # auto (cuda when a GPU is visible, else cpu) | cpu | cuda | cuda:N
    check_memory: bool = True       # refuse a run whose estimated memory (tables, optimizer state, a step's
                                    # workspace: kbit_dgl/resources.py) exceeds what the device has available
    num_procs: int = 1              # training processes on this machine (DGL's shared-memory sparse embeddings),
                                    # see kbit_dgl/train/distributed.py; a resume needs the same number
    dist_update: str = "hogwild"    # with num_procs > 1: hogwild (each process updates the rows it touched, no
                                    # waiting; DGL-KE's way) | sync (DGL's exchange: each updates the rows it owns;
                                    # bit-for-bit reproducible)
    dist_timeout_minutes: float = 30.0  # how long a process waits for the others (rank 0 validating) before failing
    qat_bits: int = 0               # quantisation-aware training at this many bits (0 = off), see kbit_dgl/quant
    qat_dtype: str = "int"          # int | int_asym | float | quantile (as `kbit-dgl quantize --dtype`)
    qat_block: int = 64             # numbers per scale along a row (0 = whole row); scales in fp16


@dataclass
class EncoderConfig:
    """Settings of the GNN encoder (used only when ``model.encoder`` is set)."""

    layers: int = 2                 # message-passing layers
    regularizer: str = "basis"      # rgcn: basis | bdd (block diagonal) | none (a full matrix per relation)
    num_bases: int = 8              # rgcn: bases (basis) or blocks (bdd: must divide model.dim)
    composition: str = "mult"       # compgcn: sub | mult
    activation: str = "relu"        # between layers (the last layer is linear): relu | tanh | none
    dropout: float = 0.2            # between layers
    self_loop: bool = True
    layer_norm: bool = False
    mode: str = "auto"              # auto | full (whole graph every step) | sampled (DGL neighbour sampling)
    sampled_threshold_entities: int = 100000  # auto: sampled above this many entities
    # sampled: neighbours per layer, one value for every layer or one per layer; -1 = all of them
    fanouts: List[int] = field(default_factory=lambda: [10])
    inference_batch_size: int = 4096  # evaluation: destination nodes per chunk of layer-wise inference


@dataclass
class EvalConfig:
    batch_size: int = 256           # queries scored against all entities at once
    protocol: str = "auto"          # auto | filtered | ogb
    valid_sample: int = 0           # validate during training on a fixed random sample of this many valid
                                    # triples (0 = all); the final metrics use the whole split


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> Dict[str, Any]:
        """``{"section.key": value}`` of every key."""
        return {f"{section}.{key}": value
                for section, values in self.to_dict().items() for key, value in values.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config") -> "Config":
        config = cls()
        config.update(data, source)
        return config

    @classmethod
    def from_yaml(cls, path: str, run: bool = False) -> "Config":
        """The config in ``path``; ``run=True`` for a run folder's resolved config.yaml, where a key
        missing because the run predates it takes the value that run was trained with."""
        data = read_yaml(path)
        if data is None:
            if run:  # an empty run config must not fall back to the defaults (the synthetic KG)
                raise ConfigError(f"{path}: empty; a run folder's config.yaml holds the run's resolved config "
                                  f"(was the run interrupted before it started, or the file truncated?)")
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, eval, encoder), "
                              f"got {type(data).__name__}")
        config = cls.from_dict(data, path)
        if run:
            for dotted_key, before in RUN_DEFAULTS_BEFORE.items():
                section, key = dotted_key.split(".")
                if key not in (data.get(section) or {}):
                    config.set(dotted_key, before, path)
        return config

    def update(self, data: Dict[str, Any], source: str = "config") -> None:
        for section, values in data.items():
            if section not in _sections(self):
                raise ConfigError(f"{source}: unknown section {section!r}; expected one of {list(_sections(self))}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping")
            for key, value in values.items():
                self.set(f"{section}.{key}", value, source)

    def set(self, dotted_key: str, value: Any, source: str = "--set") -> None:
        section, _, key = dotted_key.partition(".")
        sections = _sections(self)
        if section not in sections or not key:
            raise ConfigError(f"{source}: unknown key {dotted_key!r}; expected section.key with section in "
                             f"{list(sections)}")
        target = sections[section]
        names = {f.name: f for f in dataclasses.fields(target)}
        if key not in names:
            raise ConfigError(f"{source}: unknown key {dotted_key!r}; {section} has {sorted(names)}")
        setattr(target, key, _coerce(value, getattr(target, key), names[key], dotted_key, source))

    def apply_overrides(self, overrides: List[str]) -> None:
        """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected section.key=value")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw != "" else None
            except yaml.YAMLError as error:
                raise ConfigError(f"--set {item!r}: the value is not a YAML scalar ({error})") from None
            self.set(key.strip(), value, "--set")

    def validate(self) -> "Config":
        """Check every value's type and range before anything touches disk; returns self.

        Names (model, encoder, quantization dtype) are checked where they are built
        (:func:`kbit_dgl.runs.check_config` builds them); this checks numbers and choices.
        """
        model, train, encoder, evaluation = self.model, self.train, self.encoder, self.eval
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        need(model.dim >= 1, f"model.dim must be >= 1, got {model.dim}")
        need(model.name.lower() not in ("rotate", "complex") or model.dim % 2 == 0,
             f"model.dim must be even for {model.name} (real + imaginary halves), got {model.dim}")
        need(math.isfinite(model.gamma), f"model.gamma must be finite, got {model.gamma}")
        need(str(model.reciprocal).lower() in ("auto", "true", "false"),
             f"model.reciprocal expects auto, true or false, got {model.reciprocal!r}")
        need(train.loss in LOSSES, f"train.loss must be one of {', '.join(LOSSES)}, got {train.loss!r}")
        need(train.optimizer in OPTIMIZERS,
             f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {train.optimizer!r}")
        need(math.isfinite(train.lr) and train.lr > 0, f"train.lr must be finite and > 0, got {train.lr}")
        for key in ("batch_size", "num_negatives", "negative_chunk_size", "valid_every", "patience",
                    "checkpoint_every", "lr_decay_patience", "num_procs"):
            need(getattr(train, key) >= 1, f"train.{key} must be >= 1, got {getattr(train, key)}")
        for key in ("max_epochs", "max_steps", "valid_every_steps", "checkpoint_every_steps", "num_threads",
                    "lr_decays", "qat_block"):
            need(getattr(train, key) >= 0, f"train.{key} must be >= 0, got {getattr(train, key)}")
        need(train.objective in OBJECTIVES,
             f"train.objective must be one of {', '.join(OBJECTIVES)}, got {train.objective!r}")
        need(train.regularizer in REGULARIZERS,
             f"train.regularizer must be one of {', '.join(REGULARIZERS)}, got {train.regularizer!r}")
        need(train.num_candidates >= 0, f"train.num_candidates must be >= 0, got {train.num_candidates}")
        need(train.num_candidates == 0 or train.objective == "1vsall",
             f"train.num_candidates={train.num_candidates} is for train.objective=1vsall (a sampled softmax), "
             f"got train.objective={train.objective}")
        need(math.isfinite(train.label_smoothing) and 0.0 <= train.label_smoothing < 1.0,
             f"train.label_smoothing must be in [0, 1), got {train.label_smoothing}")
        scored_all = train.objective != "negative_sampling"
        need(not train.label_smoothing or scored_all,
             "train.label_smoothing is for train.objective=1vsall or kvsall")
        need(not train.relation_prediction or scored_all,
             "train.relation_prediction is for train.objective=1vsall or kvsall")
        if scored_all:
            full = train.num_candidates == 0
            need(not full or train.optimizer in ("adam", "adagrad"),
                 f"train.objective={train.objective} scores every entity, so every row of the entity table gets a "
                 f"gradient each step: use train.optimizer=adam or adagrad, not {train.optimizer}")
            need(not self.model.encoder, f"train.objective={train.objective} trains shallow models; with "
                                         f"model.encoder use train.objective=negative_sampling")
            need(train.num_procs == 1, f"train.objective={train.objective} trains in one process "
                                       f"(train.num_procs=1)")
            need(not train.qat_bits, f"train.objective={train.objective} trains float tables: quantize the trained "
                                     f"run (kbit-dgl quantize) instead of train.qat_bits")
            need(not train.subsampling, "train.subsampling weighs sampled positives: it is for "
                                        "train.objective=negative_sampling")
        for key in ("adversarial_temperature", "margin", "regularization", "relation_prediction"):
            value = getattr(train, key)
            need(math.isfinite(value) and value >= 0, f"train.{key} must be finite and >= 0, got {value}")
        need(0.0 <= train.lr_decay < 1.0, f"train.lr_decay must be in [0, 1) (0 = off), got {train.lr_decay}")
        need(not train.lr_decay_epochs or (train.lr_decay > 0 and min(train.lr_decay_epochs) >= 1),
             f"train.lr_decay_epochs {train.lr_decay_epochs} needs train.lr_decay in (0, 1) and epochs >= 1, "
             f"got lr_decay {train.lr_decay}")
        need(train.qat_bits in (0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32),
             f"train.qat_bits must be 0 (off), 1..8, 16 or 32, got {train.qat_bits}")
        need(encoder.layers >= 1, f"encoder.layers must be >= 1, got {encoder.layers}")
        need(encoder.num_bases >= 1, f"encoder.num_bases must be >= 1, got {encoder.num_bases}")
        need(0.0 <= encoder.dropout < 1.0, f"encoder.dropout must be in [0, 1), got {encoder.dropout}")
        need(encoder.mode in ENCODER_MODES,
             f"encoder.mode must be one of {', '.join(ENCODER_MODES)}, got {encoder.mode!r}")
        need(encoder.inference_batch_size >= 1,
             f"encoder.inference_batch_size must be >= 1, got {encoder.inference_batch_size}")
        need(all(f == -1 or f >= 1 for f in encoder.fanouts) and len(encoder.fanouts) >= 1,
             f"encoder.fanouts must be >= 1 or -1 (all), got {encoder.fanouts}")
        need(math.isfinite(train.checkpoint_every_minutes) and train.checkpoint_every_minutes >= 0,
             f"train.checkpoint_every_minutes must be finite and >= 0, got {train.checkpoint_every_minutes}")
        need(not self.model.encoder or not (train.checkpoint_every_steps or train.checkpoint_every_minutes),
             "train.checkpoint_every_steps / checkpoint_every_minutes (checkpoints inside an epoch) are for "
             "shallow models; with model.encoder checkpoints are written at epoch ends")
        need(str(train.device).lower() in ("auto", "cpu", "cuda") or str(train.device).lower().startswith("cuda:"),
             f"train.device must be auto, cpu, cuda or cuda:N, got {train.device!r}")
        need(math.isfinite(train.dist_timeout_minutes) and train.dist_timeout_minutes > 0,
             f"train.dist_timeout_minutes must be finite and > 0, got {train.dist_timeout_minutes}")
        need(train.dist_update in ("sync", "hogwild"),
             f"train.dist_update must be sync or hogwild, got {train.dist_update!r}")
        need(train.num_procs == 1 or not train.qat_bits,
             "train.num_procs > 1 trains float tables: set train.num_procs=1 with train.qat_bits")
        need(train.num_procs == 1 or not self.model.encoder or encoder.mode == "sampled",
             f"train.num_procs > 1 with model.encoder needs encoder.mode=sampled (each process samples its "
             f"share of the batches with DGL's DataLoader(use_ddp=True)), got encoder.mode={encoder.mode}")
        need(evaluation.valid_sample >= 0, f"eval.valid_sample must be >= 0, got {evaluation.valid_sample}")
        need(evaluation.batch_size >= 1, f"eval.batch_size must be >= 1, got {evaluation.batch_size}")
        need(evaluation.protocol in PROTOCOLS,
             f"eval.protocol must be one of {', '.join(PROTOCOLS)}, got {evaluation.protocol!r}")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        return self


# Keys added after runs had been written, with the behaviour of those older runs.
RUN_DEFAULTS_BEFORE = {"model.reciprocal": "false", "train.lr_decay": 0.0}


#: values a config or search-space file may expand to (a real one holds a few dozen)
YAML_MAX_VALUES = 100_000


def _check_expanded_size(data: Any, path: str) -> Any:
    """``data``, refused when it expands to more than :data:`YAML_MAX_VALUES` values: YAML aliases
    share one object, so a 1 KB file of nested aliases (a "billion laughs") loads in no time but
    expands to billions of strings wherever it is printed or copied, exhausting memory."""
    count, stack = 0, [data]
    while stack:
        value = stack.pop()
        count += 1
        if count > YAML_MAX_VALUES:
            raise ConfigError(f"{path}: expands to more than {YAML_MAX_VALUES:,} values (nested YAML aliases?); "
                              f"expected a kbit-dgl config of sections of values")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return data


def read_yaml(path: str) -> Any:
    """The YAML document in ``path``; a syntax error names the file and the line."""
    with open(path, encoding="utf-8") as handle:
        try:
            return _check_expanded_size(yaml.safe_load(handle), path)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); expected a YAML file") from None


def needs_sparse_tables(optimizer: str) -> bool:
    """Whether ``train.optimizer`` updates the embedding tables from sparse gradients."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown train.optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    return optimizer not in ("adam", "adagrad")


def sparse_table_gradients(train: "TrainConfig", device=None) -> bool:
    """Whether a shallow model's tables are ``nn.Embedding(sparse=True)`` for the ``train`` section,
    training on ``device`` (default: ``train.device``, resolved on this machine).

    The sparse optimizers need it. Dense Adam takes it too on the CPU: its native step updates every
    row from the row-sparse gradient (``kbit_dgl.train.optim.Adam``), which saves making, filling and
    reading a table-sized gradient each step (~1 ms of a 14 ms FB15k-237 step, d=200, batch 1024 with 256
    negatives: 7 % for TransE, 5 % for RotatE, interleaved steps); on a GPU the dense gradient stays.
    """
    if needs_sparse_tables(train.optimizer):
        return True
    if getattr(train, "objective", "negative_sampling") != "negative_sampling" and not train.num_candidates:
        return False  # every entity scored: the step's gradient covers the whole table
    if device is None:
        device = resolve_device(train.device)
    return train.optimizer == "adam" and str(device).startswith("cpu")


def encoder_mode(config: "Config", num_entities: int) -> str:
    """``full`` or ``sampled`` for ``encoder.mode`` on a KG of ``num_entities``."""
    mode = config.encoder.mode
    if mode not in ENCODER_MODES:
        raise ConfigError(f"encoder.mode={mode!r}; expected one of {', '.join(ENCODER_MODES)}")
    if mode == "auto":
        return "sampled" if num_entities > config.encoder.sampled_threshold_entities else "full"
    return mode


def resolve_device(name: str, encoder: Optional[str] = None):
    """The ``torch.device`` of a device name (``train.device``, ``--device``), checked against this machine.

    The one place that decides a run's device: ``auto`` is the first GPU when one is visible, else
    the CPU; with a GNN ``encoder`` (``model.encoder``) ``auto`` is the CPU and a GPU is refused (DGL's
    PyPI wheel is CPU-only). Refused: ``cuda`` without a visible GPU, ``cuda:N`` with N >= the visible
    count, ``mps`` and unknown names. Needs no data and writes nothing, so training calls it (through
    :func:`kbit_dgl.runs.check_config`) before a run folder is created.
    """
    import torch  # config stays importable without torch until a device is asked for

    name = str(name).lower().strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not encoder else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N")
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= visible:
            raise ConfigError(f"train.device={name!r}, but {visible} CUDA device(s) are visible on this machine; "
                              f"use train.device=cpu or auto")
        if encoder:
            raise ConfigError(f"train.device={name}: runs with a GNN encoder (model.encoder={encoder}) run on the CPU "
                              f"here (DGL's PyPI wheel is CPU-only); use train.device=cpu or auto")
        return torch.device(name)
    if name == "mps":
        raise ConfigError("train.device='mps': Apple's MPS backend is not supported; use cpu (or cuda on a GPU)")
    raise ConfigError(f"train.device={name!r}; expected auto, cpu, cuda or cuda:N")


# ---- encoders named by module path: imported only when this process asked for them -----------

_ALLOWED_ENCODER_IMPORTS: set = set()


def is_import_spec(spec: Optional[str]) -> bool:
    """Whether ``model.encoder`` names ``package.module:Attribute`` (imported when the model is built)
    rather than a built-in or registered encoder."""
    return bool(spec) and ":" in str(spec)


def allow_encoder_import(specs: Iterable[str]) -> None:
    """Let this process import the ``package.module:Attribute`` encoders ``specs`` when a run folder's
    config.yaml names them (``--allow-import``, the API's ``allow_import``; training a config naming
    one allows it, since that config is the caller's own)."""
    for spec in [specs] if isinstance(specs, str) else specs:
        if not is_import_spec(spec):
            raise ConfigError(f"--allow-import {spec!r}: expected package.module:Attribute, the model.encoder of "
                              f"a run folder's config.yaml (built-in and registered encoders need no permission)")
        _ALLOWED_ENCODER_IMPORTS.add(str(spec).strip())


def check_encoder_import(config: "Config", source: str) -> None:
    """Refuse, before anything is imported, a ``model.encoder: package.module:Attribute`` of a config
    read from ``source`` (a run folder's config.yaml) that this process did not ask for: importing it
    would run that module's code and call the attribute (``os:system`` would run a shell)."""
    spec = config.model.encoder
    if is_import_spec(spec) and str(spec).strip() not in _ALLOWED_ENCODER_IMPORTS:
        raise ConfigError(f"{source}: model.encoder {spec!r} would import and call code named by the run folder; "
                          f"if you trust it, pass --allow-import {spec} (Python: allow_import=[{str(spec)!r}], or "
                          f"register the class with kbit_dgl.models.encoders.register_encoder)")


def reciprocal_relations(model: ModelConfig) -> bool:
    """Whether ``model.reciprocal`` (auto | true | false) turns reciprocal relations on."""
    value = str(model.reciprocal).lower()
    if value not in ("auto", "true", "false"):
        raise ConfigError(f"model.reciprocal expects auto, true or false, got {model.reciprocal!r}")
    return value == "true" or (value == "auto" and not model.encoder)


def _sections(config: Config) -> Dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _coerce(value: Any, current: Any, spec: dataclasses.Field, key: str, source: str) -> Any:
    wanted = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    if wanted.startswith("List"):
        return _coerce_int_list(value, key, source)
    if value is None:
        if "Optional" in wanted:
            return None
        raise ConfigError(f"{source}: {key} may not be empty")
    if "float" in wanted and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads 1e-3 and 1e6 as strings: they are floats to every user
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: {key} expects float, got {value!r}") from None
    if "float" in wanted and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if "int" in wanted and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "bool" in wanted and isinstance(value, bool):
        return value
    if "str" in wanted:
        return str(value)
    raise ConfigError(f"{source}: {key} expects {wanted}, got {value!r}")


def _coerce_int_list(value: Any, key: str, source: str) -> List[int]:
    """A list of ints from a list, one int, or a comma-separated string (``--set encoder.fanouts=10,5``)."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        if any(isinstance(item, (bool, float)) for item in items):
            raise ValueError
        return [int(item) for item in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} expects a list of integers, got {value!r}") from None
