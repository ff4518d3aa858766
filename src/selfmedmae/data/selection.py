"""Which images each stage sees: pre-training's pool (labelled or not) and fine-tuning's labelled subset.

* **Pre-training** learns from images alone, so it takes every image the user has that is not held out:
  ``data.pretrain_on=train`` (default) = the labelled cases of the train split + every unlabelled image
  (CSV rows without a label, a ``dataset.json``'s ``test`` list, the images of ``data.extra_unlabelled``);
  ``all`` adds the labelled val and test cases (their labels are never used; only the images).
  :func:`label_fraction` does not shrink this pool.
* **Fine-tuning** uses labelled cases only: the train split, or a seeded subset of it for label-efficiency
  experiments (:func:`label_subset`: ``data.label_fraction``, ``data.max_labelled``, ``data.label_seed``).
* **Splits** are decided over the labelled cases only (:mod:`selfmedmae.data.splits`), so adding
  unlabelled images never moves a case between train, val and test.
"""
from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from selfmedmae.data.decathlon import Datalist, case_id, check_unique
from selfmedmae.data.suffixes import VOLUME_SUFFIXES, has_suffix

PRETRAIN_ON = ("train", "all")
GLOB_CHARS = "*?["


def selection_problems(data_cfg) -> List[str]:
    """Bad values of the selection settings, one line each, naming the key."""
    problems = []
    if data_cfg.pretrain_on not in PRETRAIN_ON:
        problems.append(f"data.pretrain_on: {data_cfg.pretrain_on!r} is not one of {', '.join(PRETRAIN_ON)}")
    fraction = float(data_cfg.label_fraction)
    if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0):
        problems.append(f"data.label_fraction: {data_cfg.label_fraction} is not in (0, 1]")
    if data_cfg.max_labelled is not None and int(data_cfg.max_labelled) < 1:
        problems.append(f"data.max_labelled: {data_cfg.max_labelled} must be at least 1 (or null for no cap)")
    return problems


def label_count(n: int, fraction: float = 1.0, max_labelled: Optional[int] = None) -> int:
    """How many of ``n`` labelled training cases fine-tuning keeps: ``floor(n * fraction + 0.5)``, at least 1,
    at most ``max_labelled``."""
    if n == 0:
        return 0
    keep = max(1, int(math.floor(n * float(fraction) + 0.5)))
    return min(keep, int(max_labelled)) if max_labelled is not None else keep


def label_subset(ids: Sequence[str], fraction: float = 1.0, max_labelled: Optional[int] = None,
                 seed: int = 0) -> List[str]:
    """The kept ids, sorted: sort ``ids``, permute with ``numpy.random.RandomState(seed)``, keep the first
    :func:`label_count`. For one seed a smaller fraction keeps a prefix of the same permutation, so the 10 %
    subset lies inside the 25 % one; the order of ``ids`` does not matter."""
    ids = sorted(ids)
    keep = label_count(len(ids), fraction, max_labelled)
    if keep == len(ids):
        return ids
    perm = np.random.RandomState(seed).permutation(len(ids))
    return sorted(ids[i] for i in perm[:keep])


def subset_rule(data_cfg) -> Optional[str]:
    """The fine-tuning subset in words, or ``None`` when every labelled training case is used."""
    if float(data_cfg.label_fraction) >= 1.0 and data_cfg.max_labelled is None:
        return None
    cap = f", at most {data_cfg.max_labelled}" if data_cfg.max_labelled is not None else ""
    return (f"label_fraction={float(data_cfg.label_fraction):g}{cap} of the labelled train cases: sorted ids, "
            f"numpy RandomState({data_cfg.label_seed}).permutation, first floor(n * fraction + 0.5)")


def is_image_file(path: Path) -> bool:
    """A volume file by its suffix, or a folder holding a DICOM series; hidden files (macOS ``._*`` junk) are not."""
    return (path.is_file() or path.is_dir()) and not path.name.startswith(".") and has_suffix(path, VOLUME_SUFFIXES)


def folder_images(root: Path, pattern: str) -> Datalist:
    """The volumes of a folder (not recursive) or of a glob (``scans/**/*.nii.gz``), relative to ``root``,
    as unlabelled items sorted by path; a pattern that finds none is a problem."""
    where = root / pattern
    out = Datalist(source=str(where))
    if any(c in pattern for c in GLOB_CHARS):
        paths = [Path(p) for p in glob.glob(str(where), recursive=True)]
    elif where.is_dir():
        paths = [where] if is_image_file(where) else list(where.iterdir())  # one DICOM series, or a folder of them
    else:
        out.problems.append(f"{where}: data.extra_unlabelled: no such folder or file (a folder, a glob, "
                            "a dataset.json-style *.json or a *.csv of image paths)")
        return out
    paths = sorted(p for p in paths if is_image_file(p))
    if not paths:
        out.problems.append(f"{where}: data.extra_unlabelled finds no image files ({', '.join(VOLUME_SUFFIXES)})")
    out.unlabelled = [{"id": case_id(p), "image": str(p)} for p in paths]
    check_unique(out.unlabelled, where, out.problems)
    return out


def pretrain_items(data_cfg, datalist: Datalist, splits: dict, extra: Optional[Datalist]) -> Tuple[List[dict], List[dict]]:
    """(labelled cases, unlabelled images) pre-training sees; ``splits`` maps train / val / test to ids.

    Labelled cases keep their label (it guides the crop centres, as in the official code) but pre-training
    never sees it. An image listed twice (e.g. in ``extra_unlabelled`` and in the datalist) counts once;
    with ``pretrain_on=train`` the images of val and test cases stay out even when ``extra_unlabelled``
    lists them again.
    """
    held_out = set(splits.get("val", [])) | set(splits.get("test", []))
    wanted = set(splits.get("train", [])) | (held_out if data_cfg.pretrain_on == "all" else set())
    labelled = [c for c in datalist.cases if c["id"] in wanted]
    seen = {str(Path(c["image"]).resolve()) for c in datalist.cases if c["id"] in held_out | wanted}
    unlabelled = []
    for item in datalist.unlabelled + (extra.unlabelled if extra is not None else []):
        key = str(Path(item["image"]).resolve())
        if key not in seen:
            seen.add(key)
            unlabelled.append({"id": item["id"], "image": item["image"]})
    return labelled, unlabelled
