"""The 2D image dataset shared by ChestX-ray14 and the user's CSV: records, a shared preprocessing cache,
the torch Dataset, the seeded group split, and the per-format dispatch.

An item is ``{"image": float32 [C, crop, crop], "label": float32 [K], "id": str}`` ("label" only when
every record has one, e.g. not for an unlabelled pre-training folder). A batch from the default collate
is ``{"image": [B, C, crop, crop], "label": [B, K], "id": list of B str}``.

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
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from selfmedmae.data.report import DataReport
from selfmedmae.data.transforms_2d import crop_transform, preprocess
from selfmedmae.errors import UserError

CACHE_VERSION = 1  # bump when preprocess() changes, so old disk caches are not reused


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
    from selfmedmae.data.splits import seeded_split

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


def inspect_image(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(``'<mode> <W>x<H>'``, None) for a readable image, (None, problem line) otherwise. Reads every chunk
    and checks its CRC (PIL ``verify``) without decompressing the pixels: catches truncated and corrupt files."""
    try:
        with Image.open(path) as img:
            desc = f"{img.mode} {img.size[0]}x{img.size[1]}"
            img.verify()
        return desc, None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        return None, f"{path}: unreadable image ({type(exc).__name__}: {exc})".splitlines()[0]


def inspect_images(paths: List[str], report: DataReport, threads: int = 8) -> Counter:
    """Verify every file (threads: mostly I/O); problems into ``report``; returns a Counter of modes/sizes."""
    seen: Counter = Counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for desc, problem in pool.map(inspect_image, paths):
            if problem:
                report.problems.append(problem)
            else:
                seen[desc] += 1
    return seen


def label_counts(records: Sequence[Record2D], classes: Sequence[str], none_name: str = "no class") -> str:
    """'Atelectasis 34, ..., No Finding 39': positives per class and all-zero rows, for summaries."""
    labelled = [r.label for r in records if r.label is not None]
    counts = np.sum(labelled, axis=0) if labelled else np.zeros(len(classes))
    none = sum(1 for v in labelled if not v.any())
    return ", ".join(f"{c} {int(n)}" for c, n in zip(classes, counts)) + f", {none_name} {none}"


def config_problems_2d(data_cfg, report) -> None:
    """Config values no 2D reader can work with, as 'data.<key>: problem' lines."""
    if int(data_cfg.spatial_dims) != 2:
        report.problems.append(f"data.spatial_dims: format {data_cfg.format} is 2D, got {data_cfg.spatial_dims}")
    if int(data_cfg.in_chans) not in (1, 3):
        report.problems.append(f"data.in_chans: must be 1 (grey) or 3 (grey repeated), got {data_cfg.in_chans}")
    if int(data_cfg.crop_size) > int(data_cfg.image_size):
        report.problems.append(f"data.crop_size: {data_cfg.crop_size} is larger than "
                               f"data.image_size {data_cfg.image_size}")
    if str(data_cfg.cache) not in ("memory", "disk", "none"):
        report.problems.append(f"data.cache: {data_cfg.cache!r} is not one of memory, disk, none")


def _format_module(data_cfg):
    from importlib import import_module

    fmt = str(data_cfg.format)
    name = {"cxr14": "chestxray14", "csv": "csv_2d"}.get(fmt)
    if name is None:
        raise UserError(f"data.format: {fmt!r} has no 2D reader (2D formats: cxr14, csv)")
    return import_module(f"selfmedmae.data.{name}")


def build_2d_dataset(data_cfg, split: str, *, train: Optional[bool] = None,
                     cache_dir: Optional[str] = None) -> Image2DDataset:
    """The dataset of one split (train, val, test, train_val, all) of a 2D format (cxr14 or csv).

    ``train`` picks the random crop + flip (default: only for split "train"), else the centre crop.
    Raises :class:`UserError` naming the first problem when the data is not usable.
    """
    return _format_module(data_cfg).build_dataset(data_cfg, split, train=train, cache_dir=cache_dir)


def check_2d(data_cfg):
    """The :class:`~selfmedmae.data.report.DataReport` of a 2D format."""
    return _format_module(data_cfg).check(data_cfg)


def raise_if_problems(report, hint: str = "run `selfmedmae check-data` to list them all") -> None:
    if report.problems:
        more = len(report.problems) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''}; {hint})" if more else ""
        raise UserError(report.problems[0] + extra)
