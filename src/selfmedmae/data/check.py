"""``selfmedmae check-data``: find every problem of a dataset before a long run starts.

:func:`check_3d` takes the scanned datalist (``dataset.json`` / CSV / BTCV names), the split, and reads every
volume with nibabel; it returns a :class:`~selfmedmae.data.findings.DataReport` whose problems are one line each,
``"<file>: <problem>"``: a missing or unreadable file, a malformed ``dataset.json`` / CSV / split file, an
empty split, image / label shape or affine mismatch, a channel count other than ``data.in_chans``, label
values outside the declared labels, NaN / Inf voxels. A volume smaller than the crop (after resampling)
is only a warning: it is padded. 2D formats (``cxr14``, ``csv`` with ``spatial_dims: 2``) are checked by
``chestxray14.check`` / ``csv_2d.check``. Commands reach both through :meth:`selfmedmae.data.facade.Data.check`,
which picks by the table in :mod:`selfmedmae.data.formats`.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import nibabel as nib
import numpy as np

from selfmedmae.data.findings import DataReport, Lines, constant_problem
from selfmedmae.data.paths import root_note, shown
from selfmedmae.data.selection import label_count, pretrain_items
from selfmedmae.data.splits import split_ids
from selfmedmae.data.suffixes import is_series
from selfmedmae.errors import UserError
from selfmedmae.runtime.cores import reading_threads

AFFINE_ATOL = 1e-3  # mm; image and label affines must agree to this


@dataclass
class CaseFacts:
    problems: List[str] = field(default_factory=Lines)
    warnings: List[str] = field(default_factory=Lines)
    shape: Optional[tuple] = None  # spatial, file order
    spacing: Optional[tuple] = None
    channels: Optional[int] = None
    label_counts: Counter = field(default_factory=Counter)


def _read(path: str, facts: CaseFacts, root: Optional[str] = None):
    """(nibabel image, array) or (None, None) with the reason recorded; ``root``: the ``data.root`` a relative
    path was resolved against, for the message."""
    if is_series(path):
        return _read_series(path, facts)
    if not Path(path).is_file():
        what = "is a folder, not a volume file (nor a DICOM series)" if Path(path).is_dir() else "file not found"
        note = root_note(root)
        facts.problems.append(f"{shown(path)}: {what}{f' ({note})' if note else ''}")
        return None, None
    try:
        img = nib.load(path)
        too_big = _size_problem(path, img)
        if too_big:
            facts.problems.append(too_big)
            return None, None
        return img, np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel, gzip, zlib and OS errors all mean "cannot be read"
        text = " ".join(str(exc).split())[:160]  # one line: nibabel's messages run over several
        facts.problems.append(f"{path}: unreadable ({exc.__class__.__name__}: {text})")
        return None, None


def _read_series(path: str, facts: CaseFacts):
    """A DICOM series folder: its header problems (several series, missing slices, ...), else the volume as the
    NIfTI image nibabel would give for it."""
    from selfmedmae.data.dicom_series import find_problems, read_volume

    try:
        problems = find_problems(path)
        if problems:
            facts.problems += problems
            return None, None
        array, affine = read_volume(path)
    except UserError as exc:  # the dicom extra missing, undecodable pixel data
        facts.problems.append(str(exc))
        return None, None
    return nib.Nifti1Image(array, affine), array


MAX_VOXELS = 2 ** 30  # beyond any scan this tool trains on; a damaged header would allocate gigabytes first


def _size_problem(path: str, img) -> Optional[str]:
    """A header that declares more voxels than the file can hold: found before allocating the array."""
    shape = [int(s) for s in img.shape]
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if voxels > MAX_VOXELS:
        return f"{path}: header declares {'x'.join(map(str, shape))} voxels, over {MAX_VOXELS:,}; a damaged header?"
    if not path.endswith(".gz"):
        need = int(img.header.get_data_offset()) + voxels * np.dtype(img.get_data_dtype()).itemsize
        have = Path(path).stat().st_size
        if have < need:
            return f"{path}: truncated: the header declares {need:,} bytes, the file holds {have:,}"
    return None


def _finite(path: str, array: np.ndarray, facts: CaseFacts) -> None:
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            facts.problems.append(f"{path}: {bad} NaN or Inf voxel(s)")


def _not_constant(path: str, array: np.ndarray, facts: CaseFacts) -> None:
    """An image with one value everywhere (all zero: a failed export) has nothing to learn and breaks the
    intensity normalisation (0 / 0)."""
    if array.size == 0:
        facts.problems.append(f"{path}: the volume holds no voxels")
        return
    flat = array.reshape(-1)
    first = flat[0]
    if array.dtype.kind == "f" and not np.isfinite(first):
        return  # reported by _finite
    if np.all(flat == first):
        facts.problems.append(constant_problem(path, first))


def _shape_after(img, shape: tuple, data_cfg) -> np.ndarray:
    """Approximate spatial shape after reorientation and resampling (for the crop-size warning)."""
    zooms = np.array(img.header.get_zooms()[:3], float)
    size = np.array(shape, float) * zooms
    if data_cfg.orientation:
        ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                               nib.orientations.axcodes2ornt(data_cfg.orientation))
        order = np.argsort(ornt[:, 0])
        size, zooms = size[order], zooms[order]
    target = np.array(data_cfg.spacing, float) if data_cfg.spacing else zooms
    return np.floor(size / target + 0.5).astype(int)


def check_case(item: dict, data_cfg, n_labels: Optional[int]) -> CaseFacts:
    """All checks of one case (image, and label when the item has one)."""
    facts = CaseFacts()
    img, array = _read(item["image"], facts, str(data_cfg.root))
    if img is not None:
        if array.ndim not in (3, 4):
            facts.problems.append(f"{item['image']}: expected a 3D or 4D (channels last) volume, shape {array.shape}")
            return facts
        facts.shape, facts.spacing = array.shape[:3], tuple(float(z) for z in img.header.get_zooms()[:3])
        facts.channels = 1 if array.ndim == 3 else array.shape[3]
        if facts.channels != data_cfg.in_chans:
            facts.problems.append(f"{item['image']}: {facts.channels} channel(s), data.in_chans is {data_cfg.in_chans}")
        _finite(item["image"], array, facts)
        _not_constant(item["image"], array, facts)
        if not np.all(np.isfinite(img.affine)):
            facts.problems.append(f"{item['image']}: the header's affine holds NaN or Inf (a damaged header?)")
            return facts
        try:
            after = _shape_after(img, facts.shape, data_cfg)
        except (ValueError, np.linalg.LinAlgError) as exc:  # degenerate axes: found by fuzzing the headers
            facts.problems.append(f"{item['image']}: the header's affine gives no usable orientation ({exc})")
            return facts
        if any(a < r for a, r in zip(after, data_cfg.roi_size)):
            facts.warnings.append(f"{item['image']}: about {tuple(after.tolist())} voxels after resampling, smaller "
                                  f"than the crop {tuple(data_cfg.roi_size)}; it is padded")
    if "label" not in item:
        return facts
    lab_img, label = _read(item["label"], facts, str(data_cfg.root))
    if lab_img is None:
        return facts
    if label.ndim == 4 and label.shape[3] == 1:
        label = label[..., 0]
    if img is not None and label.shape != tuple(facts.shape):
        facts.problems.append(f"{item['label']}: shape {label.shape} differs from its image "
                              f"{item['image']} {array.shape[:3]}")
    if img is not None and not np.allclose(lab_img.affine, img.affine, atol=AFFINE_ATOL):
        diff = float(np.abs(lab_img.affine - img.affine).max())
        facts.problems.append(f"{item['label']}: affine differs from its image {item['image']} "
                              f"(largest difference {diff:.4g})")
    _finite(item["label"], label, facts)
    values, counts = np.unique(label[np.isfinite(label)] if label.dtype.kind == "f" else label, return_counts=True)
    if np.any(values != np.round(values)):
        example = values[values != np.round(values)][0]
        facts.problems.append(f"{item['label']}: non-integer label values, e.g. {example}")
    facts.label_counts.update({int(v): int(c) for v, c in zip(np.round(values), counts)})
    if n_labels is not None:
        outside = sorted(v for v in facts.label_counts if not 0 <= v < n_labels)
        if outside:
            facts.problems.append(f"{item['label']}: label value(s) {', '.join(map(str, outside))} outside the "
                                  f"declared labels 0..{n_labels - 1}")
    return facts


def _span(values: Sequence[tuple], fmt: str) -> str:
    arr = np.array(values, float)
    return ", ".join(f"{ax} {fmt.format(lo)}-{fmt.format(hi)}" for ax, lo, hi in zip("xyz", arr.min(0), arr.max(0)))


def _stage_summary(data_cfg, datalist, splits: dict, extra) -> List[str]:
    """How many images pre-training sees and how many labelled cases fine-tuning trains on."""
    labelled, unlabelled = pretrain_items(data_cfg, datalist, splits, extra)
    held = "" if data_cfg.pretrain_on == "all" else "; val and test cases left out"
    lines = [f"pre-training sees {len(labelled) + len(unlabelled)} image(s): {len(labelled)} labelled "
             f"({'train + val + test' if data_cfg.pretrain_on == 'all' else 'train split'}) + "
             f"{len(unlabelled)} unlabelled (data.pretrain_on={data_cfg.pretrain_on}{held})"]
    n_train = len(splits.get("train", []))
    keep = label_count(n_train, data_cfg.label_fraction, data_cfg.max_labelled)
    if keep != n_train:
        lines.append(f"fine-tuning trains on {keep} of the {n_train} labelled train case(s) (data.label_fraction="
                     f"{float(data_cfg.label_fraction):g}, data.max_labelled={data_cfg.max_labelled}, "
                     f"data.label_seed={data_cfg.label_seed})")
    else:
        lines.append(f"fine-tuning trains on {n_train} labelled train case(s)")
    return lines


def check_3d(data_cfg, stage: str, datalist, extra) -> DataReport:
    """Check a 3D dataset (msd, brats, btcv, csv with spatial_dims 3) from its scan (the ``datalist`` and
    ``data.extra_unlabelled``, read once by the :class:`~selfmedmae.data.facade.Data` of the command).
    ``stage="pretrain"`` needs no labelled case: unlabelled images alone are enough."""
    report = DataReport()
    report.problems += datalist.problems
    report.warnings += datalist.warnings
    if datalist.channels is not None and datalist.channels != data_cfg.in_chans:
        report.problems.append(f"{datalist.source}: 'modality' lists {datalist.channels} channel(s), "
                               f"data.in_chans is {data_cfg.in_chans}")
    splits = {}
    if not datalist.problems:
        splits, problems = split_ids(data_cfg, datalist)
        if stage == "pretrain":  # an empty split matters to fine-tuning only: a warning here
            _, needed = split_ids(data_cfg, datalist, require=False)
            report.warnings += [f"{p} (fine-tuning needs it; pre-training does not)" for p in problems
                                if p not in needed]
            problems = needed
        report.problems += problems
    items = datalist.cases + datalist.unlabelled
    if extra is not None:
        report.problems += extra.problems
        items += extra.unlabelled
    n_labels = len(datalist.labels) if datalist.labels else None
    with ThreadPoolExecutor(max_workers=reading_threads(data_cfg.num_workers)) as pool:
        facts = list(pool.map(lambda item: check_case(item, data_cfg, n_labels), items))
    for f in facts:
        report.problems += f.problems
        report.warnings += f.warnings
    good = [f for f in facts if f.shape is not None]
    report.summary.append(f"{datalist.source}: format {data_cfg.format}, {len(datalist.cases)} labelled and "
                          f"{len(datalist.unlabelled)} unlabelled case(s)")
    if extra is not None:
        report.summary.append(f"{extra.source}: {len(extra.unlabelled)} extra unlabelled image(s) for pre-training")
    if splits:
        report.summary.append("splits: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
        if not report.problems:
            report.summary += _stage_summary(data_cfg, datalist, splits, extra)
            if stage == "pretrain" and not any(splits.values()) and not datalist.unlabelled and \
                    not (extra is not None and extra.unlabelled):
                report.problems.append(f"{datalist.source}: no images for pre-training")
    if good:
        report.summary.append(f"channels: {sorted({f.channels for f in good})}")
        report.summary.append(f"shape (voxels): {_span([f.shape for f in good], '{:.0f}')}")
        report.summary.append(f"spacing (mm): {_span([f.spacing for f in good], '{:.2f}')}")
    counts = sum((f.label_counts for f in facts), Counter())
    if counts:
        names = datalist.labels or []
        report.summary.append("label voxels: " + "; ".join(
            f"{v}{' (' + names[v] + ')' if 0 <= v < len(names) else ''}: {counts[v]:,}" for v in sorted(counts)))
    return report
