"""MONAI reader of DICOM series folders, beside the NIfTI reader of :mod:`selfmedmae.data.nifti_reader`.

:class:`DicomSeriesReader` takes a folder holding one series (:mod:`selfmedmae.data.dicom_series` scans,
checks and reads it) and hands ``LoadImage`` what MONAI's ``NibabelReader`` hands it for the equivalent
NIfTI file: a C-ordered float32 array in nibabel's axis order and a meta dict with ``affine`` /
``original_affine`` (RAS+), ``spatial_shape``, ``space`` and ``filename_or_obj``, so the orientation,
resampling and intensity steps after it, and ``Invertd`` at the end of ``predict``, work unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple
from monai.utils.enums import MetaKeys, SpaceKeys

from selfmedmae.data.dicom_series import find_problems, holds_dicom, read_volume, scan_series  # noqa: F401
from selfmedmae.data.nifti_reader import as_c_float32


@dataclass
class DicomVolume:
    """One series read: array [columns, rows, slices] and its RAS affine."""

    folder: str
    array: np.ndarray
    affine: np.ndarray


class DicomSeriesReader(ImageReader):
    """A folder holding one DICOM series, read as a 3D volume (see the module docstring)."""

    def verify_suffix(self, filename: Sequence[str] | str) -> bool:
        """True for a folder (or folders) holding DICOM files; DICOM series have no file suffix."""
        names = ensure_tuple(filename)
        return bool(names) and all(holds_dicom(n) for n in names)

    def read(self, data: Sequence[str] | str, **kwargs):
        names = ensure_tuple(data)
        self.filenames = names
        volumes = []
        for name in names:
            if not holds_dicom(name):  # LoadImage tries this reader on NIfTI files too: refuse them at once
                raise ValueError(f"{name}: not a folder holding a DICOM series")
            volumes.append(DicomVolume(str(name), *read_volume(name)))
        return volumes if len(names) > 1 else volumes[0]

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """(array, meta); several series are stacked as channels, the first one's meta kept."""
        volumes = list(ensure_tuple(img))
        arrays = [as_c_float32(v.array) for v in volumes]
        first = volumes[0]
        meta = {MetaKeys.AFFINE: first.affine.copy(), MetaKeys.ORIGINAL_AFFINE: first.affine.copy(),
                MetaKeys.SPATIAL_SHAPE: np.asarray(first.array.shape[:3]), MetaKeys.SPACE: SpaceKeys.RAS,
                MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(arrays) == 1 else 0,
                "filename_or_obj": str(Path(first.folder))}
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"{first.folder}: the series given as channels differ in shape")
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), meta
