"""The 2D data check's shared pieces: verify image files, count labels, reject unusable 2D config values.

Used by ``chestxray14.check`` and ``csv_2d.check``; each problem is one line naming the file or key.
"""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from selfmedmae.data.dataset_2d import Record2D
from selfmedmae.data.findings import DataReport, constant_problem
from selfmedmae.data.inputs import nonfinite
from selfmedmae.data.settings import common_settings, image_settings
from selfmedmae.errors import ConfigError


MIN_SIDE = 16  # pixels: one patch of ViT-B/16; a smaller image, stretched to data.image_size, holds no detail


def inspect_image(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(``'<mode> <W>x<H>'``, None) for a usable image, (None, problem line) otherwise. Checks every chunk's
    CRC (PIL ``verify``: truncated and corrupt files), then decodes the pixels: float images must be finite,
    no image may be constant (one value everywhere) or under :data:`MIN_SIDE` pixels on a side."""
    try:
        with Image.open(path) as img:
            desc = f"{img.mode} {img.size[0]}x{img.size[1]}"
            img.verify()
        with Image.open(path) as img:
            if img.mode == "F":  # 32-bit float TIFFs can hold NaN / Inf
                bad = nonfinite(np.asarray(img))
                if bad:
                    return None, f"{path}: {bad} non-finite pixel(s) (NaN or Inf)"
            width, height = img.size
            if min(width, height) < MIN_SIDE:
                return None, (f"{path}: {width}x{height} pixels, under {MIN_SIDE} on a side: stretched to the model's "
                              f"input it holds no detail to learn from")
            value = _constant_value(img)
        if value is not None:
            return None, constant_problem(path, value, "pixel")
        return desc, None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        return None, f"{path}: unreadable image ({type(exc).__name__}: {exc})".splitlines()[0]


def _constant_value(img: Image.Image):
    """The one value of an image that has one value everywhere (alpha ignored), else None."""
    bands = [b for b in img.getbands() if b != "A"]
    extrema = img.getextrema()
    if len(img.getbands()) == 1:
        extrema = (extrema,)
    kept = [e for b, e in zip(img.getbands(), extrema) if b in bands]
    if all(lo == hi for lo, hi in kept):
        values = [lo for lo, _ in kept]
        return values[0] if len(set(values)) == 1 else "(" + ", ".join(map(str, values)) + ")"
    return None


def _grey_in_colour(path: str) -> bool:
    """True for an RGB(A) / palette file whose pixels are grey (R = G = B): turning it grey loses nothing
    (ChestX-ray14 holds such RGBA files). Decodes the image: only colour-mode files get here."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception:
        return False
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def inspect_images(paths: List[str], report: DataReport, threads: int = 8, crop_size: int = 0) -> Counter:
    """Verify every file (threads: mostly I/O); problems into ``report``; returns a Counter of modes/sizes.
    An image smaller than ``crop_size`` on a side is a warning naming it: it is stretched up to the crop."""
    seen: Counter = Counter()
    deep, colour = [], []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for path, (desc, problem) in zip(paths, pool.map(inspect_image, paths)):
            if problem:
                report.problems.append(problem)
                continue
            seen[desc] += 1
            mode, size = desc.split()
            width, height = (int(v) for v in size.split("x"))
            if min(width, height) < crop_size:
                report.warnings.append(f"{path}: {width}x{height} pixels, smaller than the crop {crop_size} "
                                       f"(data.crop_size); it is stretched up to data.image_size")
            if mode.startswith("I"):
                deep.append(path)
            elif mode not in ("L", "1") and not _grey_in_colour(path):
                colour.append((path, mode))
    if deep:
        report.warnings.append(f"{len(deep)} image(s) have 16-bit grey levels (e.g. {deep[0]}): they are "
                               f"histogram-equalised at their full depth, then stored as 8-bit")
    if colour:
        modes = sorted({m for _, m in colour})
        report.warnings.append(f"{len(colour)} image(s) are in colour ({', '.join(modes)}; e.g. {colour[0][0]}): "
                               f"they are converted to grey (ITU-R 601 luma), the model sees grey")
    return seen


def label_counts(records: Sequence[Record2D], classes: Sequence[str], none_name: str = "no class") -> str:
    """'Atelectasis 34, ..., No Finding 39': positives per class and all-zero rows, for summaries."""
    labelled = [r.label for r in records if r.label is not None]
    counts = np.sum(labelled, axis=0) if labelled else np.zeros(len(classes))
    none = sum(1 for v in labelled if not v.any())
    return ", ".join(f"{c} {int(n)}" for c, n in zip(classes, counts)) + f", {none_name} {none}"


def config_problems_2d(data_cfg, report) -> None:
    """The data.* rules of images (:mod:`selfmedmae.data.settings`) as a problem line, for a scan made
    without the up-front check."""
    cfg = SimpleNamespace(data=data_cfg)
    try:
        common_settings(cfg)
        image_settings(cfg)
    except ConfigError as exc:
        report.problems.append(str(exc))


def class_balance_warnings(splits, classes: Sequence[str], source: str, report: DataReport) -> None:
    """Warn about a class with no positive or no negative image in a split: its AUC there is undefined."""
    for name in ("train", "val", "test"):
        labels = [r.label for r in splits.get(name, []) if r.label is not None]
        if not labels:
            continue
        pos = np.sum(labels, axis=0)
        for k, c in enumerate(classes):
            if pos[k] == 0 or pos[k] == len(labels):
                what = "positive" if pos[k] == 0 else "negative"
                report.warnings.append(f"{source}: split {name!r} has no {what} {c!r} image (its AUC is undefined)")
