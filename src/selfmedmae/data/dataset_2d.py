"""The 2D image dataset shared by ChestX-ray14 and the user's CSV: records, a shared preprocessing cache,
the torch Dataset, the seeded group split, and the selection of each split's records.

Commands reach it through :func:`selfmedmae.data.build` (``data.dataset("train", train=True)``). An item is ``{"image": float32 [C, crop, crop], "label": float32 [K] 0/1, "id": str}`` ("label" only when
every record has one, e.g. not for an unlabelled CSV). A batch from the default collate is
``{"image": [B, C, crop, crop], "label": [B, K], "id": list of B str}``.

Cache: decoding a 1024^2 PNG and equalising it costs ~25 ms, the 256^2 result is 64 KiB. The result
rows live in one file mapped shared (``np.memmap``), with a "done" byte per row, so every DataLoader
worker (forked or spawned, persistent or not) sees what any other worker already prepared: after the
first epoch nothing is decoded again. ``data.cache``: ``memory`` = a temporary file (page cache), deleted
when the dataset is; ``disk`` = a file in ``cache_dir`` reused by later runs, keyed by the file list, the
files' sizes and times, and the preprocessing settings; ``none`` = decode every time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from selfmedmae.data.selection import label_subset, selection_problems, subset_rule
from selfmedmae.data.splits import seeded_split, splits_record
from selfmedmae.data.transforms_2d import crop_transform, preprocess
from selfmedmae.errors import UserError

CACHE_VERSION = 2  # 2: 16-bit files equalised at full depth. Bump when preprocess() changes, so old disk caches are not reused


@dataclass(frozen=True)
class Record2D:
    id: str  # what the item's "id" carries (CXR14: the file name; CSV: the path as written)
    path: str  # absolute or cwd-relative path of the image file
    label: Optional[np.ndarray]  # float32 [K] 0/1, or None when unlabelled
    group: str  # patient (or other unit) that splits keep together


def split_groups(groups: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> Dict[str, set]:
    """{"train", "val", "test": set of groups}: the project's seeded rule (:func:`splits.seeded_split`)
    applied to the distinct groups (patients), so whole patients move together and the parts are
    patient-disjoint."""
    return {k: set(v) for k, v in seeded_split(sorted(set(groups)), val_fraction, test_fraction, seed).items()}


class PreprocCache:
    """uint8 rows [n, size, size] in a shared file mapping, each with a done flag."""

    def __init__(self, path: Path, n: int, size: int, owned: bool):
        self.path, self.n, self.size = Path(path), n, size
        self._arrays = None
        new = not self.path.exists()
        with open(self.path, "ab") as f:  # sparse file: rows, then one flag byte per row
            f.truncate(n * size * size + n)
        if owned:  # remove the temporary file with its dataset, in the process that made it only
            weakref.finalize(self, _remove_if_pid, self.path.parent, os.getpid())
        self.new = new

    def _open(self):
        if self._arrays is None:
            mm = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=(self.n * self.size * self.size + self.n,))
            rows = mm[: self.n * self.size * self.size].reshape(self.n, self.size, self.size)
            self._arrays = (rows, mm[self.n * self.size * self.size:])
        return self._arrays

    def get(self, i: int, make: Callable[[], np.ndarray]) -> np.ndarray:
        rows, done = self._open()
        if not done[i]:
            rows[i] = make()  # two workers may race on one row: both write the same bytes
            done[i] = 1  # set after the row, so a reader never sees a half-written row as done
        return np.array(rows[i])

    def n_done(self) -> int:
        return int(np.count_nonzero(self._open()[1]))

    def __getstate__(self):  # spawned workers reopen the mapping themselves
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state


def _remove_if_pid(folder: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def make_cache(records: Sequence[Record2D], data_cfg, cache_dir: Optional[str] = None) -> Optional[PreprocCache]:
    """The cache chosen by ``data.cache`` for these records (None for ``none``)."""
    mode = str(data_cfg.cache)
    size, n = int(data_cfg.image_size), len(records)
    if mode == "none" or n == 0:
        return None
    if mode == "memory":
        folder = Path(tempfile.mkdtemp(prefix="selfmedmae-2d-"))
        return PreprocCache(folder / "rows.u8", n, size, owned=True)
    if mode == "disk":
        folder = Path(cache_dir or data_cfg.cache_dir or Path(tempfile.gettempdir()) / "selfmedmae-cache")
        folder.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha1(f"v{CACHE_VERSION} {size} {bool(data_cfg.hist_eq)}".encode())
        for r in records:
            st = os.stat(r.path)
            key.update(f"\n{os.path.abspath(r.path)} {st.st_size} {st.st_mtime_ns}".encode())
        return PreprocCache(folder / f"images2d-{key.hexdigest()[:16]}.u8", n, size, owned=False)
    raise UserError(f"data.cache: {mode!r} is not one of memory, disk, none")


class Image2DDataset(Dataset):
    """2D images with optional multi-label targets; the deterministic preprocessing is cached."""

    def __init__(self, records: Sequence[Record2D], data_cfg, train: bool, cache_dir: Optional[str] = None):
        self.records: List[Record2D] = list(records)
        self.image_size, self.hist_eq = int(data_cfg.image_size), bool(data_cfg.hist_eq)
        self.transform = crop_transform(data_cfg, train)
        self.labelled = bool(self.records) and all(r.label is not None for r in self.records)
        self.cache = make_cache(self.records, data_cfg, cache_dir)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> List[str]:
        return [r.id for r in self.records]

    def prepared(self, i: int) -> np.ndarray:
        """Record i after the deterministic half: uint8 [image_size, image_size]."""
        rec = self.records[i]

        def make() -> np.ndarray:
            try:
                return preprocess(rec.path, self.image_size, self.hist_eq)
            except OSError as exc:  # PIL's errors are OSError subclasses; name the file, one line
                raise UserError(f"{rec.path}: unreadable image ({exc})".splitlines()[0]) from None

        return make() if self.cache is None else self.cache.get(i, make)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        item = {"image": self.transform(self.prepared(i)), "id": rec.id}  # image: [C, crop, crop]
        if self.labelled:
            item["label"] = torch.from_numpy(np.asarray(rec.label, dtype=np.float32))  # [K]
        return item


def select_records(scanned, data_cfg) -> Dict[str, List[Record2D]]:
    """The scan's splits with ``train`` = fine-tuning's subset, ``train_pool`` = the whole train split and
    ``pretrain`` = pre-training's images (with the scan's ``unlabelled`` images, which are in no split). Raises :class:`UserError` on a problem of the data or settings."""
    raise_if_problems(scanned.report)
    problems = selection_problems(data_cfg)
    if problems:
        raise UserError(problems[0])
    out = dict(scanned.splits)
    pool = out["train"]
    kept = set(label_subset([r.id for r in pool], data_cfg.label_fraction, data_cfg.max_labelled,
                            data_cfg.label_seed))
    out["train_pool"], out["train"] = pool, [r for r in pool if r.id in kept]
    out["pretrain"] = (out["all"] if str(data_cfg.pretrain_on) == "all" else pool) + list(scanned.unlabelled)
    return out


def splits_record_2d(data_cfg, scanned) -> dict:
    """The ``splits.json`` record (:func:`selfmedmae.data.splits.splits_record`) of a 2D format's scan."""
    splits = select_records(scanned, data_cfg)
    parts = {name: [(r.id, r.path) for r in splits.get(name, [])] for name in ("train", "val", "test", "train_pool")}
    rule = scanned.split_rule
    more = {"pretrain_unlabelled": [r.id for r in scanned.unlabelled]} if scanned.unlabelled else {}
    return splits_record(rule, str(data_cfg.root), parts, subset_rule(data_cfg), **more)


def raise_if_problems(report, hint: str = "run `selfmedmae check-data` to list them all") -> None:
    if report.problems:
        more = len(report.problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''}; {hint})" if more else ""
        raise UserError(report.problems[0] + extra)
