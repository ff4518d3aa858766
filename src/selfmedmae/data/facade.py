"""The one entry point to the data of a command: :func:`build` -> :class:`Data`.

Every command builds its ``Data`` once; the datalist is scanned once, on first use, and that scan feeds
the check, ``splits.json``, the class names and every dataset::

    data = build(cfg.data, run_dir)                 # nothing read yet
    data.check_or_raise("finetune")                 # every problem of the files, one line each
    data.write_splits("finetune")                   # <run_dir>/splits.json
    data.labels.names, data.labels.multilabel       # the head's outputs
    train = data.dataset("train", train=True)       # random crops (3D: num_samples per volume)
    val = data.dataset("val")                       # whole volumes (3D) / centre crops (2D)

The format (MSD, BraTS, BTCV, CSV of volumes, ChestX-ray14, CSV of images) comes from the table in
:mod:`selfmedmae.data.formats`; nothing outside ``selfmedmae.data`` needs to know whether the data are 2D
or 3D beyond :attr:`Data.input_size`.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from selfmedmae.data.findings import DataReport
from selfmedmae.data.formats import Labels, format_of
from selfmedmae.errors import UserError


def input_size(data_cfg) -> List[int]:
    """The model's input: the 3D crop ``data.roi_size`` or the square 2D crop ``data.crop_size``."""
    return format_of(data_cfg).input_shape(SimpleNamespace(data=data_cfg))


def build(data_cfg, run_dir: Optional[str | Path] = None) -> "Data":
    """The data of ``data_cfg`` (the ``data`` section of a run config); ``run_dir`` holds the disk cache
    (``data.cache=disk``) when ``data.cache_dir`` is not set, for 2D and 3D alike. Reads nothing yet."""
    return Data(data_cfg, Path(run_dir) if run_dir is not None else None)


class Data:
    """One dataset as a command sees it: its scan, check, splits, labels and torch datasets."""

    def __init__(self, data_cfg, run_dir: Optional[Path] = None):
        self.cfg, self.run_dir = data_cfg, run_dir
        self.format = format_of(data_cfg)
        self._items: Dict[str, Dict[str, list]] = {}

    # -- what the data are ------------------------------------------------------------------------------
    @property
    def input_size(self) -> List[int]:
        return input_size(self.cfg)

    @property
    def in_chans(self) -> int:
        return int(self.cfg.in_chans)

    @cached_property
    def scan(self) -> Any:
        """The format's scan of the datalist: done once, on first use."""
        return self.format.scan(self.cfg)

    @cached_property
    def labels(self) -> Labels:
        return self.format.labels(self.cfg, self.scan)

    # -- checks and records -----------------------------------------------------------------------------
    def check(self, stage: str = "finetune") -> DataReport:
        """Every problem of the files (read in full), one line each, and a summary."""
        return self.format.check(self.cfg, self.scan, stage)

    def check_or_raise(self, stage: str = "finetune") -> DataReport:
        report = self.check(stage)
        if report.problems:
            raise UserError("data check failed:\n" + "\n".join(report.problems))
        return report

    def write_splits(self, stage: str = "finetune") -> None:
        """``<run_dir>/splits.json``: which case fell where, for the record."""
        self.format.write_splits(self.run_dir, self.cfg, self.scan, stage)

    # -- items and datasets -----------------------------------------------------------------------------
    def items(self, split: str, stage: str = "finetune") -> list:
        """The items of ``split``: ``train`` (fine-tuning's label subset), ``train_pool``, ``val``, ``test``,
        ``all``, or ``pretrain`` (what pre-training sees)."""
        stage = "pretrain" if split == "pretrain" else stage
        if stage not in self._items:
            self._items[stage] = self.format.split_items(self.cfg, self.scan, stage)
        parts = self._items[stage]
        if split not in parts:
            names = ", ".join(k for k in parts if not k.startswith("_"))
            raise UserError(f"split: {split!r} is not one of {names}")
        return parts[split]

    def pin_recorded(self, run_dir: str | Path, split: str) -> bool:
        """Make ``split`` exactly the ids ``<run_dir>/splits.json`` recorded for it
        (:mod:`selfmedmae.data.recorded`), for commands that score a run; False (with a warning) when the run
        has no record, or for ``all``. Raises UserError when recorded ids are missing from the data."""
        from selfmedmae.data.recorded import recorded_items

        pinned = recorded_items(Path(run_dir), split, self.items("all"), f"data.root {self.cfg.root}")
        if pinned is None:
            return False
        self._items["finetune"][split] = pinned
        return True

    def dataset(self, split: str, train: bool = False, *, with_label: bool = True, rank: int = 0,
                world_size: int = 1, cache: Optional[str] = None):
        """The torch dataset of ``split``: training transforms (random crops, flips) when ``train``, the
        evaluation ones otherwise. ``rank`` / ``world_size``: this process's share (evaluation).
        ``cache`` replaces ``data.cache`` (``none`` for a single pass over the data)."""
        stage = "pretrain" if split == "pretrain" else "finetune"
        items = self.items(split, stage)[rank::world_size] if not train else self.items(split, stage)
        cfg = self._with_cache(cache) if cache is not None else self.cfg
        return self.format.dataset(cfg, items, train, stage, self._cache_dir(), with_label)

    def _with_cache(self, cache: str):
        """The data section with ``data.cache`` replaced."""
        cfg = self.cfg
        if cache == cfg.cache:
            return cfg
        return OmegaConf.merge(cfg, {"cache": cache}) if OmegaConf.is_config(cfg) else replace(cfg, cache=cache)

    def files_dataset(self, files):
        """The evaluation preprocessing over files that are in no split (``predict``'s inputs); items carry
        ``image`` and ``id`` (the path as given)."""
        return self.format.files_dataset(self._with_cache("none"), [str(f) for f in files])  # one pass: no cache

    def _cache_dir(self) -> str:
        """``data.cache=disk``: ``data.cache_dir``, else ``<run_dir>/cache`` (a temporary folder's without one)."""
        if self.cfg.cache_dir:
            return str(self.cfg.cache_dir)
        base = self.run_dir if self.run_dir is not None else Path(tempfile.gettempdir()) / "selfmedmae"
        return str(base / "cache")
