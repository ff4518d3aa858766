"""Figures people look at: ROC curves per label, MAE reconstructions (the paper's Fig. 2), learning curves.

Segmentation overlays (the paper's Fig. 3) are in `overlay.py` and re-exported here. Every `plot_*`
function writes one PNG to the given path and returns the path. No pyplot: see `plotting`.

Learning-curve records are the lines of a run's `metrics.jsonl`, read with `read_jsonl`. A record contributes
  - a training-loss point when it has a number under "loss" (or "train_loss", "train/loss"), at x = "step";
  - a learning-rate point when it has a number under "lr", at x = "step";
  - a validation point for each number under a key that starts with "val" ("val_dice", "val/mean_auc", ...),
    at x = "epoch" (or "step" when there is no epoch).
A record without "step" takes its position among the records as its step.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from selfmedmae.errors import UserError
from selfmedmae.figures.plotting import MASK_GREY, class_colour, save, to_numpy, window
from selfmedmae.figures.overlay import plot_segmentation_overlay, segmentation_overlay_figure  # noqa: F401
from selfmedmae.metrics.auc import roc_auc, roc_curve

__all__ = ["plot_roc_curves", "plot_mae_reconstruction", "plot_learning_curves", "read_jsonl",
           "plot_segmentation_overlay", "segmentation_overlay_figure"]

_LOSS_KEYS = ("loss", "train_loss", "train/loss")


# ------------------------------------------------------------------------------------------------ ROC curves
def plot_roc_curves(targets: Any, scores: Any, label_names: Sequence[str], path: str | Path,
                    title: str | None = None) -> Path:
    """One ROC curve per label of targets / scores [N, K] on one plot, AUC in the legend."""
    t, s = to_numpy(targets).astype(np.float64), to_numpy(scores).astype(np.float64)
    t, s = (t[:, None], s[:, None]) if t.ndim == 1 else (t, s)
    if t.shape != s.shape or t.shape[1] != len(label_names):
        raise ValueError(f"targets {list(t.shape)}, scores {list(s.shape)} and {len(label_names)} label names disagree")
    fig = Figure(figsize=(8.5, 6.0))
    ax = fig.add_axes((0.08, 0.1, 0.55, 0.8))
    aucs = []
    for k, name in enumerate(label_names):
        auc = roc_auc(t[:, k], s[:, k])
        if math.isnan(auc):  # one target value: no curve, but say so in the legend
            ax.plot([], [], color=class_colour(k), label=f"{name} (AUC n/a: one class)")
            continue
        aucs.append(auc)
        fpr, tpr = roc_curve(t[:, k], s[:, k])
        ax.plot(fpr, tpr, color=class_colour(k), lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", aspect="equal")
    ax.grid(alpha=0.3)
    mean = f"mean AUC {np.mean(aucs):.3f} over {len(aucs)} of {len(label_names)} labels" if aucs else "no defined AUC"
    ax.set_title(f"{title} - {mean}" if title else mean, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.03, 0.5), fontsize=8, frameon=False)
    return save(fig, path)


# ------------------------------------------------------------------------------------------------ MAE grid
def _pixel_mask(mask: Any, spatial: tuple[int, ...], batch: int, patch_size: Sequence[int] | None) -> np.ndarray:
    """Patch mask [B, L] (tokens row-major over the patch grid, last axis fastest) or pixel mask [B, (1,) *S]
    -> bool [B, *S], True where masked."""
    m = to_numpy(mask).astype(np.float32)
    if m.ndim == 2:  # patch-level [B, L]
        n = len(spatial)
        if patch_size is None:
            side = round((np.prod(spatial) / m.shape[1]) ** (1.0 / n))
            patch_size = [side] * n
        grid = [s // p for s, p in zip(spatial, patch_size)]
        if int(np.prod(grid)) != m.shape[1] or any(s % p for s, p in zip(spatial, patch_size)):
            raise ValueError(f"a mask of {m.shape[1]} patches does not tile {list(spatial)} "
                             f"with patches {list(patch_size)}")
        m = m.reshape(batch, *grid)
        for axis, p in enumerate(patch_size):
            m = np.repeat(m, p, axis=axis + 1)
    m = m.reshape(batch, *spatial)  # [B, 1, *S] -> [B, *S]
    return m > 0.5


def plot_mae_reconstruction(
    original: Any, reconstruction: Any, path: str | Path, *, masked: Any | None = None, paste: Any | None = None,
    mask: Any | None = None, patch_size: Sequence[int] | None = None, batched: bool | None = None,
    channel: int = 0, max_samples: int = 4, slice_axes: Sequence[int] | None = None, title: str | None = None,
) -> Path:
    """Rows original / masked / reconstruction / visible + reconstruction; a column per sample (and, for 3D, per
    middle slice along each of `slice_axes`, default all three). Arrays are [C, *S] or [B, C, *S]; `mask` is
    MAE's patch mask [B, L] (1 = masked) or a pixel mask. Masked pixels show grey; the paste is computed from
    `mask` when not given. The keys of `MAE.visualize()` match the keyword names. `batched` says whether the
    arrays carry a batch axis; without it a 4-axis array ([B, C, H, W] or [C, H, W, D]) is read from `mask` or
    `patch_size`, or refused as ambiguous."""
    orig = to_numpy(original).astype(np.float32)
    if batched is None:  # [C,H,W]: one image; [B,C,H,W,D]: a batch of volumes; [4 axes]: ask for a hint
        batched = {3: False, 5: True}.get(orig.ndim)
        if batched is None and mask is not None and to_numpy(mask).ndim == 2:
            batched = True  # a patch mask [B, L] says the arrays are batched
        elif batched is None and patch_size is not None:
            batched = orig.ndim == len(patch_size) + 2
        if batched is None:
            raise ValueError(f"original of shape {list(orig.shape)} is ambiguous: pass batched=True or False")

    def prep(x: Any) -> np.ndarray:
        a = to_numpy(x).astype(np.float32)
        a = a if batched else a[None]
        if a.shape != (orig.shape if batched else orig[None].shape):
            raise ValueError(f"array of shape {list(to_numpy(x).shape)} does not match the original {list(orig.shape)}")
        return a[:max_samples, channel]  # [B, *S]

    rows: dict[str, np.ndarray] = {"original": prep(orig)}
    spatial = rows["original"].shape[1:]
    pix = None
    if mask is not None:
        m = to_numpy(mask)
        n_batch = orig.shape[0] if batched else 1
        pix = _pixel_mask(m if batched else m[None], spatial, n_batch, patch_size)[:max_samples]  # [B, *S]
    if pix is not None:
        rows["masked"] = np.where(pix, np.nan, rows["original"])
    elif masked is not None:
        rows["masked"] = prep(masked)
    rows["reconstruction"] = prep(reconstruction)
    if paste is not None:
        rows["visible + reconstruction"] = prep(paste)
    elif pix is not None:
        rows["visible + reconstruction"] = np.where(pix, rows["reconstruction"], rows["original"])

    axes = list(slice_axes) if slice_axes is not None else list(range(len(spatial)))
    views = axes if len(spatial) == 3 else [None]  # a volume: its middle slice along each axis
    columns = [(b, a) for b in range(rows["original"].shape[0]) for a in views]
    fig = Figure(figsize=(2.2 * len(columns) + 0.6, 2.2 * len(rows) + (0.65 if title else 0.35)))
    grid = fig.subplots(len(rows), len(columns), squeeze=False)
    cmap = colormaps["gray"].with_extremes(bad=MASK_GREY)
    for c, (b, a) in enumerate(columns):
        lo, hi = window(rows["original"][b])  # one window per column: rows comparable
        for r, (name, arr) in enumerate(rows.items()):
            ax = grid[r, c]
            img = arr[b]
            if a is None:
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            else:  # middle slice, NIfTI-style display as in overlay
                ax.imshow(np.take(img, img.shape[a] // 2, axis=a).T, cmap=cmap, vmin=lo, vmax=hi, origin="lower",
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(f"sample {b}" + ("" if a is None else f", axis {a} mid"), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, bottom=0.02,
                        top=1 - (0.65 if title else 0.35) / fig.get_figheight(), wspace=0.05, hspace=0.05)
    return save(fig, path)


# ------------------------------------------------------------------------------------------------ learning curves
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (blank lines skipped); a broken line is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such metrics file")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}: line {number} is not JSON ({err.msg})") from None
    return records


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _series(records: Sequence[Mapping[str, Any]], key: str | tuple[str, ...], x_key: str) -> tuple[list, list]:
    keys = (key,) if isinstance(key, str) else key
    xs, ys = [], []
    for i, rec in enumerate(records):
        if rec.get("kind", "train") not in ("train", "val"):
            continue  # per-epoch means and end-of-run records would zig-zag through the step curves
        y = next((rec[k] for k in keys if _is_number(rec.get(k))), None)
        if y is not None:
            x = rec.get(x_key, rec.get("step", i))
            xs.append(x)
            ys.append(float(y))
    return xs, ys


def plot_learning_curves(runs: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | Path, val_keys: Sequence[str] | None = None, title: str | None = None) -> Path:
    """Training loss and lr against step, validation metrics against epoch, for one run (a list of records) or
    several ({run name: records}); a run has one colour in every panel. Empty panels are left out."""
    runs = dict(runs) if isinstance(runs, Mapping) else {"run": list(runs)}
    if val_keys is None:
        val_keys = sorted({k for recs in runs.values() for r in recs for k, v in r.items()
                           if k.startswith("val") and "/" not in k and _is_number(v)})  # not per-label
    panels = [("training loss", "step", _LOSS_KEYS), ("learning rate", "step", ("lr",))]
    panels += [("validation", "epoch", tuple(val_keys))] if val_keys else []
    data = [[(name, key, *_series(recs, key, x_key)) for name, recs in runs.items()
             for key in ((keys,) if p_title != "validation" else keys)] for p_title, x_key, keys in panels]
    keep = [i for i, series in enumerate(data) if any(s[2] for s in series)]
    if not keep:
        raise ValueError("no loss, lr or validation values in the records")
    colours = {name: colormaps["tab10"](i % 10) for i, name in enumerate(runs)}
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(4.6 * len(keep), 3.8))
    axes = fig.subplots(1, len(keep), squeeze=False)[0]
    for ax, i in zip(axes, keep):
        p_title, x_key, keys = panels[i]
        for name, key, xs, ys in data[i]:
            if not xs:
                continue
            style = styles[list(keys).index(key) % len(styles)] if p_title == "validation" else "-"
            label = name if p_title != "validation" else (f"{name}: {key}" if len(runs) > 1 else key)
            ax.plot(xs, ys, style, color=colours[name], lw=1.4, marker="o" if len(xs) < 30 else None, ms=3, label=label)
        ax.set(title=p_title, xlabel=x_key if p_title != "validation" else "epoch")
        ax.grid(alpha=0.3)
        if p_title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if len(runs) > 1 or p_title == "validation":
            ax.legend(fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.84 if title else 0.9, wspace=0.28)
    return save(fig, path)
