"""Run configuration: typed sections with the paper's defaults, YAML files, ``key=value`` overrides.

A run config is the merge, in order, of
1. the schema below (every default is the paper's value; ``docs/config-reference.md`` lists every key),
2. the YAML file given on the command line, after the files it names in ``_base_`` (paths relative to it),
3. ``key=value`` overrides from the command line.

Unknown keys and values of the wrong type are rejected with a message that names the key
(:class:`ConfigError`). The resolved config is written into the run folder by the stages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfmedmae.config.sections import PRESET_DECODERS, DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from selfmedmae.config.overrides import parse_overrides
from selfmedmae.config.rules import yaml_error_text
from selfmedmae.errors import ConfigError
from selfmedmae.runtime.device import PRECISIONS


@dataclass
class Config:
    stage: str = "pretrain"  # pretrain | finetune
    task: str = "segmentation"  # segmentation (3D, UNETR) | classification (2D or 3D, ViT + head)
    init: str = "scratch"  # finetune start: scratch | mae:<ckpt> | imagenet:<ckpt> | official:<ckpt> | native:<ckpt>
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


STAGES = ("pretrain", "finetune")
TASKS = ("segmentation", "classification")


def _read_yaml(path: Path, seen: tuple[Path, ...] = (), trail: list | None = None,
               cited_by: Path | None = None) -> DictConfig:
    """Read one YAML file and the ``_base_`` files it names (relative to it), merged base-first.

    ``trail``, when given, receives ``(path, node)`` for every file read, in merge order (base first), so
    that :mod:`selfmedmae.config.sources` can tell which file set which key.
    """
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    if not path.is_file():
        cited = f"{cited_by}: _base_ " if cited_by is not None else ""  # name the file that cites a base
        if path.is_dir():
            raise ConfigError(f"{cited}{path}: is a folder, not a config file")
        raise ConfigError(f"{cited}{path}: {'file' if cited else 'config file'} not found")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML ({yaml_error_text(exc)})") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    bases = node.pop("_base_", None)
    if bases is None:
        if trail is not None:
            trail.append((path, node))
        return node
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create({})
    for base in bases:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / str(base), seen + (path,), trail, cited_by=path))
    if trail is not None:
        trail.append((path, node))
    return OmegaConf.merge(merged, node)


def _check(cfg: DictConfig, source: str | None = None, overridden: Sequence[str] = ()) -> None:
    def where(key: str) -> str:  # name the file a bad value came from; an override is named by its key alone
        return f"{source}: {key}" if source and key not in overridden else key

    if cfg.stage not in STAGES:
        raise ConfigError(f"{where('stage')}: {cfg.stage!r} is not one of {', '.join(STAGES)}")
    if cfg.task not in TASKS:
        raise ConfigError(f"{where('task')}: {cfg.task!r} is not one of {', '.join(TASKS)}")
    if cfg.run.resume not in (True, False, "auto"):
        raise ConfigError(f"{where('run.resume')}: {cfg.run.resume!r} is not one of true, false, auto")
    if cfg.run.precision not in PRECISIONS:
        raise ConfigError(f"{where('run.precision')}: {cfg.run.precision!r} is not one of {', '.join(PRECISIONS)}")


def _error(exc: OmegaConfBaseException, source: str | None) -> ConfigError:
    key = getattr(exc, "full_key", None)
    where = f"{source}: " if source else ""
    return ConfigError(f"{where}{key + ': ' if key else ''}{str(exc).splitlines()[0]}")


def _build(base: object, source: str | None, overrides: Sequence[str]) -> DictConfig:
    """Schema <- ``base`` (a YAML file's node or a plain dict) <- ``key=value`` overrides, validated."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), base)
    except OmegaConfBaseException as exc:
        raise _error(exc, source) from None
    try:
        pairs = parse_overrides(overrides)
        for key, value in pairs:
            if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
                raise ConfigError(f"{key}: unknown config key")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={value}"]))
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise _error(exc, None) from None
    _check(cfg, source, [key for key, _ in pairs])
    _preset_decoder(cfg)
    return cfg


def _preset_decoder(cfg: DictConfig) -> None:
    """``model.decoder_*`` left null take the preset's MAE decoder (:data:`PRESET_DECODERS`), so the saved
    config names the decoder a run trains; an unknown preset is left to the model check to name."""
    for key, value in PRESET_DECODERS.get(str(cfg.model.preset), {}).items():
        if cfg.model[key] is None:
            cfg.model[key] = value


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Build the resolved, validated config of a run. Raises :class:`ConfigError`."""
    base = _read_yaml(Path(path)) if path is not None else {}
    return _build(base, str(path) if path is not None else None, overrides)


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg))


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def config_from_dict(values: dict, overrides: Sequence[str] = (), source: str = "config") -> DictConfig:
    """The validated config of a plain dict (e.g. the one a checkpoint carries) plus ``key=value`` overrides.

    Same rules as :func:`load_config`: unknown keys and wrong types raise :class:`ConfigError` naming
    ``source`` (the file the dict came from) and the key.
    """
    return _build(values, source, overrides)
