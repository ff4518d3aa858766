"""Which settings make a run the run it is: two configs that differ only in :data:`NEUTRAL_KEYS` describe the
same run (a resume may change them, a finished run with other values of them is reused); any other
difference makes another run."""
from __future__ import annotations

from typing import Any

# Where things are, how fast they load, how often things are written, the machine. Everything else changes
# the weights (or the run's record).
NEUTRAL_KEYS = ("run.dir", "run.resume", "run.device", "run.precision_probe", "data.root", "data.num_workers", "data.cache",
                "data.cache_dir", "data.cache_rate", "train.log_every", "train.vis_every", "train.save_every",
                "train.save_every_steps")
ABSENT = "<absent>"


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def is_neutral(key: str) -> bool:
    return key.strip() in NEUTRAL_KEYS


def run_differences(saved: dict, now: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, value now) for every setting outside :data:`NEUTRAL_KEYS` that differs."""
    a, b = flatten(saved), flatten(now)
    keys = [k for k in dict.fromkeys([*a, *b]) if not is_neutral(k) and a.get(k, ABSENT) != b.get(k, ABSENT)]
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in keys]
