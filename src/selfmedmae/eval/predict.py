"""``selfmedmae predict CHECKPOINT INPUT... --out DIR [--probabilities] [--figures]``: a fine-tuned model on new data.

Segmentation (UNETR): for each input volume ``<name>.nii.gz``, ``DIR/<name>.nii.gz`` is an integer label map
(uint8; 0 = background, the label values of the training data) in the input's own geometry: same voxel grid,
shape, affine, orientation and qform / sform codes as the file given, whatever reorientation, resampling and
foreground cropping the model's preprocessing did. The preprocessing is the evaluation recipe of the run
(:func:`selfmedmae.data.transforms_3d.eval_transforms`); the argmax on the model's grid is carried back by
MONAI ``Invertd`` with nearest-neighbour resampling (:func:`~selfmedmae.data.transforms_3d.invert_to_input`),
and the file is written with the input's own header, so the geometry is copied, not recomputed. BraTS region
outputs (TC / WT / ET, sigmoid > 0.5) are written back as the MSD label map they came from: WT -> 1 (edema),
TC -> the tumour-core label that is not ET, ET -> ``data.brats_et_label``.

``--probabilities`` adds ``DIR/<name>_probabilities.nii.gz``: float32 [X, Y, Z, K] on the same grid (softmax
over the classes with background first, or one sigmoid per region), carried back with trilinear
resampling; voxels outside the foreground crop get background probability 1. The label map is the same with
or without this option (it is not the argmax of the resampled probabilities, which may differ at a few
boundary voxels). ``--figures`` draws image + prediction overlays in ``DIR/figures/``.

Classification (ViT): ``DIR/predictions.csv``, one row per image (its path as given) and one column per label
with the sigmoid probability. Images get the evaluation preprocessing (8-bit grey, histogram equalisation,
resize, centre crop, normalisation; :mod:`selfmedmae.data.transforms_2d`).

``key=value`` items among the inputs override the run config (e.g. ``run.device=cpu``, ``eval.overlap=0.25``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader

from selfmedmae.config.overrides import separate
from selfmedmae.data.brats import MSD_LABELS
from selfmedmae.data.facade import build
from selfmedmae.data.transforms_2d import crop_transform, preprocess
from selfmedmae.errors import UserError
from selfmedmae.inference.decide import decide, fill_background, probabilities
from selfmedmae.inference.forward import LoadedRun, classify, load_run, segment_logits
from selfmedmae.data.inputs import check_image, check_volume, collect, output_stems
from selfmedmae.figures.overlay import plot_segmentation_overlay
from selfmedmae.metrics.table import write_scores_csv
from selfmedmae.outputs import prepare
from selfmedmae.runtime.log import progress_iter

BATCH_2D = 32
def run(checkpoint: str | os.PathLike, inputs: Sequence[str], out: str | os.PathLike, probs: bool = False,
        figures: bool = False, overrides: Sequence[str] = (), overwrite: bool = False) -> int:
    """Predict every input; returns 0. Bad inputs and a bad ``out`` raise UserError before any inference."""
    inputs, more = separate(inputs)
    loaded = load_run(checkpoint, list(overrides) + more)
    files = collect(inputs, volumes=loaded.task == "segmentation")
    # never where an input lives (outputs take the input names), never over earlier results unasked
    target = prepare(out, [*inputs, *files, checkpoint], overwrite)
    out = target.path
    try:
        if loaded.task == "segmentation":
            predict_volumes(loaded, files, out, probs, figures)
        else:
            if probs or figures:
                print("note: --probabilities / --figures apply to segmentation; the CSV holds the probabilities")
            predict_images(loaded, files, out)
    finally:
        target.finish()
    return 0


# ------------------------------------------------------------------------------------------------ 3D
def class_names_3d(cfg, n_out: int) -> list[str]:
    """Names of the written label values 1..: MSD labels for BraTS, else the data's names when readable."""
    if cfg.data.format == "brats":
        return list(MSD_LABELS[1:])
    if cfg.data.labels:
        return list(cfg.data.labels)[1:]
    try:  # the training data may not be on this machine: then generic names
        names = build(cfg.data).labels.names
        if len(names) == n_out:
            return names[1:]
    except UserError:
        pass
    return [f"class {i}" for i in range(1, n_out)]


def regions_to_labels(regions: torch.Tensor, et_label: int) -> torch.Tensor:
    """BraTS regions [3, *S] (TC, WT, ET; bool) -> MSD label map [1, *S]: WT 1, TC \\ ET the other core label, ET."""
    tc, wt, et = regions.bool()
    labels = torch.zeros(regions.shape[1:], dtype=torch.uint8)
    labels[wt] = 1
    labels[tc] = 5 - et_label  # the tumour-core label that is not ET: 2 (MSD) or 3 (official reading)
    labels[et] = et_label
    return labels[None]


