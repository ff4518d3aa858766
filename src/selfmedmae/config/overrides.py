"""``key=value`` items from the command line: the one parser every command uses.

A key is a dotted config path (``train.epochs``), optionally with a scope in front (``pretrain:train.epochs``,
used by ``selfmedmae reproduce``); the value is everything after the first ``=``, read as YAML by whoever
applies it. An item without ``=`` is refused with a one-line :class:`~selfmedmae.errors.ConfigError`.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

from selfmedmae.errors import ConfigError

LOOKS_LIKE = re.compile(r"^(?:[A-Za-z_]+:)?[A-Za-z_][\w.]*=")  # [scope:]section.key=...


def parse_overrides(items: Sequence[str]) -> list[tuple[str, str]]:
    """``["a.b=1", ...]`` -> ``[("a.b", "1"), ...]`` (keys stripped, values as written)."""
    pairs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{item}: an override must look like key=value")
        key, value = item.split("=", 1)
        if any(ord(c) < 32 and c not in "\t" for c in value):  # YAML refuses them with a traceback
            raise ConfigError(f"{key.strip()}: {value!r} holds a control character (a NUL?); no setting may hold one")
        pairs.append((key.strip(), value))
    return pairs


def override_keys(items: Sequence[str]) -> list[str]:
    """The keys of well-formed ``key=value`` items (others are left to :func:`parse_overrides` to refuse)."""
    return [key for key, _ in parse_overrides([i for i in items if "=" in i])]


def separate(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(other items, ``key=value`` items) of a mixed list such as predict's inputs: an item that looks like
    ``section.key=value`` and is no existing path is an override."""
    others, overrides = [], []
    for item in items:
        (overrides if LOOKS_LIKE.match(item) and not os.path.exists(item) else others).append(item)
    return others, overrides
