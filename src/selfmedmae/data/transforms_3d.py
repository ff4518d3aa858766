"""MONAI dictionary transforms for 3D volumes: the paper's BTCV and BraTS recipes, and their inverse.

Follows the official SelfMedMAE ``lib/data/med_transforms.py`` (docs/official-code.md §3):

* deterministic prefix (cached once per volume by ``CacheDataset`` / ``PersistentDataset``, which cache
  up to the first random transform): load (3D or 4D NIfTI -> channel first), orientation (RAS),
  spacing (BTCV 1.5 x 1.5 x 2.0 mm, bilinear image / nearest label), intensity, foreground crop
  (``image > 0``), padding up to the crop size, label to uint8, and (training) the candidate crop centres;
* random suffix: ``RandCropByPosNegLabeld`` (``num_samples`` crops per volume, pos 1 / neg 1; the crops
  are copied out of the cache at once, :class:`Detachd`), flips
  (p 0.2 per axis); fine-tuning adds ``RandRotate90d`` (p 0.2) and intensity scale / shift (0.1, p 0.1).
  Pre-training has neither, as in the official ``get_mae_pretrain_transforms``. ``data.augment: nnunet``
  replaces fine-tuning's suffix by nnU-Net's augmentations (:mod:`selfmedmae.data.nnunet_3d`).

Intensity modes (``data.intensity``): ``ct`` window [a_min, a_max] HU -> [0, 1], clipped; ``nonzero``
per-channel z-score over non-zero voxels (BraTS), which the official code applies *after* the random
crop in training (per-crop statistics) and to the whole cropped volume in evaluation, reproduced here;
``percentile`` clip each volume to its ``data.percentiles`` (0.5 / 99.5) then scale to [0, 1] (MRI with
arbitrary scale, e.g. the hippocampus); ``none``.

Training batches are plain tensors: ``image`` [C, *roi] float32, ``label`` [1, *roi] int64 class map
(segmentation) or [3, *roi] float32 TC / WT / ET (``format: brats``); pre-training drops the label.
Evaluation items keep MetaTensor meta (affine, applied operations) so :func:`invert_to_input` can map a
prediction back onto the input file's grid with MONAI ``Invertd``.
"""
from __future__ import annotations

import logging
import warnings
from typing import List, Sequence

import torch
from monai.data import MetaTensor, get_track_meta, set_track_meta
from monai.transforms import (
    Compose, CropForegroundd, DeleteItemsd, EnsureTyped, FgBgToIndicesd, Invertd, LoadImaged, MapTransform,
    NormalizeIntensityd, Orientationd, RandCropByPosNegLabeld, RandFlipd, RandRotate90d, RandScaleIntensityd,
    RandShiftIntensityd, RandSpatialCropSamplesd, Randomizable, ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd, SpatialPadd, Transform,
)

from selfmedmae.data.brats import BratsRegionsd
from selfmedmae.data.fast_crops import LabelGuidedCropsFlips, seed_transform
from selfmedmae.data.nifti_reader import TorchCopyNibabelReader
from selfmedmae.data.resample import SeparableSpacingd
from selfmedmae.data.settings import AUGMENTS

MODES = ("pretrain", "finetune")
INTENSITY_MODES = ("ct", "nonzero", "percentile", "none")
INDEX_KEYS = ("label_fg_indices", "label_bg_indices")  # FgBgToIndicesd's output keys for "label"
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # axis codes as nibabel reads them (NIfTI world = RAS+)


class Detachd(MapTransform):
    """Replace each tensor by a plain, contiguous copy (meta dropped; training crops need none).

    Lets the training cache hand out its volumes without a deep copy per access (``copy_cache=False``):
    the crops are views into the cached volume, and some later steps (non-zero normalisation) write in
    place.
    """

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(d[key]).as_subclass(torch.Tensor).clone(memory_format=torch.contiguous_format)
        return d


