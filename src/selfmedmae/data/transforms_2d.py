"""2D preprocessing of the paper (Zhou et al., ISBI 2023, ChestX-ray14 recipe).

Two halves:

* deterministic, done once per image and cached (see ``dataset_2d.py``): decode the file, make it 8-bit
  grey (RGBA files with R=G=B and 16-bit files occur), histogram-equalise, resize to
  ``data.image_size`` x ``data.image_size`` (256). The official code trains on a pre-made folder
  ``images_hiseq256`` whose script is not published; this is that step.
* random, on the fly: a ``data.crop_size`` (224) random crop and a horizontal flip for training (MAE
  pre-training uses the same), a centre crop for evaluation, then ``(x / 255 - mean) / std`` with the
  official "MED" statistics (0.5, 0.225) and the grey channel repeated to ``data.in_chans``.

The paper says "random crop 224 from 256"; the official code uses RandomResizedCrop(224, scale 0.08-1).
We follow the paper (docs/official-code.md §6.9).
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

Source = Union[str, Path]


def to_grey_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image as an 8-bit grey array [H, W]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey (some user data): keep the full range, scaled to 8 bits. PIL's convert("L") would clip.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return np.round((arr - lo) * scale).astype(np.uint8)
    # L stays as is; RGB(A) with R=G=B gives back R exactly (ITU-R 601 weights sum to 1, alpha ignored);
    # P, LA, 1 go through PIL's own conversion.
    return np.asarray(img.convert("L"), dtype=np.uint8)


def equalize_hist(img: np.ndarray) -> np.ndarray:
    """Histogram equalisation of an 8-bit image [H, W] (the classic CDF mapping, as OpenCV's equalizeHist).

    Grey level v maps to round((cdf(v) - cdf_min) / (N - cdf_min) * 255), where cdf_min is the count of the
    darkest level present: the darkest level goes to 0, the brightest to 255, and the output histogram is as
    flat as a monotone map of the input levels allows. A constant image is returned unchanged.
    """
    if img.dtype != np.uint8:
        raise TypeError(f"equalize_hist expects uint8, got {img.dtype}")
    hist = np.bincount(img.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    n = img.size
    if n == cdf_min:  # one grey level only
        return img.copy()
    lut = np.round((cdf - cdf_min) / float(n - cdf_min) * 255.0)
    return np.clip(lut, 0, 255).astype(np.uint8)[img]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize [H, W] uint8 to [size, size] (bilinear, antialiased when shrinking, as PIL does).

    CXR14 images are square; other images are stretched to a square rather than cropped, so nothing of the
    image is lost before the random crop.
    """
    if img.shape == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def load_grey(path: Source) -> np.ndarray:
    """Decode an image file to 8-bit grey [H, W]. Raises OSError (and PIL's subclasses) on bad files."""
    with Image.open(path) as img:
        return to_grey_uint8(img)


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def load_levels(path: Source) -> np.ndarray:
    """The file's grey levels at full precision: int64 [H, W] for 16-bit (and 32-bit integer) images, whose
    range is often 12 bits (0..4095, radiographs); uint8 [H, W] for everything else (:func:`to_grey_uint8`)."""
    with Image.open(path) as img:
        if img.mode in HIGH_DEPTH_MODES:
            levels = np.asarray(img, dtype=np.int64)
            if levels.max(initial=0) > 255 or img.mode.startswith("I;16"):
                return np.clip(levels, 0, 65535)
        return to_grey_uint8(img)


def equalize_levels(levels: np.ndarray) -> np.ndarray:
    """Histogram equalisation of integer levels (any depth up to 16 bits) straight to 8 bits: the CDF mapping
    of :func:`equalize_hist` over every level of the file, so a 12-bit radiograph keeps its 4096 levels of
    contrast until the last step (scaling to 8 bits first would leave 16 of them)."""
    hist = np.bincount(levels.ravel())
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    if levels.size == cdf_min:  # one level only
        return np.zeros(levels.shape, np.uint8)
    lut = np.clip(np.round((cdf - cdf_min) / float(levels.size - cdf_min) * 255.0), 0, 255).astype(np.uint8)
    return lut[levels]


def stretch_levels(levels: np.ndarray) -> np.ndarray:
    """Without equalisation: the file's own range (min..max, not 0..65535) linearly onto 0..255."""
    lo, hi = int(levels.min()), int(levels.max())
    if hi == lo:
        return np.zeros(levels.shape, np.uint8)
    return np.round((levels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def preprocess(path: Source, image_size: int, hist_eq: bool = True) -> np.ndarray:
    """The deterministic half: file -> uint8 [image_size, image_size]. Equalised at full resolution and, for
    16-bit files, at full depth (``check-data`` notes such files)."""
    levels = load_levels(path)
    if levels.dtype != np.uint8:
        img = equalize_levels(levels) if hist_eq else stretch_levels(levels)
    else:
        img = equalize_hist(levels) if hist_eq else levels
    return resize_square(img, image_size)


class CropNormalize:
    """The random half: uint8 [S, S] -> float32 [C, crop, crop], normalised.

    Training: random crop position and a horizontal flip with probability 0.5 (torch RNG, so DataLoader
    workers draw different crops). Evaluation: centre crop (torchvision's rounding: top = round((S - crop) / 2)).
    """

    def __init__(self, crop_size: int, train: bool, mean: float = 0.5, std: float = 0.225, in_chans: int = 1):
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3 for 2D images, got {in_chans}")
        self.crop_size, self.train, self.mean, self.std, self.in_chans = crop_size, train, mean, std, in_chans
        # (v / 255 - mean) / std for every grey level v: one gather normalises a crop (faster than torch ops).
        self.lut = ((np.arange(256) / 255.0 - mean) / std).astype(np.float32)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        h, w = img.shape
        c = self.crop_size
        if h < c or w < c:
            raise ValueError(f"image {h}x{w} is smaller than the crop {c} (set data.image_size >= data.crop_size)")
        if self.train:
            top = int(torch.randint(0, h - c + 1, (1,)))
            left = int(torch.randint(0, w - c + 1, (1,)))
        else:
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        x = img[top:top + c, left:left + c]  # [c, c] uint8
        if self.train and int(torch.randint(0, 2, (1,))) == 1:
            x = x[:, ::-1]
        x = self.lut[x][None]  # [1, c, c] float32, normalised (a fresh, writable array)
        if self.in_chans > 1:
            x = np.repeat(x, self.in_chans, axis=0)  # [C, c, c], grey repeated
        return torch.from_numpy(x)


def crop_transform(data_cfg, train: bool) -> CropNormalize:
    """The random half configured from the data section."""
    return CropNormalize(data_cfg.crop_size, train, float(data_cfg.mean), float(data_cfg.std), int(data_cfg.in_chans))
