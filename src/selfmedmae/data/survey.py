"""What a user's folder holds, for ``init-config``: a few NIfTI headers and label maps (3D) or a CSV of
images and its 0/1 class columns (2D), turned into suggested ``data.*`` / ``model.*`` values and notes
(:class:`Scan`). :mod:`selfmedmae.data.starter` writes them as configs."""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from selfmedmae.data.findings import duplicated_columns
from selfmedmae.data.suffixes import IMAGE_SUFFIXES, VOLUME_SUFFIXES
from selfmedmae.errors import UserError

_ROLE_WORDS = re.compile(r"(^|[_\-.])(img|image|images|label|labels|seg|mask|masks|gt)(?=$|[_\-.\d])", re.I)


@dataclass
class Scan:
    """What init-config found; rendered into the YAML."""

    data: Dict[str, object] = field(default_factory=dict)  # data.* keys to write
    model: Dict[str, object] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # comment lines at the top of the file
    table: Optional[List[Dict[str, str]]] = None  # rows of a CSV to write beside the config


def _is(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes)) and not path.name.startswith("._")


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _root(path: Path) -> str:
    """``data.root`` as the user named it: absolute stays absolute, relative is relative to the current folder."""
    return str(path.resolve()) if path.is_absolute() else _rel(path, Path.cwd())


# --- 3D -------------------------------------------------------------------------------------------------


def _key(name: str) -> str:
    """A file name without extension and role words: img0001 / label0001 -> 0001, case_seg -> case."""
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return _ROLE_WORDS.sub(r"\1", name).strip("_-.").lower()


def _pair_folder(folder: Path) -> List[Dict[str, Path]]:
    """Image / label pairs of a folder of NIfTI files: subfolders by role, matched by their name key."""
    subs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    image_dir = next((subs[n] for n in ("imagestr", "images", "image", "imgs", "img", "scans", "volumes")
                      if n in subs), None)
    label_dir = next((subs[n] for n in ("labelstr", "labels", "label", "masks", "mask", "segmentations", "seg",
                                        "gt") if n in subs), None)
    if image_dir is None:
        files = sorted(p for p in folder.iterdir() if _is(p, VOLUME_SUFFIXES))
        labels = [p for p in files if re.search(r"(label|seg|mask|gt)", p.name, re.I)]
        images = [p for p in files if p not in labels]
    else:
        images = sorted(p for p in image_dir.iterdir() if _is(p, VOLUME_SUFFIXES))
        labels = sorted(p for p in label_dir.iterdir() if _is(p, VOLUME_SUFFIXES)) if label_dir else []
    if not images:
        raise UserError(f"{folder}: no NIfTI images (*.nii.gz, *.nii) found, in it or in an images/ subfolder")
    by_key = {_key(p.name): p for p in labels}
    return [{"image": p, "label": by_key.get(_key(p.name))} for p in images]


def _nifti_facts(images: List[Path], labels: List[Path]) -> dict:
    import nibabel as nib

    shapes, zooms, channels, lows = [], [], set(), []
    for path in images:
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises several types
            raise UserError(f"{path}: not a readable NIfTI file ({exc.__class__.__name__})") from None
        shape = img.shape
        channels.add(shape[3] if len(shape) == 4 else 1)
        shapes.append(shape[:3])
        zooms.append([float(z) for z in img.header.get_zooms()[:3]])
    for path in images[:3]:
        lows.append(float(np.percentile(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32), 1)))
    values = set()
    for path in labels[:5]:
        values |= {int(v) for v in np.unique(np.asarray(nib.load(str(path)).dataobj))}
    if len(channels) > 1:
        raise UserError(f"{images[0].parent}: the images have different channel counts {sorted(channels)}")
    return dict(shapes=np.array(shapes), zooms=np.array(zooms), channels=channels.pop(), low=min(lows),
                label_values=sorted(values))


