"""Data: :func:`build` (every command's one entry point, :mod:`.facade`), the table of formats
(:mod:`.formats`), the readers of the released formats, the paper's preprocessing, splits, datasets and
the up-front check (:mod:`.check`).

Names are imported lazily (PEP 562) so that ``import selfmedmae.data`` stays cheap and a 2D-only run
never imports the 3D (MONAI) stack.
"""
from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    # the entry point of every command: data = build(cfg.data, run_dir)
    "build": "facade", "Data": "facade", "input_size": "facade", "FORMATS": "formats", "Labels": "formats",
    # 3D volumes: MSD / BraTS / BTCV / CSV
    "read_datalist": "splits", "split_cases": "splits", "cases_for": "splits", "write_splits": "splits",
    "train_transforms": "transforms_3d", "eval_transforms": "transforms_3d", "invert_to_input": "transforms_3d",
    "build_train_dataset": "loader", "build_eval_dataset": "loader",
    "BratsRegionsd": "brats",
    # the check (both halves)
    "check_or_raise": "check", "DataReport": "findings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
