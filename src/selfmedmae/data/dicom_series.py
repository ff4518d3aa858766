"""A folder holding one DICOM series as a volume: its headers scanned without the pixels, the problems found in
them, and the volume read in nibabel's convention.

A volume is a folder of single-frame DICOM files (each with the ``DICM`` preamble) of one series
(``SeriesInstanceUID``). Its slices are sorted by their position along the slice normal
(``ImagePositionPatient`` · (row direction × column direction)); each slice's stored values get its own
``RescaleSlope`` / ``RescaleIntercept``. :func:`read_volume` gives the array as nibabel would give it for the
equivalent NIfTI file: axis 0 runs along a row (DICOM columns), axis 1 down the columns (DICOM rows), axis 2
over the sorted slices, and the affine maps voxel indices to RAS+ millimetres (DICOM's patient space is
LPS+: x and y change sign). The reorientation, resampling and intensity steps that follow are the NIfTI
ones, unchanged.

:func:`scan_series` reads the headers only (``stop_before_pixels``), so ``check-data`` and ``predict`` find a
bad folder before any pixel is decoded; :func:`find_problems` lists what makes it unusable, one line each.
Only :func:`holds_dicom` is needed to tell a series folder from a folder of NIfTI files; it reads 132 bytes
per probed file and needs no extra installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from selfmedmae.errors import ConfigError
from selfmedmae.extras import need

PROBE = 16  # files of a folder looked at by holds_dicom
GAP = 1.5  # a step this many times the median spacing is a missing slice
UNEVEN = 0.01  # steps differing from the median by more than this fraction (and 1 micron) are uneven
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
REQUIRED = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
            "Columns")


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _files(folder: Path) -> List[Path]:
    """The folder's files (not recursive), sorted; hidden files, macOS ``._*`` junk and DICOMDIR left out."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")


def holds_dicom(folder: str | Path) -> bool:
    """Whether ``folder`` is a folder with a DICOM file among its first :data:`PROBE` files."""
    folder = Path(folder)
    try:
        return folder.is_dir() and any(is_dicom_file(f) for f in _files(folder)[:PROBE])
    except OSError:
        return False


@dataclass
class Slice:
    """One file's header facts."""

    path: Path
    uid: str
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient: row direction, column direction
    pixel_spacing: np.ndarray  # PixelSpacing: between rows, between columns (mm)
    rows: int
    columns: int
    slope: float
    intercept: float


@dataclass
class Series:
    """A scanned folder: its slices sorted along the normal, and every problem found (one line each)."""

    folder: Path
    slices: List[Slice] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    normal: Optional[np.ndarray] = None

    @property
    def shape(self) -> tuple:
        """The volume's shape in nibabel's order: (columns, rows, slices)."""
        first = self.slices[0]
        return first.columns, first.rows, len(self.slices)

    def affine(self) -> np.ndarray:
        """Voxel (column, row, slice) -> RAS+ mm, 4 x 4 float64."""
        first, last = self.slices[0], self.slices[-1]
        row_dir, col_dir = first.orientation[:3], first.orientation[3:]
        lps = np.eye(4)
        lps[:3, 0] = row_dir * first.pixel_spacing[1]  # along a row: the column index grows
        lps[:3, 1] = col_dir * first.pixel_spacing[0]
        lps[:3, 2] = (last.position - first.position) / (len(self.slices) - 1)  # also right for a tilted gantry
        lps[:3, 3] = first.position
        return LPS_TO_RAS @ lps


def _slice(path: Path, ds) -> Slice:
    return Slice(path, str(ds.SeriesInstanceUID), np.array(ds.ImagePositionPatient, float),
                 np.array(ds.ImageOrientationPatient, float), np.array(ds.PixelSpacing, float), int(ds.Rows),
                 int(ds.Columns), float(getattr(ds, "RescaleSlope", 1) or 1),
                 float(getattr(ds, "RescaleIntercept", 0) or 0))


def _headers(series: Series, pydicom) -> None:
    """Every file's header into ``series.slices``; files that are not single-frame DICOM images into problems."""
    folder = series.folder
    for path in _files(folder):
        if not is_dicom_file(path):
            series.problems.append(f"{folder}: {path.name} is not a DICOM file; a series folder holds its "
                                   f"series' files alone")
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many kinds on damaged files
            series.problems.append(f"{folder}: {path.name} is unreadable ({exc.__class__.__name__}: {exc})")
            continue
        missing = [key for key in REQUIRED if key not in ds]
        if missing:
            series.problems.append(f"{folder}: {path.name} has no {', '.join(missing)}; not an image slice")
        elif int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            series.problems.append(f"{folder}: {path.name} is a multi-frame file; only series of single-frame "
                                   f"slices are read")
        else:
            series.slices.append(_slice(path, ds))


