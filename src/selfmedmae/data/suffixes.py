"""Which files are images: the one list of accepted suffixes for volumes and for 2D images, used by the
readers, ``init-config``, ``data.extra_unlabelled`` and ``predict`` alike."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

VOLUME_SUFFIXES = (".nii.gz", ".nii")  # what the NIfTI reader of the 3D pipeline loads (and DICOM series folders)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")  # what the 2D pipeline (PIL) loads


def has_suffix(path: str | Path, suffixes: Sequence[str]) -> bool:
    """A file name with one of ``suffixes``; for volumes also a folder holding a DICOM series."""
    if Path(path).name.lower().endswith(tuple(suffixes)):
        return True
    return tuple(suffixes) == VOLUME_SUFFIXES and is_series(path)


def is_series(path: str | Path) -> bool:
    """A folder holding DICOM files: one volume (:mod:`selfmedmae.data.dicom_series`)."""
    from selfmedmae.data.dicom_series import holds_dicom

    return holds_dicom(path)


def strip_suffix(name: str, suffixes: Sequence[str] = VOLUME_SUFFIXES) -> str:
    """``case_001.nii.gz`` -> ``case_001`` (the longest matching suffix goes)."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def listed_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """The files of ``folder`` (not recursive) with one of ``suffixes``, sorted, and for volumes its sub-folders
    holding a DICOM series; hidden files and macOS ``._*`` junk are left out."""
    return sorted(p for p in folder.iterdir() if (p.is_file() or p.is_dir()) and not p.name.startswith(".")
                  and has_suffix(p, suffixes))