class PlainTensorSteps(Randomizable, Transform):
    """Runs the random training steps on plain tensors, without MONAI's metadata tracking.

    Training crops need no affine or transform history (they are never inverted), and tracking them costs
    ~4x the crops' own work: ~200 crops/s with tracking against ~800 without on one core (32^3 crops of
    the hippocampus sample). Random by nature, so the caching datasets stop caching before it; its one seed
    is handed to the inner steps (:meth:`set_random_state`).
    """

    def __init__(self, transforms: Sequence) -> None:
        self.inner = Compose(list(transforms))

    def set_random_state(self, seed=None, state=None):
        self.inner.set_random_state(seed=seed, state=state)
        return self

    def reseed(self, seed: int) -> "PlainTensorSteps":
        """``set_random_state(seed=seed)``, re-using the inner steps' generators where they allow it."""
        seed_transform(self.inner, seed)
        return self

    def randomize(self, data) -> None:  # the inner steps draw their own numbers
        pass

    def __call__(self, data):
        previous = get_track_meta()
        set_track_meta(False)
        try:
            plain = {k: v.as_tensor() if isinstance(v, MetaTensor) else v for k, v in dict(data).items()}
            return self.inner(plain)
        finally:
            set_track_meta(previous)


def intensity_transforms(cfg) -> list:
    """The intensity step of ``cfg.intensity`` on ``image`` (a DataConfig)."""
    if cfg.intensity == "ct":
        return [ScaleIntensityRanged("image", a_min=cfg.a_min, a_max=cfg.a_max, b_min=0.0, b_max=1.0, clip=True)]
    if cfg.intensity == "nonzero":
        return [NormalizeIntensityd("image", nonzero=True, channel_wise=True)]
    if cfg.intensity == "percentile":
        lower, upper = cfg.percentiles
        return [ScaleIntensityRangePercentilesd("image", lower=lower, upper=upper, b_min=0.0, b_max=1.0,
                                                clip=True, channel_wise=True)]
    if cfg.intensity == "none":
        return []
    raise ValueError(f"data.intensity: {cfg.intensity!r} is not one of {', '.join(INTENSITY_MODES)}")


def _late_intensity(cfg) -> bool:
    # Non-zero z-scoring comes after the crops (as the official code); the foreground crop and the
    # crop sampler's "image > 0" background test need the raw, non-negative intensities.
    return cfg.intensity == "nonzero"


def volume_readers() -> list:
    """NIfTI files, and folders holding a DICOM series (:mod:`selfmedmae.data.dicom`; it takes only such folders,
    found without pydicom, and reading them needs the ``dicom`` extra)."""
    from selfmedmae.data.dicom import DicomSeriesReader

    return [TorchCopyNibabelReader(), DicomSeriesReader()]


