"""BraTS (MSD Task01_BrainTumour) evaluation regions TC / WT / ET built from the MSD label map.

MSD's ``dataset.json`` defines 1 = edema, 2 = non-enhancing tumour, 3 = enhancing tumour, so the standard
BraTS regions are TC = {2, 3}, WT = {1, 2, 3}, ET = {3} (nnU-Net's conversion agrees). The official
SelfMedMAE code (after the MONAI tutorial) uses ET = {2}; ``data.brats_et_label=2`` reproduces that,
TC and WT are the same under both readings. MONAI's built-in ``ConvertToMultiChannelBasedOnBratsClassesd``
puts label 1 (edema) into TC for any ``et_label``, so it is not used (docs/own-data-3d.md §5).

Output channel order TC, WT, ET, as the official ``idx2label_all['msd_brats']``.
"""
from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

REGIONS = ("TC", "WT", "ET")
MSD_LABELS = ("background", "edema", "non-enhancing tumour", "enhancing tumour")
TUMOUR_CORE = (2, 3)
WHOLE_TUMOUR = (1, 2, 3)
BRATS_HD_PENALTY_MM = 373.13  # diagonal of 240 x 240 x 155 at 1 mm, the BraTS value for a missing structure


def region_labels(et_label: int = 3) -> tuple:
    """The label values of each region, in channel order: ``((2, 3), (1, 2, 3), (et_label,))``."""
    if et_label not in (2, 3):
        raise ValueError(f"data.brats_et_label: {et_label} is neither 3 (MSD's enhancing tumour) nor 2 "
                         "(the official code's choice)")
    return TUMOUR_CORE, WHOLE_TUMOUR, (et_label,)


def brats_regions(label, et_label: int = 3):
    """A label map ``[1, *S]`` (or ``[*S]``) -> region masks ``[3, *S]`` float32 (TC, WT, ET).

    Works on numpy arrays and tensors (MetaTensor meta is kept); values are compared after rounding,
    so a float label map from the loader is fine.
    """
    if label.ndim >= 4 and label.shape[0] == 1:
        label = label[0]
    if isinstance(label, torch.Tensor):
        lab = torch.round(label).to(torch.int64)
        chans = [sum(lab == v for v in values) > 0 for values in region_labels(et_label)]
        return torch.stack(chans).to(torch.float32)
    lab = np.rint(np.asarray(label)).astype(np.int64)
    return np.stack([np.isin(lab, values) for values in region_labels(et_label)]).astype(np.float32)


class BratsRegionsd(MapTransform):
    """Dictionary transform: replace the MSD label map under ``keys`` by the TC / WT / ET channels."""

    def __init__(self, keys: KeysCollection, et_label: int = 3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        region_labels(et_label)  # validate early
        self.et_label = et_label

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = brats_regions(d[key], self.et_label)
        return d


def regions_to_labels(regions: torch.Tensor, et_label: int = 3) -> torch.Tensor:
    """The inverse of :func:`brats_regions`: regions [3, *S] (TC, WT, ET; bool) -> the MSD label map
    [1, *S] uint8: WT 1 (edema), TC without ET the tumour-core label that is not ET, ET ``et_label``."""
    tc, wt, et = regions.bool()
    labels = torch.zeros(regions.shape[1:], dtype=torch.uint8)
    labels[wt] = 1
    labels[tc] = 5 - et_label  # the tumour-core label that is not ET: 2 (MSD) or 3 (official reading)
    labels[et] = et_label
    return labels[None]
