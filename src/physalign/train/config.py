"""One typed config for a training run: loadable from YAML, overridable with ``section.key=value``,
saved with every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit; the message names the key and what was expected."""


@dataclass
class ModelSection:
    init: str = ""  # model folder to start from (save_pretrained layout); empty = new model from `sizes`
    trainable: list[str] = field(default_factory=lambda: ["transformer", "text_encoder"])
    sizes: dict = field(default_factory=dict)  # WorldModelConfig fields for a new model


@dataclass
class DataSection:
    manifest: str = "data/world/manifest.jsonl"
    split: str = "train"  # manifest lines of this split; "" = every line
    cache_dir: str = "data/cache"


@dataclass
class OptimSection:
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup_steps: int = 100
    grad_clip: float = 1.0


@dataclass
class TrainSection:
    method: str = "fm"
    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    log_every: int = 10
    save_every: int = 250
    keep_checkpoints: int = 2
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    max_bad_steps: int = 3  # stop after this many non-finite losses in a row


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    method: dict = field(default_factory=dict)  # keyword arguments of the method's constructor

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(data: dict, where: str = "config") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    cfg = Config()
    unknown = set(data) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise ConfigError(f"{where}: unknown sections {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(Config)]}")
    for section, values in data.items():
        if section == "method":
            cfg.method = dict(values or {})
            continue
        for key, value in (values or {}).items():
            _set(cfg, f"{section}.{key}", value, where)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read YAML ``path`` (or the defaults when None) and apply ``key=value`` overrides in order."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            cfg = from_dict(yaml.safe_load(path.read_text()) or {}, str(path))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, text = item.split("=", 1)
        _set(cfg, key.strip(), yaml.safe_load(text), f"override {item!r}")
    return cfg


def _set(cfg: Config, dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    if parts[0] == "method" and len(parts) == 2:
        cfg.method[parts[1]] = value
        return
    if len(parts) != 2 or parts[0] not in {f.name for f in dataclasses.fields(Config)}:
        raise ConfigError(f"{where}: unknown key {dotted!r}; keys look like train.steps or method.<name>")
    section = getattr(cfg, parts[0])
    types = {f.name: f.type for f in dataclasses.fields(section)}
    if parts[1] not in types:
        raise ConfigError(f"{where}: unknown key {dotted!r}; {parts[0]} has {sorted(types)}")
    setattr(section, parts[1], _coerce(value, types[parts[1]], dotted, where))


def _coerce(value: Any, kind: str, key: str, where: str) -> Any:
    if kind == "float" and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    expected = {"int": int, "float": (int, float), "str": str, "dict": dict}.get(kind)
    if kind.startswith("list"):
        expected = list
    if expected is None or isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
        raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