def _load(keys: Sequence[str]) -> LoadImaged:
    """LoadImaged with our readers. MONAI also builds its own readers as fallbacks; with pydicom installed its
    nvImageCodec DICOM reader warns, on every machine without that GPU codec, that it falls back to pydicom.
    That reader never decodes anything for us, so its warning is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
        level = plugin_log.level
        plugin_log.setLevel(logging.ERROR)
        try:
            return LoadImaged(keys, reader=volume_readers(), image_only=True, ensure_channel_first=True)
        finally:
            plugin_log.setLevel(level)


def deterministic_prefix(cfg, keys: Sequence[str] = ("image", "label"), pad: bool = True,
                         crop_indices: bool = False) -> List:
    """Load -> orient -> resample -> intensity -> foreground crop -> pad to roi -> label uint8.

    ``crop_indices``: also cache the candidate crop centres (foreground: label > 0, background:
    label == 0 and image > 0) as int32 voxel indices, so each random crop is drawn in ~0.03 s instead of
    scanning the whole volume again (~0.25 s for a BTCV volume), at ~4 bytes per candidate voxel.
    """
    keys = list(keys)
    # MONAI's loading and resampling, with faster copies and axis-by-axis interpolation (same values)
    t: List = [_load(keys)]
    if cfg.orientation:
        t.append(Orientationd(keys, axcodes=cfg.orientation, labels=RAS_LABELS))
    if cfg.spacing:
        # float32 resampling: half the time of MONAI's float64 default on a 512 x 512 x 150 CT (6 s vs 13 s)
        t.append(SeparableSpacingd(keys, pixdim=list(cfg.spacing), mode=["bilinear", "nearest"][: len(keys)],
                                   dtype=torch.float32))
    if not _late_intensity(cfg):
        t += intensity_transforms(cfg)
    if cfg.crop_foreground:
        t.append(CropForegroundd(keys, source_key="image", allow_smaller=True, start_coord_key=None,
                                 end_coord_key=None))
    if pad:  # volumes smaller than the crop are padded with 0 (check-data warns about them)
        t.append(SpatialPadd(keys, spatial_size=list(cfg.roi_size)))
    if "label" in keys:  # 1 byte per voxel in the cache; values are checked up front by check-data
        t.append(EnsureTyped("label", dtype=torch.uint8))
    if crop_indices and "label" in keys:
        t += [FgBgToIndicesd("label", image_key="image", image_threshold=0.0),
              EnsureTyped(list(INDEX_KEYS), dtype=torch.int32, track_meta=False)]
    return t


def random_suffix(cfg, mode: str = "finetune", labelled: bool = True) -> List:
    """Crops and augmentations; ``mode`` is ``pretrain`` (crops + flips) or ``finetune`` (all of them, or
    nnU-Net's with ``cfg.augment == "nnunet"``)."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if cfg.augment not in AUGMENTS:
        raise ValueError(f"data.augment: {cfg.augment!r} is not one of {', '.join(AUGMENTS)}")
    if mode == "finetune" and cfg.augment == "nnunet":
        return nnunet_suffix(cfg, labelled)
    keys = ["image", "label"] if labelled else ["image"]
    roi = list(cfg.roi_size)
    if labelled:  # crop centres: foreground (label > 0) or background inside the body (image > 0), 1:1
        t: List = [RandCropByPosNegLabeld(keys, label_key="label", spatial_size=roi, pos=cfg.pos_neg[0],
                                          neg=cfg.pos_neg[1], num_samples=cfg.num_samples, image_key="image",
                                          image_threshold=0.0, fg_indices_key=INDEX_KEYS[0],
                                          bg_indices_key=INDEX_KEYS[1])]
    else:
        t = [RandSpatialCropSamplesd(keys, roi_size=roi, num_samples=cfg.num_samples, random_size=False)]
    t.append(Detachd(keys))  # crops are views of the cached volume: own them before anything else runs
    if cfg.format == "brats" and labelled and mode == "finetune":
        t.append(BratsRegionsd("label", et_label=cfg.brats_et_label))
    t += [RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(3)]
    if mode == "finetune":
        t.append(RandRotate90d(keys, prob=cfg.rot90_prob, max_k=3))
    if _late_intensity(cfg):
        t += intensity_transforms(cfg)
    if mode == "finetune":
        t += [RandScaleIntensityd("image", factors=0.1, prob=cfg.intensity_prob),
              RandShiftIntensityd("image", offsets=0.1, prob=cfg.intensity_prob)]
    if mode == "pretrain" and labelled:
        t.append(DeleteItemsd("label"))  # pre-training sees images only (labels only guided the crops)
        keys = ["image"]
    return t + _typed(cfg, keys)


def nnunet_suffix(cfg, labelled: bool = True) -> List:
    """Fine-tuning's random steps with nnU-Net's augmentations: label-guided crops rotated and scaled, the
    late intensity step, nnU-Net's intensity augmentations, mirroring (:mod:`selfmedmae.data.nnunet_3d`)."""
    if not labelled:
        raise ValueError("data.augment: nnunet crops around labels; it needs labelled volumes")
    from selfmedmae.data.nnunet_3d import nnunet_crops, nnunet_intensity, nnunet_mirrors  # only this recipe
    keys = ["image", "label"]
    t: List = [nnunet_crops(cfg, keys, INDEX_KEYS)]  # copies out of the cached volume: no Detachd needed
    if cfg.format == "brats":
        t.append(BratsRegionsd("label", et_label=cfg.brats_et_label))
    if _late_intensity(cfg):
        t += intensity_transforms(cfg)
    return t + nnunet_intensity("image") + nnunet_mirrors(keys) + _typed(cfg, keys)


def _typed(cfg, keys: Sequence[str]) -> List:
    # the batch's types: image float32, label int64 class map (float32 regions for brats)
    t: List = [EnsureTyped("image", dtype=torch.float32, track_meta=False)]
    if "label" in keys:
        label_dtype = torch.float32 if cfg.format == "brats" else torch.int64
        t.append(EnsureTyped("label", dtype=label_dtype, track_meta=False))
    return t


def train_transforms(cfg, mode: str = "finetune", labelled: bool = True) -> Compose:
    """Prefix + suffix in one ``Compose``; MONAI's caching datasets cache up to the first random step.
    Pre-training on labelled volumes takes :class:`~selfmedmae.data.fast_crops.LabelGuidedCropsFlips`, the
    same crops as its MONAI suffix at a fraction of the cost, unless its intensity step comes after the crops."""
    keys = ("image", "label") if labelled else ("image",)
    if mode == "pretrain" and labelled and not _late_intensity(cfg):
        suffix = LabelGuidedCropsFlips(cfg.roi_size, cfg.num_samples, cfg.pos_neg[0], cfg.pos_neg[1],
                                       cfg.flip_prob, INDEX_KEYS)
    else:
        suffix = PlainTensorSteps(random_suffix(cfg, mode, labelled))
    return Compose(deterministic_prefix(cfg, keys, crop_indices=labelled) + [suffix])


def eval_transforms(cfg, with_label: bool = True) -> Compose:
    """Whole volumes for sliding-window inference; invertible (MetaTensor meta is kept).

    ``image`` [C, *S] float32, ``label`` [1, *S] int64 or [3, *S] float32 (brats). No padding: the
    sliding window pads by itself, and the inverse stays that of the geometry steps only.
    """
    keys = ("image", "label") if with_label else ("image",)
    t = deterministic_prefix(cfg, keys, pad=False)
    if _late_intensity(cfg):
        t += intensity_transforms(cfg)
    t.append(EnsureTyped("image", dtype=torch.float32))
    if with_label:
        if cfg.format == "brats":
            t.append(BratsRegionsd("label", et_label=cfg.brats_et_label))
        else:
            t.append(EnsureTyped("label", dtype=torch.int64))
    return Compose(t)


def invert_to_input(pred: torch.Tensor, data_item: dict, transforms: Compose, nearest: bool = True):
    """Map ``pred`` from the evaluation grid back onto the input file's grid.

    Args:
        pred: [C, *S] or [1, C, *S], on the grid of ``data_item["image"]`` (e.g. a sliding-window
            output or its argmax [1, *S]).
        data_item: one (decollated) item of the evaluation dataset; its ``image`` MetaTensor carries the
            applied operations. For a DataLoader batch use ``monai.data.decollate_batch(batch)[i]``.
        transforms: the ``eval_transforms(cfg)`` that produced it.
        nearest: resample with nearest neighbour (class maps); False keeps the forward modes (probabilities).

    Returns:
        A MetaTensor [C, *S0] with S0 the file's voxel grid and ``.affine`` the file's affine
        (e.g. ``nibabel.Nifti1Image(out[0].numpy().astype("uint8"), out.affine.numpy())``).
    """
    if pred.ndim == data_item["image"].ndim + 1:
        pred = pred[0]
    inverter = Invertd("pred", transform=transforms, orig_keys="image", nearest_interp=nearest)
    return inverter({"pred": pred.detach().cpu(), "image": data_item["image"]})["pred"]