def _consistent(series: Series) -> None:
    """One series, one image size, one orientation, one pixel spacing."""
    s, folder = series.slices, series.folder
    uids = sorted({x.uid for x in s})
    if len(uids) > 1:
        series.problems.append(f"{folder}: {len(uids)} series in one folder (SeriesInstanceUID "
                               f"{', '.join(uids[:3])}{', ...' if len(uids) > 3 else ''}); put each series in "
                               f"a folder of its own")
    sizes = sorted({(x.rows, x.columns) for x in s})
    if len(sizes) > 1:
        series.problems.append(f"{folder}: mixed image sizes (rows x columns: "
                               f"{', '.join(f'{r}x{c}' for r, c in sizes)})")
    if any(not np.allclose(x.orientation, s[0].orientation, atol=1e-4) for x in s):
        series.problems.append(f"{folder}: mixed ImageOrientationPatient; the slices are not one volume")
    if any(not np.allclose(x.pixel_spacing, s[0].pixel_spacing, atol=1e-4) for x in s):
        series.problems.append(f"{folder}: mixed PixelSpacing; the slices are not one volume")


def _spacing(series: Series) -> None:
    """Sort along the normal; report duplicated positions, missing slices and uneven spacing."""
    folder, first = series.folder, series.slices[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    series.normal = normal
    series.slices.sort(key=lambda x: float(x.position @ normal))
    if len(series.slices) < 2:
        series.problems.append(f"{folder}: one slice only; a volume needs at least two")
        return
    where = np.array([float(x.position @ normal) for x in series.slices])
    steps = np.diff(where)
    if np.any(steps < 1e-3):
        series.problems.append(f"{folder}: {int(np.sum(steps < 1e-3))} slice(s) at the same position as another "
                               f"(two series or echoes in one folder?)")
        return
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP * median)
    if gaps.size:
        at = ", ".join(f"{where[i]:.4g}-{where[i + 1]:.4g} mm" for i in gaps[:3])
        series.problems.append(f"{folder}: missing slice(s): {gaps.size} gap(s) over {GAP} x the median slice "
                               f"spacing {median:.4g} mm (at {at})")
    elif np.any(np.abs(steps - median) > max(UNEVEN * median, 1e-3)):
        series.problems.append(f"{folder}: uneven slice spacing ({steps.min():.4g} to {steps.max():.4g} mm, "
                               f"median {median:.4g} mm); resample it to even spacing first")


def scan_series(folder: str | Path) -> Series:
    """The headers of ``folder`` (no pixel data), its slices sorted along the normal, and its problems."""
    pydicom = need("pydicom", "dicom")
    series = Series(Path(folder))
    if not series.folder.is_dir():
        series.problems.append(f"{folder}: no such folder")
        return series
    _headers(series, pydicom)
    if not series.slices:
        if not series.problems:
            series.problems.append(f"{folder}: holds no DICOM files")
        return series
    _consistent(series)
    if not series.problems:
        _spacing(series)
    return series


def find_problems(folder: str | Path) -> List[str]:
    """Why ``folder`` cannot be read as one volume, one line each (empty: it can)."""
    return scan_series(folder).problems


def usable(folder: str | Path) -> Series:
    """The scanned series, or a ConfigError naming the folder and its first problem."""
    series = scan_series(folder)
    if series.problems:
        more = len(series.problems) - 1
        raise ConfigError(series.problems[0] + (f" (and {more} more problem(s): `selfmedmae check-data` lists "
                                                f"them)" if more else ""))
    return series


def read_volume(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(array [columns, rows, slices], RAS affine 4 x 4) of the series in ``folder``, rescaled values
    (the stored dtype when every slope is 1 and intercept 0, float64 otherwise)."""
    pydicom = need("pydicom", "dicom")
    series = usable(folder)
    planes = []
    for s in series.slices:
        try:
            pixels = pydicom.dcmread(s.path).pixel_array  # [rows, columns]
        except Exception as exc:  # compressed syntaxes without their decoder, truncated pixel data
            raise ConfigError(f"{series.folder}: {s.path.name}: pixel data cannot be decoded "
                              f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if s.slope != 1 or s.intercept != 0:
            pixels = pixels.astype(np.float64) * s.slope + s.intercept
        planes.append(pixels)
    dtype = np.result_type(*planes)
    volume = np.stack([p.astype(dtype, copy=False) for p in planes], axis=-1)  # [rows, columns, slices]
    return volume.transpose(1, 0, 2), series.affine()