def _suggest_3d(facts: dict, scan: Scan) -> None:
    zooms, shapes = facts["zooms"], facts["shapes"]
    spacing = None
    if np.ptp(zooms, axis=0).max() > 1e-3:  # the grids differ: resample to the median spacing
        spacing = [round(float(z), 3) for z in np.median(zooms, axis=0)]
        shapes = shapes * zooms / np.array(spacing)
    median = np.median(shapes, axis=0)
    patch = 16 if median.min() >= 64 else 8
    side = int(min(96 if patch == 16 else 64, max(2 * patch, median.min() // patch * patch)))
    if facts["low"] < -200:
        intensity = "ct"
    else:
        intensity = "nonzero" if facts["channels"] > 1 else "percentile"
    scan.data.update(spatial_dims=3, in_chans=int(facts["channels"]), spacing=spacing, intensity=intensity,
                     roi_size=[side] * 3, crop_foreground=intensity != "percentile")
    scan.model.update(patch_size=patch)
    scan.notes += [
        f"{len(facts['shapes'])} volumes, {facts['channels']} channel(s); median shape "
        f"{' x '.join(str(int(s)) for s in np.median(facts['shapes'], axis=0))} voxels, median spacing "
        f"{' x '.join(f'{z:g}' for z in np.median(zooms, axis=0))} mm",
        f"intensity {intensity} (1st percentile of the first images: {facts['low']:.4g}); crop {side}^3, "
        f"patch {patch} ({(side // patch) ** 3} tokens)",
    ]


def scan_3d(data: Path, config_dir: Path) -> Scan:
    scan = Scan()
    if data.is_dir() and (data / "dataset.json").is_file():
        data = data / "dataset.json"
    if data.is_file() and data.suffix == ".json":
        from selfmedmae.data.decathlon import read_msd

        datalist = read_msd(data.parent, data.name)
        if datalist.problems:
            raise UserError(datalist.problems[0])
        scan.data.update(format="msd", root=_root(data.parent), dataset_json=data.name, labels=None)
        images = [Path(c["image"]) for c in datalist.cases + datalist.unlabelled]
        labels = [Path(c["label"]) for c in datalist.cases]
        scan.notes.append(f"MSD datalist {data}: {len(datalist.cases)} labelled, {len(datalist.unlabelled)} "
                          f"unlabelled cases; class names from it: {', '.join(datalist.labels or [])}")
        names = None
    elif data.is_file() and data.suffix.lower() == ".csv":
        rows = _read_csv(data)
        image_col = _path_column(rows, data, VOLUME_SUFFIXES, prefer="image")
        label_col = _path_column(rows, data, VOLUME_SUFFIXES, prefer="label", exclude=image_col, required=False)
        base = data.parent
        images = [_abs(base, r[image_col]) for r in rows]
        labels = [_abs(base, r[label_col]) for r in rows if label_col and r[label_col]]
        scan.data.update(format="csv", root=_root(data.parent), csv=data.name, image_column=image_col,
                         label_column=label_col)
        scan.notes.append(f"CSV {data}: {len(rows)} cases, {len(labels)} labelled (columns {image_col!r}, "
                          f"{label_col!r})")
        names = "guess"
    elif data.is_dir():
        pairs = _pair_folder(data)
        images = [p["image"] for p in pairs]
        labels = [p["label"] for p in pairs if p["label"] is not None]
        scan.table = [{"image": str(p["image"]), "label": str(p["label"] or "")} for p in pairs]
        scan.data.update(format="csv", root=_root(config_dir), csv=None, image_column="image",
                         label_column="label")
        scan.notes.append(f"folder {data}: {len(pairs)} images, {len(labels)} with a label map (paired by name)")
        names = "guess"
    else:
        raise UserError(f"{data}: not found, or not a dataset.json, a CSV or a folder of NIfTI files")
    missing = [p for p in images + labels if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: listed but not found ({len(missing)} missing)")
    if not labels:
        scan.notes.append("no label maps: pre-training only until labels are added")
    facts = _nifti_facts(images, labels)
    _suggest_3d(facts, scan)
    if names == "guess":
        values = facts["label_values"] or [0]
        top = max(values)
        scan.data["labels"] = ["background"] + [f"label_{v}" for v in range(1, top + 1)]
        scan.notes.append(f"label values seen in {min(len(labels), 5)} label maps: {values}; rename the "
                          f"classes in data.labels (background first, one name per value 0..{top})")
    return scan


# --- shared CSV helpers ---------------------------------------------------------------------------------


def _read_csv(path: Path) -> List[Dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            twice = duplicated_columns(path, [h.strip() for h in reader.fieldnames or []])
            if twice:
                raise UserError(twice[0])
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: unreadable CSV ({exc.__class__.__name__})") from None
    if not rows:
        raise UserError(f"{path}: no data rows")
    return rows


def _abs(base: Path, value: str) -> Path:
    return Path(value) if os.path.isabs(value) else base / value


def _path_column(rows: List[dict], path: Path, suffixes: Sequence[str], prefer: str, exclude: str | None = None,
                 required: bool = True) -> Optional[str]:
    """The column whose filled cells are file names with ``suffixes`` (``prefer`` when several)."""
    candidates = [c for c in rows[0] if c != exclude and any(r[c] for r in rows)
                  and all(r[c].lower().endswith(tuple(suffixes)) for r in rows if r[c])]
    if not candidates:
        if required:
            raise UserError(f"{path}: no column of {'/'.join(suffixes)} paths (columns: {', '.join(rows[0])})")
        return None
    return prefer if prefer in candidates else candidates[0]


# --- 2D -------------------------------------------------------------------------------------------------

_BINARY = {"0", "1", "0.0", "1.0", "true", "false", "yes", "no"}
_GROUP_NAMES = ("patient", "patient_id", "patientid", "patient id", "subject", "subject_id", "group")


def scan_2d(data: Path, config_dir: Path) -> Scan:
    from PIL import Image

    scan = Scan()
    if data.is_dir():
        csvs = sorted(p for p in data.iterdir() if p.suffix.lower() == ".csv")
        if len(csvs) > 1:
            raise UserError(f"{data}: several CSV files ({', '.join(p.name for p in csvs)}); name one with --data")
        if csvs:
            data = csvs[0]
    if data.is_file() and data.suffix.lower() == ".csv":
        rows = _read_csv(data)
        image_col = _path_column(rows, data, IMAGE_SUFFIXES, prefer="image")
        images = [_abs(data.parent, r[image_col]) for r in rows]
        split = "split" if "split" in rows[0] else None
        group = next((c for c in rows[0] if c.lower() in _GROUP_NAMES), None)
        classes = [c for c in rows[0] if c not in (image_col, split, group)
                   and all(r[c].lower() in _BINARY for r in rows)]
        scan.data.update(format="csv", root=_root(data.parent), csv=data.name, image_column=image_col,
                         class_columns=classes or None, group_column=group, labels=None)
        scan.notes.append(f"CSV {data}: {len(rows)} images; classes (0/1 columns): {', '.join(classes) or 'none'}"
                          f"; split: {'the split column' if split else 'seeded'}; groups: {group or 'none'}")
        if not classes:
            scan.notes.append("no 0/1 class column: pre-training only until one is added")
    elif data.is_dir():
        images = sorted(p for p in data.rglob("*") if p.is_file() and _is(p, IMAGE_SUFFIXES))
        if not images:
            raise UserError(f"{data}: no CSV and no images ({', '.join(IMAGE_SUFFIXES)}) found")
        scan.table = [{"image": str(p)} for p in images]
        scan.data.update(format="csv", root=_root(config_dir), csv=None, image_column="image",
                         labels=None)
        scan.notes.append(f"folder {data}: {len(images)} images, no labels (pre-training only); a CSV listing "
                          f"them is written beside this config: add 0/1 class columns to fine-tune")
    else:
        raise UserError(f"{data}: not found, or not a CSV or a folder of images")
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: listed but not found ({len(missing)} missing)")
    sides = []
    for path in images[:20]:
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except OSError as exc:
            raise UserError(f"{path}: not a readable image ({exc})") from None
    side = int(np.median(sides))
    image_size = 256 if side >= 256 else max(32, side // 16 * 16)
    crop = max(32, int(image_size * 0.875) // 16 * 16)
    scan.data.update(spatial_dims=2, in_chans=1, image_size=image_size, crop_size=crop)
    scan.model.update(patch_size=16)
    scan.notes.append(f"median shorter side of {len(sides)} images: {side} px; resize {image_size}, crop {crop}, "
                      f"patch 16 ({(crop // 16) ** 2} tokens)")
    return scan


# --- the file ---------------------------------------------------------------------------------------------
