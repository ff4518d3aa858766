"""Segmentation overlays as in the paper's Fig. 3: image, ground truth and prediction side by side.

Rows are slices at fixed fractions (default 30 / 50 / 70 %) of the foreground's extent along the slicing axis
(foreground of the ground truth, or of the prediction when there is none), so every row shows the structure.
Columns are the image, the image with the ground truth, the image with the prediction; without a ground truth
only image and prediction. A class has the same colour in every panel and figure (`plotting.class_colour`).
3D slices are drawn in the NIfTI way (first array axis to the right, second axis up, voxel aspect from the
spacing); 2D images as pictures (row 0 at the top).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from selfmedmae.figures.plotting import class_colour, save, to_numpy, window


def _masks(seg: Any, spatial: tuple[int, ...], multilabel: bool, n_classes: int | None) -> np.ndarray:
    """Label map [*S] / [1, *S], one-hot [C, *S] (background first) or regions [K, *S] -> binary masks [K, *S]."""
    seg = to_numpy(seg)
    if seg.shape == (1, *spatial):
        seg = seg[0]
    if seg.shape == spatial:  # integer label map, 0 = background
        labels = seg.astype(np.int64)
        k = n_classes if n_classes is not None else int(labels.max(initial=0))
        return np.stack([labels == c + 1 for c in range(k)]) if k else np.zeros((0, *spatial), bool)
    if seg.shape[1:] != spatial:
        raise ValueError(f"segmentation of shape {list(seg.shape)} does not match "
                         f"the image's spatial shape {list(spatial)}")
    if multilabel:  # overlapping regions, e.g. BraTS TC / WT / ET
        return seg > 0.5
    return _masks(seg.argmax(0), spatial, False, n_classes if n_classes is not None else seg.shape[0] - 1)


def _slice_positions(fg: np.ndarray, axis: int, fractions: Sequence[float]) -> list[int]:
    """Indices at `fractions` of the foreground extent along axis (the whole axis when there is no foreground)."""
    present = np.nonzero(fg.any(axis=tuple(a for a in range(fg.ndim) if a != axis)))[0]
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, fg.shape[axis] - 1)
    return list(dict.fromkeys(int(np.floor(lo + f * (hi - lo) + 0.5)) for f in fractions))  # half up, not to even


def _paint(grey: np.ndarray, masks: np.ndarray, order: Sequence[int], alpha: float) -> np.ndarray:
    """Grey slice [a, b] in [0, 1] + masks [K, a, b] -> RGB [a, b, 3], classes blended in `order`."""
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for k in order:
        m = masks[k]
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(class_colour(k))
    return rgb


def segmentation_overlay_figure(
    image: Any,
    prediction: Any,
    label: Any | None = None,
    class_names: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
    fractions: Sequence[float] = (0.3, 0.5, 0.7),
    axis: int | None = None,
    channel: int = 0,
    multilabel: bool = False,
    alpha: float = 0.5,
    title: str | None = None,
) -> tuple[Figure, np.ndarray]:
    """Build the overlay figure; returns it with its image axes [rows, columns] (for notebooks and tests)."""
    img = to_numpy(image).astype(np.float32)
    if img.ndim not in (3, 4):
        raise ValueError(f"image must be [C, H, W] or [C, H, W, D], got shape {list(img.shape)}")
    img = img[channel]  # [*S]
    spatial, dims = img.shape, img.ndim
    n_classes = len(class_names) if class_names is not None else None
    pred = _masks(prediction, spatial, multilabel, n_classes)  # [K, *S]
    gt = _masks(label, spatial, multilabel, n_classes) if label is not None else None
    k = max(pred.shape[0], gt.shape[0] if gt is not None else 0, n_classes or 0)
    pad = lambda m: np.concatenate([m, np.zeros((k - m.shape[0], *spatial), bool)])  # noqa: E731
    pred = pad(pred)
    gt = pad(gt) if gt is not None else None
    ref = gt if gt is not None else pred
    order = list(np.argsort([-ref[c].sum() for c in range(k)], kind="stable"))  # big first: nested regions stay visible
    spacing = list(spacing) if spacing is not None else [1.0] * dims

    if dims == 3:
        axis = int(np.argmax(spacing)) if axis is None and len(set(spacing)) > 1 else (2 if axis is None else axis)
        rows = _slice_positions(ref.any(0), axis, fractions)
        in_plane = [a for a in range(3) if a != axis]
        aspect = spacing[in_plane[1]] / spacing[in_plane[0]]  # shown transposed: 2nd in-plane axis vertical
    else:
        rows, in_plane, aspect = [None], [0, 1], spacing[0] / spacing[1]
    lo, hi = window(img)
    columns = ["image"] + (["ground truth"] if gt is not None else []) + ["prediction"]

    names = list(class_names) if class_names is not None else [f"class {c + 1}" for c in range(k)]
    bottom_in = 0.15 + 0.22 * -(-k // 5)  # inches for the legend, 5 classes a row
    top_in = 0.75 if title else 0.4  # inches for the column titles (+ the figure title)
    vertical, horizontal = (in_plane[1], in_plane[0]) if dims == 3 else (0, 1)
    ratio = spatial[vertical] * spacing[vertical] / (spatial[horizontal] * spacing[horizontal])  # panel height / width
    panel_h = 2.8 * float(np.clip(ratio, 0.4, 2.5))
    fig = Figure(figsize=(3.0 * len(columns), (panel_h + 0.2) * len(rows) + bottom_in + top_in))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, pos in enumerate(rows):
        take = (lambda a: a) if pos is None else (lambda a: np.take(a, pos, axis=axis + a.ndim - dims))
        grey = np.clip((take(img) - lo) / (hi - lo), 0, 1)
        panels = [np.repeat(grey[..., None], 3, -1)] + [_paint(grey, take(m), order, alpha) for m in
                                                          ([gt] if gt is not None else []) + [pred]]
        for c, rgb in enumerate(panels):
            ax = axes[r, c]
            if dims == 3:
                ax.imshow(rgb.transpose(1, 0, 2), origin="lower", aspect=aspect, interpolation="nearest")
            else:
                ax.imshow(rgb, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=11)
        if pos is not None:
            axes[r, 0].set_ylabel(f"axis {axis}, slice {pos}", fontsize=9)
    handles = [Patch(color=class_colour(c), label=names[c]) for c in range(k)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.12 / fig.get_figheight(), va="top")
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.98, bottom=bottom_in / height, top=1 - top_in / height,
                        wspace=0.04, hspace=0.06)
    return fig, axes


def plot_segmentation_overlay(image: Any, prediction: Any, path: str | Path, label: Any | None = None,
                              **kwargs: Any) -> Path:
    """Write the overlay PNG (see `segmentation_overlay_figure` for the keyword arguments) and return its path."""
    fig, _ = segmentation_overlay_figure(image, prediction, label=label, **kwargs)
    return save(fig, path)
