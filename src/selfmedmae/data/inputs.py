"""The inputs of ``selfmedmae predict``: files, folders and MSD datalists, all checked before any inference.

Volumes (segmentation): ``.nii`` / ``.nii.gz`` files, folders holding one DICOM series, folders (their
``*.nii`` / ``*.nii.gz`` and DICOM series sub-folders, not recursive, skipping hidden files and macOS ``._*``
junk), or an MSD ``dataset.json`` (its ``test`` list). Images (classification):
files with the 2D suffixes of :mod:`selfmedmae.data.suffixes` (PNG, JPEG, TIFF, BMP, GIF) or folders of them (not recursive). Every file's header is read up
front, so a missing, unreadable or wrong file stops the command with a :class:`UserError` naming it before
the long work starts; output names are decided here too, and two inputs that would write the same output
file are refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import nibabel as nib
import numpy as np
from PIL import Image, UnidentifiedImageError

from selfmedmae.config.rules import path_problem, shown
from selfmedmae.data.decathlon import case_id, read_msd
from selfmedmae.data.suffixes import IMAGE_SUFFIXES, VOLUME_SUFFIXES, has_suffix, is_series, listed_files
from selfmedmae.errors import UserError

def _folder(path: Path, suffixes: Sequence[str]) -> List[Path]:
    found = listed_files(path, suffixes)
    if not found:
        raise UserError(f"{path}: folder holds no {' / '.join('*' + s for s in suffixes)} files")
    return found


def _datalist(path: Path) -> List[Path]:
    datalist = read_msd(path.parent, path.name)
    problems = [p for p in datalist.problems if "'training'" not in p]  # a test-only list is fine here
    if problems:
        raise UserError(problems[0])
    if not datalist.unlabelled:
        raise UserError(f"{path}: no 'test' list of images to predict")
    return [Path(item["image"]) for item in datalist.unlabelled]


def collect(inputs: Sequence[str], volumes: bool) -> List[Path]:
    """The input files, in the order given (folders sorted), each once."""
    suffixes = VOLUME_SUFFIXES if volumes else IMAGE_SUFFIXES
    kind = "NIfTI file (.nii, .nii.gz), a folder of them or an MSD dataset.json" if volumes else \
        f"image ({', '.join(IMAGE_SUFFIXES)}) or a folder of them"
    files: List[Path] = []
    for given in inputs:
        check_name(given, "input")
        path = Path(given)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_dir() and volumes and is_series(path):  # a folder holding one DICOM series is one volume
            files.append(path)
        elif path.is_dir():
            files += _folder(path, suffixes)
        elif volumes and path.suffix.lower() == ".json":
            files += _datalist(path)
        elif has_suffix(path, suffixes):
            files.append(path)
        else:
            raise UserError(f"{path}: not a {kind}")
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise UserError("no input files given")
    return unique


def check_name(path: str | Path, what: str) -> None:
    """A UserError when the operating system would refuse ``path`` as a name (NUL, too long)."""
    problem = path_problem(path)
    if problem:
        raise UserError(f"{what} {shown(path)} {problem}")


def check_volume(path: Path, in_chans: int) -> tuple:
    """Read the volume in full; the spatial shape, refusing what the model cannot take: an unreadable header, a
    truncated file (caught here, not mid-run after other outputs were written), the wrong number of axes or
    channels, NaN / Inf voxels (they turn the whole prediction into background). A DICOM series: every slice's
    header (several series, a missing slice, ... are refused naming the folder)."""
    if is_series(path):
        from selfmedmae.data.dicom_series import usable

        shape = usable(path).shape  # ConfigError naming the folder: several series, a missing slice, ...
        if in_chans != 1:
            raise UserError(f"{path}: a DICOM series is one channel, the model takes {in_chans}")
        return tuple(shape)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:  # nibabel raises many kinds (ImageFileError, OSError, EOFError, gzip errors)
        raise UserError(f"{path}: cannot be read as NIfTI ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    if len(shape) == 3:
        chans = 1
    elif len(shape) == 4:  # MSD multi-modal volumes: channels on the last axis
        chans = shape[3]
    else:
        raise UserError(f"{path}: a {len(shape)}D image of shape {list(shape)}; expected a 3D volume "
                        f"(or 4D with the channels last)")
    if chans != in_chans:
        raise UserError(f"{path}: {chans} channel(s), the model takes {in_chans}")
    try:
        array = np.asanyarray(img.dataobj)  # decompresses and reads every voxel
    except Exception as exc:  # EOFError, zlib / gzip errors, OSError, ValueError of a short file
        raise UserError(f"{path}: cannot be read in full, a truncated or damaged file? "
                        f"({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    bad = nonfinite(array)
    if bad:
        raise UserError(f"{path}: {bad} non-finite voxel(s) (NaN or Inf) of {array.size}; the model cannot "
                        f"predict them (fix or re-export the scan)")
    return shape[:3]


def nonfinite(array: np.ndarray) -> int:
    """How many values of ``array`` are NaN or Inf (0 for integer arrays)."""
    if array.dtype.kind not in "fc":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_image(path: Path) -> None:
    """Read the image through (truncated files fail here, not mid-run); float images must be finite."""
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.verify()  # reads the file through: truncated PNGs fail here, not mid-run
        if mode.startswith("F"):  # 32-bit float TIFFs can hold NaN / Inf
            with Image.open(path) as img:
                bad = nonfinite(np.asarray(img))
            if bad:
                raise UserError(f"{path}: {bad} non-finite pixel(s) (NaN or Inf); the model cannot classify them")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None


def output_stems(files: Sequence[Path]) -> List[str]:
    """``case.nii.gz`` -> ``case``; two inputs with one name (from different folders) are refused."""
    stems, owner = [], {}
    for f in files:
        stem = case_id(f)
        if stem in owner:
            raise UserError(f"{f}: has the same name as {owner[stem]}; their predictions would overwrite each "
                            f"other (predict them into different --out folders)")
        owner[stem] = f
        stems.append(stem)
    return stems
