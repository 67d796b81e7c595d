"""One typed config for a training run: loadable from YAML, overridable with ``section.key=value``,
saved with every checkpoint.

Sections ``model``, ``data``, ``optim``, ``train`` are typed dataclasses; ``method`` is the free-form keyword
arguments of the method's constructor (checked against its signature when the method is built).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from physalign.assets import resolve


class ConfigError(ValueError):
    """A config file or override that does not fit; the message names the key and what was expected."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only ``true`` / ``false`` are booleans, so ``no``, ``off``
    and ``yes`` stay strings (``train.mixed_precision: no``); YAML 1.1 would read them as False and True."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def read_yaml(text: str) -> Any:
    """``text`` parsed as YAML with :class:`YamlLoader`."""
    return yaml.load(text, Loader=YamlLoader)


@dataclass
class ModelSection:
    kind: str = "WorldVideoModel"  # class of a new model (physalign.models.interface.MODELS)
    init: str = ""  # model folder to start from (save_pretrained layout); empty = a new model of `kind`
    trainable: list[str] = field(default_factory=lambda: ["transformer", "text_encoder"])
    sizes: dict = field(default_factory=dict)  # configuration of a new model (e.g. WorldModelConfig fields);
    # with `init`: options of a diffusers pipeline-folder model (Wan, CogVideoX: physalign_model.json fields)


@dataclass
class DataSection:
    source: str = "world"  # "world": the videos of `manifest` (below); "precomputed": the shards in `precomputed`
    manifest: str = "data/world/manifest.jsonl"
    split: str = "train"  # manifest lines of this split; "" = every line
    cache_dir: str = "data/cache"
    precomputed: str = ""  # source "precomputed": the folder `physalign precompute --out` wrote


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100  # linear warm-up of the learning rate, then `schedule`
    schedule: str = "constant"  # after warm-up: "constant", or "cosine" (to 0 at train.steps;
    # so a run resumed with a larger train.steps follows a different curve from then on)
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping (the norm is still logged)
    ema_decay: float = 0.0  # 0 = no EMA; else the exported model carries the EMA weights
    ema_warmup: bool = False  # the decay at update n is min(ema_decay, (1 + n) / (10 + n)): a short run's EMA
    # follows its weights instead of staying at the ones it started from


@dataclass
class TrainSection:
    method: str = "fm"  # a name in physalign.train.methods.METHODS
    steps: int = 1000
    batch_size: int = 32  # the global batch, split evenly over the processes
    batch_size_per_process: int = 0  # > 0: the global batch is this x the number of processes (batch_size is then
    # set from it), for launches whose size is not known in advance
    seed: int = 0
    log_every: int = 10
    save_every: int = 250
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 = all
    threads: int = 0  # torch intra-op threads; 0 = torch's default. Use 1 when other jobs share the CPU.
    mixed_precision: str = "no"  # "no", "bf16" or "fp16": the forward under accelerate's autocast
    shard_optimizer: bool = False  # several processes: each keeps only its share of AdamW's state (ZeRO stage 1)
    max_bad_steps: int = 3  # a non-finite step is skipped; this many in a row stop the run
    tensorboard: bool = True  # also write every logged term to RUN/tensorboard
    wandb_project: str = ""  # also log every term to this Weights & Biases project (needs `pip install wandb`)
    validate_every: int = 0  # every this many steps, sample validation videos into RUN/validation (0 = never)
    validation_prompts: list[str] = field(default_factory=list)  # empty: the first four prompts of the data
    validation_steps: int = 20  # Euler steps of the validation samples (guidance 4, seed 0)


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    method: dict = field(default_factory=dict)  # keyword arguments of the method's constructor

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def from_dict(data: Any, where: str = "config", cfg: Config | None = None) -> Config:
    """A Config from nested mappings {section: {key: value}}, set over ``cfg`` (default: a new Config); unset
    keys keep their values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections {list(SECTIONS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown sections {unknown}; allowed: {list(SECTIONS)} (and `defaults:` "
                          "naming a config file to start from)")
    cfg = cfg or Config()
    for section, values in data.items():
        if not isinstance(values or {}, dict):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of keys, got {values!r}")
        for key, value in (values or {}).items():
            set_key(cfg, f"{section}.{key}", value, where)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read YAML ``path`` (or the defaults when None) and apply ``section.key=value`` overrides in order;
    each value is read as YAML (``train.steps=100``, ``model.trainable=[vae]``), except that a string field
    takes the text as typed (``train.wandb_project=2024`` is "2024")."""
    cfg = read_file(resolve(path)) if path is not None else Config()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, text = item.split("=", 1)
        try:
            value = read_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        set_key(cfg, key.strip(), value, f"override {item!r}", text)
    check_ranges(cfg, str(path) if path is not None else "config")
    return cfg


# keys whose values have a lower bound: (minimum, what the bound means)
MINIMA = {
    "train.steps": (1, "the number of optimiser steps"),
    "train.batch_size": (1, "the global batch"),
    "train.batch_size_per_process": (0, "0 = use train.batch_size"),
    "train.save_every": (1, "steps between checkpoints"),
    "train.log_every": (1, "steps between log records"),
    "train.keep_checkpoints": (0, "0 = keep all"),
    "train.max_bad_steps": (1, "non-finite steps in a row that stop the run"),
    "train.threads": (0, "0 = torch's default"),
    "train.validate_every": (0, "0 = never"),
    "train.validation_steps": (1, "sampling steps"),
    "optim.lr": (0, "the learning rate"),
    "optim.warmup_steps": (0, "steps of linear warm-up"),
    "optim.grad_clip": (0, "0 = no clipping"),
    "optim.weight_decay": (0, "AdamW's decoupled weight decay"),
    "optim.ema_decay": (0, "0 = no EMA"),
}


