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
    # pieces of the 3D pipeline that users compose themselves
    "train_transforms": "transforms_3d", "eval_transforms": "transforms_3d", "invert_to_input": "transforms_3d",
    "BratsRegionsd": "brats", "DataReport": "findings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
