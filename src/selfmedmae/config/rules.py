"""The small rules the config checks are written in: one-line errors that name the key."""
from __future__ import annotations

import math
from typing import Any

from selfmedmae.errors import UserError


def _err(key: str, text: str) -> UserError:
    from selfmedmae.config import ConfigError

    return ConfigError(f"{key}: {text}")


def _positive(cfg: Any, key: str, allow_zero: bool = False, integer: bool = False) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    bad = value < 0 if allow_zero else value <= 0
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        raise _err(key, f"{value} must be {'>= 0' if allow_zero else '> 0'}")


def _in_range(cfg: Any, key: str, lo: float, hi: float, hi_open: bool = True, lo_open: bool = False) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok or not math.isfinite(float(value)):
        raise _err(key, f"{value} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")


def _choice(cfg: Any, key: str, choices: tuple) -> None:
    value = _get(cfg, key)
    if value not in choices:
        raise _err(key, f"{value!r} is not one of {', '.join(map(str, choices))}")


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node
