"""What segmentation's ``predict`` writes: label maps and probabilities in each input's own geometry.

For each input volume ``<name>.nii.gz``, ``DIR/<name>.nii.gz`` is an integer label map (uint8; 0 =
background, the label values of the training data) on the input's own grid: same voxel grid, shape, affine,
orientation and qform / sform codes as the file given, whatever reorientation, resampling and foreground
cropping the model's preprocessing did. The preprocessing is the evaluation recipe of the run
(:func:`selfmedmae.data.transforms_3d.eval_transforms`); the decision on the model's grid
(:mod:`selfmedmae.inference.decide`) is carried back by MONAI ``Invertd`` with nearest-neighbour resampling
(:func:`~selfmedmae.data.transforms_3d.invert_to_input`), and the file is written with the input's own
header, so the geometry is copied, not recomputed. The data's format writes the label map (BraTS regions
become the MSD label map they came from: :meth:`selfmedmae.data.formats.BratsVolumes.label_map`).

A folder holding a DICOM series is read as the NIfTI image nibabel would give for it
(:mod:`selfmedmae.data.dicom_series`), so its label map is the one of that NIfTI file, to the voxel; with
``--format dicom-seg`` it is written as ``DIR/<folder name>.dcm``, a DICOM SEG referencing the series
(:mod:`selfmedmae.tasks.dicom_seg`), never into the series folder.

``--probabilities`` adds ``DIR/<name>_probabilities.nii.gz``: float32 [X, Y, Z, K] on the same grid (softmax
over the classes with background first, or one sigmoid per region), carried back with trilinear
resampling; voxels outside the foreground crop get background probability 1. The label map is the same with
or without this option (it is not the argmax of the resampled probabilities, which may differ at a few
boundary voxels). ``--figures`` draws image + prediction overlays in ``DIR/figures/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import nibabel as nib
import numpy as np
import torch

from selfmedmae.data.formats import format_of
from selfmedmae.data.inputs import check_volume, output_stems
from selfmedmae.data.suffixes import is_series
from selfmedmae.errors import UserError
from selfmedmae.figures.overlay import plot_segmentation_overlay
from selfmedmae.inference.decide import decide, fill_background, probabilities
from selfmedmae.inference.forward import LoadedRun, segment_logits
from selfmedmae.outputs.atomic import replacing
from selfmedmae.runtime.log import progress_iter


def write_like(reference, data: np.ndarray, dtype, path: Path) -> None:
    """Write data with the reference NIfTI's header: same affine and qform / sform codes, no intensity scaling."""
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header["cal_min"], header["cal_max"] = 0, 0  # the input's display range means nothing for labels
    img = reference.__class__(data.astype(dtype), reference.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = b"selfmedmae predict"
    with replacing(path) as tmp:  # no truncated NIfTI on a full disk; the suffix (.nii.gz) is kept
        img.to_filename(str(tmp))


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
    multilabel = run.labels.multilabel
    try:
        item = transforms({"image": str(path)})
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
        raise UserError(f"{path}: cannot be loaded and preprocessed ({str(exc).splitlines()[0][:300]})") from None
    p = probabilities(segment_logits(run, item["image"]), multilabel)  # [1, K, *S] on the model's grid
    labels = format_of(run.cfg.data).label_map(decide(p, multilabel)[0], run.cfg.data)  # [1, *S], evaluate's rule
    label_map = torch.round(_invert(labels.float(), item, transforms, nearest=True)).to(torch.uint8)  # [1, *S0]
    prob = None
    if with_probs:
        prob = _invert(p[0], item, transforms, nearest=False).float().clamp_(0, 1)  # [K, *S0], trilinear
        if not multilabel:  # outside the crop every channel came back 0: that is background
            prob = fill_background(prob)
    return label_map, prob


def reference_image(path: Path):
    """The NIfTI image whose header the outputs copy: the input file, or for a DICOM series folder the NIfTI
    image nibabel would give for it (its RAS affine as qform and sform, scanner coordinates)."""
    if not is_series(path):
        return nib.load(str(path))
    from selfmedmae.data.dicom_series import read_volume

    array, affine = read_volume(path)
    img = nib.Nifti1Image(array.astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def planned_outputs(files: Sequence[Path], probs: bool, figures: bool,
                    output_format: str = "nifti") -> list[tuple[str, str]]:
    """Every file :func:`predict_volumes` would write, relative to the output folder, and what it is."""
    plan = []
    suffix = ".dcm" if output_format == "dicom-seg" else ".nii.gz"
    for path, stem in zip(files, output_stems(files)):
        plan.append((f"{stem}{suffix}", f"the label map of {path}"))
        if probs:
            plan.append((f"{stem}_probabilities.nii.gz", f"the probability map of {path}"))
        if figures:
            plan.append((f"figures/{stem}.png", f"the overlay of {path}"))
    return plan


def predict_volumes(run: LoadedRun, files: Sequence[Path], out: Path, probs: bool, figures: bool,
                    output_format: str = "nifti") -> None:
    from selfmedmae.data.transforms_3d import eval_transforms

    shapes = [check_volume(f, run.in_chans) for f in files]  # all inputs, before any inference
    stems = output_stems(files)
    transforms = eval_transforms(run.cfg.data, with_label=False)
    for path, stem, shape in progress_iter(list(zip(files, stems, shapes)), len(files), "predict", "volume"):
        label_map, prob = predict_volume(run, transforms, path, probs)
        if tuple(label_map.shape[1:]) != shape:  # cannot happen unless the inversion is broken: never write it
            raise RuntimeError(f"{path}: prediction came back as {list(label_map.shape[1:])}, not {list(shape)}")
        ref = reference_image(path)
        if output_format == "dicom-seg":  # checked by predict: the input is a DICOM series
            from selfmedmae.tasks.dicom_seg import write_dicom_seg

            target = write_dicom_seg(label_map[0].numpy(), path, run.labels.written, out / f"{stem}.dcm")
        else:
            target = out / f"{stem}.nii.gz"
            write_like(ref, label_map[0].numpy(), np.uint8, target)
        present = sorted(int(v) for v in torch.unique(label_map) if v > 0)
        print(f"wrote {target} (shape {list(shape)}, labels present: {present or 'none'})")
        if prob is not None:
            write_like(ref, np.moveaxis(prob.numpy(), 0, -1), np.float32, out / f"{stem}_probabilities.nii.gz")
        if figures:
            image = np.asarray(ref.dataobj, dtype=np.float32)
            image = image[None] if image.ndim == 3 else np.moveaxis(image, -1, 0)  # [C, *S0]
            zooms = [float(z) for z in ref.header.get_zooms()[:3]]
            plot_segmentation_overlay(image, label_map[0].numpy(), out / "figures" / f"{stem}.png",
                                      class_names=run.labels.written, spacing=zooms,
                                      title=f"{path.name}: prediction")
