"""The small rules the config checks are written in: one-line errors that name the key."""
from __future__ import annotations

import math
from typing import Any, Mapping

from selfmedmae.errors import ConfigError


def err(key: str, text: str) -> ConfigError:
    """The one-line error of a config value: ``"<key>: <text>"``."""
    return ConfigError(f"{key}: {text}")


def positive(cfg: Any, key: str, allow_zero: bool = False, integer: bool = False) -> None:
    value = get(cfg, key)
    if value is None:
        return
    bad = value < 0 if allow_zero else value <= 0
    if bad or (isinstance(value, float) and not math.isfinite(value)):
        raise err(key, f"{value} must be {'>= 0' if allow_zero else '> 0'}")


def in_range(cfg: Any, key: str, lo: float, hi: float, hi_open: bool = True, lo_open: bool = False) -> None:
    value = get(cfg, key)
    if value is None:
        return
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok or not math.isfinite(float(value)):
        raise err(key, f"{value} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}")


def choice(cfg: Any, key: str, choices: tuple) -> None:
    value = get(cfg, key)
    if value not in choices:
        raise err(key, f"{value!r} is not one of {', '.join(map(str, choices))}")


def get(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` of a config, a dict or an object with attributes."""
    node = cfg
    for part in key.split("."):
        node = node[part] if isinstance(node, Mapping) or hasattr(node, "keys") else getattr(node, part)
    return node


def yaml_error_text(exc: Exception) -> str:
    """'line 3, column 7: mapping values are not allowed here' for a YAML error (its first line alone has no place)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [exc.__class__.__name__])[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"{exc.__class__.__name__}: {problem}"
