"""Test helpers: a DICOM series written with pydicom from a volume in nibabel's convention (array + RAS affine),
with the headers a scanner writes (patient, study, frame of reference, orientation, position, spacing, stored
integers with RescaleSlope / RescaleIntercept, one SOP instance per slice)."""
from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Optional

import numpy as np

SOP_CLASSES = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}  # MR / CT Image Storage
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_series(array: np.ndarray, affine: np.ndarray, folder: Path, modality: str = "MR", slope: float = 0.5,
                 intercept: float = -20.0, series_uid: Optional[str] = None, study_uid: Optional[str] = None,
                 shuffle: bool = True, first_number: int = 1) -> list[Path]:
    """One file per slice of ``array`` [X, Y, Z] (nibabel order, RAS ``affine``) in ``folder``; the stored
    values are the integers ``(value - intercept) / slope`` (exact when the values allow). File names are
    shuffled (``shuffle``) so that only the headers can give the slice order."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS @ np.asarray(affine, float)
    row_dir, col_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0]), lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    stored = np.round((np.asarray(array, float) - intercept) / slope).astype(np.int16)
    assert np.allclose(stored * slope + intercept, array), "the values are not exact in stored integers"
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), study_uid or generate_uid(), generate_uid()
    names = [f"IM{n:04d}.dcm" for n in range(array.shape[2])]
    if shuffle:
        random.Random(0).shuffle(names)
    paths = []
    for k in range(array.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SOP_CLASSES[modality], generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Hippocampus", "HIPPO001", "19700101", "O"
        today = datetime.date(2026, 1, 1).strftime("%Y%m%d")
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, today, "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 1, modality
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer, ds.InstanceNumber = "selfmedmae tests", first_number + k
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ [0, 0, k] + lps[:3, 3]]
        ds.PixelSpacing = [float(np.linalg.norm(lps[:3, 1])), float(np.linalg.norm(lps[:3, 0]))]  # rows, columns
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if modality == "CT":
            ds.RescaleType, ds.KVP = "HU", 120
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # [rows, columns]
        path = folder / names[k]
        try:
            pydicom.dcmwrite(path, ds, enforce_file_format=True)  # pydicom >= 3
        except TypeError:
            pydicom.dcmwrite(path, ds, write_like_original=False)  # pydicom 2.4
        paths.append(path)
    return paths


def hippocampus_series(folder: Path, case: str = "hippocampus_001", **kw) -> tuple[Path, Path]:
    """(series folder, NIfTI file): the shipped hippocampus ``case`` written as an MR series."""
    import nibabel as nib

    from tiny_runs import HIPPOCAMPUS

    nifti = HIPPOCAMPUS / "imagesTr" / f"{case}.nii.gz"
    img = nib.load(nifti)
    write_series(np.asanyarray(img.dataobj), img.affine, folder, **kw)
    return folder, nifti