def _write_like(reference, data: np.ndarray, dtype, path: Path) -> None:
    """Write data with the reference NIfTI's header: same affine and qform / sform codes, no intensity scaling."""
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header["cal_min"], header["cal_max"] = 0, 0  # the input's display range means nothing for labels
    img = reference.__class__(data.astype(dtype), reference.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = b"selfmedmae predict"
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(str(path))


def _invert(pred: torch.Tensor, item: dict, transforms, nearest: bool) -> torch.Tensor:
    """pred [K, *S] on the model's grid -> plain tensor [K, *S0] on the input file's grid."""
    from monai.data import MetaTensor

    from selfmedmae.data.transforms_3d import invert_to_input

    # Invertd silently returns a plain tensor unchanged (with a warning only): it must be a MetaTensor, which
    # then takes the image's record of applied operations.
    back = invert_to_input(MetaTensor(pred), item, transforms, nearest=nearest)
    if not isinstance(back, MetaTensor) and item["image"].applied_operations:
        raise RuntimeError("the prediction was not carried back to the input grid")
    return back.as_tensor() if isinstance(back, MetaTensor) else back


def predict_volume(run: LoadedRun, transforms, path: Path,
                   with_probs: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(label map [1, *S0] uint8, probabilities [K, *S0] float32 or None) of one file, on the file's grid."""
    cfg = run.cfg
    multilabel = cfg.data.format == "brats"
    try:
        item = transforms({"image": str(path)})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
        raise UserError(f"{path}: cannot be loaded and preprocessed ({str(exc).splitlines()[0][:300]})") from None
    p = probabilities(segment_logits(run, item["image"]), multilabel)  # [1, K, *S] on the model's grid
    decided = decide(p, multilabel)[0]  # the rule evaluate's Dice uses
    if multilabel:
        labels = regions_to_labels(decided, int(cfg.data.brats_et_label))
    else:
        labels = decided[None].to(torch.uint8)  # [1, *S]
    label_map = torch.round(_invert(labels.float(), item, transforms, nearest=True)).to(torch.uint8)  # [1, *S0]
    prob = None
    if with_probs:
        prob = _invert(p[0], item, transforms, nearest=False).float().clamp_(0, 1)  # [K, *S0], trilinear
        if not multilabel:  # outside the crop every channel came back 0: that is background
            prob = fill_background(prob)
    return label_map, prob


def predict_volumes(run: LoadedRun, files: Sequence[Path], out: Path, probs: bool, figures: bool) -> None:
    from selfmedmae.data.transforms_3d import eval_transforms

    shapes = [check_volume(f, run.in_chans) for f in files]  # all inputs, before any inference
    stems = output_stems(files)
    names = class_names_3d(run.cfg, run.num_classes)
    transforms = eval_transforms(run.cfg.data, with_label=False)
    for path, stem, shape in progress_iter(list(zip(files, stems, shapes)), len(files), "predict", "volume"):
        label_map, prob = predict_volume(run, transforms, path, probs)
        if tuple(label_map.shape[1:]) != shape:  # cannot happen unless the inversion is broken: never write it
            raise RuntimeError(f"{path}: prediction came back as {list(label_map.shape[1:])}, not {list(shape)}")
        ref = nib.load(str(path))
        target = out / f"{stem}.nii.gz"
        _write_like(ref, label_map[0].numpy(), np.uint8, target)
        present = sorted(int(v) for v in torch.unique(label_map) if v > 0)
        print(f"wrote {target} (shape {list(shape)}, labels present: {present or 'none'})")
        if prob is not None:
            _write_like(ref, np.moveaxis(prob.numpy(), 0, -1), np.float32, out / f"{stem}_probabilities.nii.gz")
        if figures:
            image = np.asarray(ref.dataobj, dtype=np.float32)
            image = image[None] if image.ndim == 3 else np.moveaxis(image, -1, 0)  # [C, *S0]
            zooms = [float(z) for z in ref.header.get_zooms()[:3]]
            plot_segmentation_overlay(image, label_map[0].numpy(), out / "figures" / f"{stem}.png",
                                      class_names=names, spacing=zooms, title=f"{path.name}: prediction")


# ------------------------------------------------------------------------------------------------ 2D
class _Images(torch.utils.data.Dataset):
    """Image files with the evaluation preprocessing: {"image": [C, crop, crop], "id": path as given}."""

    def __init__(self, files: Sequence[Path], data_cfg):
        self.files, self.size, self.hist_eq = list(files), int(data_cfg.image_size), bool(data_cfg.hist_eq)
        self.transform = crop_transform(data_cfg, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        try:
            grey = preprocess(self.files[i], self.size, self.hist_eq)  # uint8 [size, size]
        except OSError as exc:
            raise UserError(f"{self.files[i]}: unreadable image ({exc})".splitlines()[0]) from None
        return {"image": self.transform(grey), "id": str(self.files[i])}


def label_names_2d(cfg, n_out: int) -> list[str]:
    """The classifier's output names: the config's, CXR14's, the CSV's when readable, else generic."""
    names = list(cfg.data.class_columns or cfg.data.labels or [])
    if not names:
        try:
            names = build(cfg.data).labels.names
        except UserError:
            names = []
    return names if len(names) == n_out else [f"class_{k}" for k in range(n_out)]


def predict_images(run: LoadedRun, files: Sequence[Path], out: Path) -> None:
    for f in files:  # every image, before any inference
        check_image(f)
    names = label_names_2d(run.cfg, run.num_classes)
    loader = DataLoader(_Images(files, run.cfg.data), batch_size=BATCH_2D, shuffle=False,
                        num_workers=int(run.cfg.data.num_workers))
    ids, scores, _ = classify(run, loader)
    path = write_scores_csv(out / "predictions.csv", ids, scores.numpy(), names)
    print(f"wrote {path} ({len(ids)} images x {len(names)} labels)")