def check_ranges(cfg: Config, where: str = "config") -> None:
    """ConfigError naming the first key of :data:`MINIMA` below its minimum, or ``optim.ema_decay`` >= 1."""
    for dotted, (low, meaning) in MINIMA.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value < low:
            raise ConfigError(f"{where}: {dotted} must be >= {low} ({meaning}), got {value!r}")
    if cfg.optim.ema_decay >= 1:
        raise ConfigError(f"{where}: optim.ema_decay must be < 1 (0 = no EMA), got {cfg.optim.ema_decay!r}")


def read_file(path: Path, seen: tuple[Path, ...] = ()) -> Config:
    """The config in YAML file ``path``. A top-level ``defaults: FILE`` (relative to ``path``'s folder, else to
    the working folder, else a shipped file: :func:`physalign.assets.resolve`) is read first and ``path``'s
    keys are set over it: the method configs share one block of post-training defaults
    (``configs/methods/post_training.yaml``) and state only what differs."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file" + (f" (the defaults of {seen[-1]})" if seen else ""))
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `defaults:` comes back to itself ({' -> '.join(map(str, seen))})")
    try:
        data = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    base = Config()
    if isinstance(data, dict) and "defaults" in data:
        parent = data.pop("defaults")
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: `defaults` must be a config file's path, got {parent!r}")
        beside = path.parent / parent  # relative to the file, else as any path (the working folder, then shipped)
        base = read_file(beside if beside.is_file() else resolve(parent), seen + (path.resolve(),))
    return from_dict(data, str(path), base)


def as_typed(value: Any, text: str | None, kind: Any) -> Any:
    """An override's value for a field of type ``kind``: its raw ``text`` where the field is a string and YAML
    read something else (a number, a boolean, null), else the YAML value."""
    return text.strip() if kind is str and text is not None and not isinstance(value, str) else value


def set_key(cfg: Config, dotted: str, value: Any, where: str = "config", text: str | None = None) -> None:
    """Set ``section.key`` to ``value``, checked against the field's declared type (``text``: the override's
    raw value, kept as typed for a string field)."""
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key or "." in key:
        raise ConfigError(f"{where}: unknown key {dotted!r}; keys are section.key with section in {list(SECTIONS)}")
    if section == "method":
        cfg.method[key] = value
        return
    types = typing.get_type_hints(type(getattr(cfg, section)))
    if key not in types:
        raise ConfigError(f"{where}: unknown key {dotted!r}; {section} has {sorted(types)}")
    setattr(getattr(cfg, section), key, coerce(as_typed(value, text, types[key]), types[key], dotted, where))


def coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    """``value`` as type ``kind`` (bool, int, float, str, dict, list[T], unions), or ConfigError naming ``key``
    and the expected type."""
    origin = typing.get_origin(kind) or kind
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return coerce(value, option, key, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(kind) or (object,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list of {item.__name__}, got {value!r}")
        return [coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    accepted = (int, float) if origin is float else origin
    if isinstance(value, bool) and origin not in (bool, object) or not isinstance(value, accepted):
        raise ConfigError(f"{where}: {key} must be {origin.__name__}, got {value!r}")
    return float(value) if origin is float else value


def load_flat_config(cls: type, path: str | Path | None = None, overrides: list[str] = ()):
    """A flat dataclass ``cls`` (no sections) from YAML ``path`` (or its defaults when None), then ``key=value``
    overrides (values read as YAML), each value checked against the field's type; errors name the key and
    where it came from. The teacher's and the judge's training configs are of this kind."""
    values = {}
    if path is not None:
        path = resolve(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        values = read_yaml(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {type(values).__name__}")
    merged = {key: (value, str(path), None) for key, value in values.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. steps=100")
        key, text = item.split("=", 1)
        try:
            merged[key.strip()] = (read_yaml(text), f"override {item!r}", text)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
    hints = typing.get_type_hints(cls)
    typed = {}
    for key, (value, where, text) in merged.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r}; keys: {sorted(hints)}")
        typed[key] = coerce(as_typed(value, text, hints[key]), hints[key], key, where)
    return cls(**typed)


def global_batch(train: TrainSection, world: int) -> int:
    """The global batch of a run on ``world`` processes: ``batch_size_per_process x world`` if that is set, else
    ``batch_size``, which must then split evenly (ConfigError naming both keys otherwise)."""
    if train.batch_size_per_process < 0 or train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1 and train.batch_size_per_process >= 0. "
                          f"Got {train.batch_size} and {train.batch_size_per_process}.")
    if train.batch_size_per_process:
        return train.batch_size_per_process * world
    if train.batch_size % world:
        raise ConfigError(f"train.batch_size {train.batch_size} is the global batch and must be divisible by the "
                          f"number of processes {world}; or set train.batch_size_per_process instead")
    return train.batch_size


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
