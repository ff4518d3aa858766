"""``selfmedmae config``: the resolved config of a run, each value with where it came from.

A value comes from the schema's ``default``, from a YAML ``file`` (the last file of the ``_base_`` chain
that sets it), or from a command-line ``override``. The config is built by :func:`selfmedmae.config.load_config`
itself, so what is printed is exactly what a stage would run with.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from omegaconf import DictConfig, OmegaConf

from selfmedmae.config import _read_yaml, load_config
from selfmedmae.config.overrides import override_keys


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys and values of a nested dict; lists and scalars are leaves."""
    if isinstance(tree, dict) and (tree or not prefix):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


def _sets(tree: Any, key: str) -> bool:
    """Whether a YAML node (as a plain dict) sets ``key`` or a section above it to a non-mapping value."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


# keys whose default (null) takes the preset's value
PRESET_KEYS = tuple(f"model.{k}" for k in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads"))


def config_sources(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> tuple[DictConfig, dict[str, str]]:
    """The resolved config and, for every leaf key, ``default``, ``file <path>`` or ``override``."""
    cfg = load_config(path, overrides)  # validates; raises ConfigError naming the key
    trail: list = []
    if path is not None:
        _read_yaml(Path(path), trail=trail)
    files = [(p, OmegaConf.to_container(node, resolve=False)) for p, node in trail]
    overridden = override_keys(overrides)
    sources = {}
    for key, _ in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        source = f"default (preset {cfg.model.preset})" if key in PRESET_KEYS else "default"
        for file, node in files:
            if _sets(node, key):
                source = f"file {_relative(file)}"
        if any(key == o or key.startswith(o + ".") for o in overridden):
            source = "override"
        sources[key] = source
    return cfg, sources


def format_sources(cfg: DictConfig, sources: dict[str, str], only_set: bool = False) -> str:
    """One line per key: ``key: value  # source``, values as YAML/JSON would write them, aligned."""
    rows = []
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=True)):
        if only_set and sources[key].startswith("default"):
            continue
        rows.append((f"{key}: {json.dumps(value)}", sources[key]))
    width = max((len(text) for text, _ in rows), default=0)
    return "".join(f"{text:<{width}}  # {source}\n" for text, source in rows)


def run(path: str, overrides: Sequence[str], only_set: bool = False) -> int:
    cfg, sources = config_sources(path, overrides)
    print(format_sources(cfg, sources, only_set), end="")
    return 0
