"""The small rules the config checks are written in: one-line errors that name the key."""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional

from selfmedmae.errors import ConfigError


NAME_MAX, PATH_MAX = 255, 4096  # bytes of one file name and of a whole path (Linux, macOS: 255 / 1024)


def path_problem(path: Any) -> Optional[str]:
    """Why the operating system would refuse ``path`` as a file name, before anything touches it: a NUL
    character, a name over NAME_MAX bytes, a path over PATH_MAX bytes; None when it may be used."""
    text = os.fspath(path)
    if "\x00" in text:
        return "holds a NUL character, which no file name may hold"
    raw = os.fsencode(text)
    longest = max(len(part) for part in raw.split(b"/"))
    if longest > NAME_MAX:
        return f"holds a name of {longest} bytes; file systems allow at most {NAME_MAX}"
    if len(raw) >= PATH_MAX:
        return f"is {len(raw)} bytes long; the operating system allows paths below {PATH_MAX}"
    return None


def shown(path: Any, keep: int = 80) -> str:
    """``path`` for a one-line message: long ones shortened in the middle, control characters escaped."""
    text = repr(os.fspath(path))[1:-1]
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-keep // 2:]} ({len(text)} characters)"


def check_path(key: str, path: Any) -> None:
    """A ConfigError naming ``key`` when :func:`path_problem` finds one."""
    problem = path_problem(path) if path not in (None, "") else None
    if problem:
        raise err(key, f"{shown(path)} {problem}")


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
