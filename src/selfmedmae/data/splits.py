"""Which labelled 3D cases are train, val and test: the seeded rule, a user's split file, BTCV's split.

MSD's own ``test`` cases carry no labels, so the labelled cases are divided here:

* **Seeded rule** (:func:`seeded_split`): sort the case ids, permute them with
  ``numpy.random.RandomState(data.split_seed).permutation``; the first ``n_test`` are test, the next
  ``n_val`` val, the rest train, where ``n_x = floor(n * fraction + 0.5)``, at least 1 when the fraction is
  above 0. Sorting first makes the split independent of the datalist's order; the legacy RandomState
  stream is fixed by numpy, so a seed gives the same split on every machine and version.
* **Split file** (``data.split_file``, JSON relative to ``data.root``): ``{"train": [...], "val": [...],
  "test": [...]}`` of case ids or image paths; cases it does not name are unused.
* **BTCV**: the published split (``data.btcv_split``): its test list is ``test``; ``val`` is carved out of
  its train list with the seeded rule (``data.val_fraction``), so the test cases never select a model
  (the official code selected and reported on the same 12 cases).
* ``split="all"``: every labelled case (to evaluate a model on a separate folder).

Only labelled cases are split, so unlabelled images (which serve pre-training only) never move a case.
Fine-tuning may keep a seeded subset of the train split (``data.label_fraction``, ``data.max_labelled``;
:mod:`selfmedmae.data.selection`); pre-training's images are :func:`pretrain_cases`.
:func:`write_splits` records which case fell where as ``<run dir>/splits.json``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from selfmedmae.data.decathlon import Datalist, read_json, resolve
from selfmedmae.data.selection import folder_images, label_subset, pretrain_items, selection_problems, subset_rule
from selfmedmae.errors import UserError

SPLITS = ("train", "val", "test")
SPLITS_SCHEMA = 2  # 1: before 2D and 3D shared it (2D files had no rule, root or images)


def read_datalist(data_cfg, reader: Callable[[Any], Datalist]) -> Datalist:
    """The cases of ``data_cfg`` (a DataConfig) for the 3D formats, read by ``reader`` (the format's, from
    :data:`selfmedmae.data.formats.FORMATS`); problems are collected, not raised. Commands read it once,
    through :func:`selfmedmae.data.build`."""
    out = reader(data_cfg)
    if data_cfg.labels:  # the config's class names win over the file's
        out.labels = list(data_cfg.labels)
    return out


def read_extra_unlabelled(data_cfg) -> Optional[Datalist]:
    """``data.extra_unlabelled`` (relative to ``data.root``): more images for pre-training only.

    An MSD-style ``*.json`` (every image it lists: training, validation and test; labels ignored), a
    ``*.csv`` with ``data.image_column``, a folder of volumes or a glob such as ``extra/**/*.nii.gz``
    (hidden files such as macOS ``._*`` junk are skipped). ``None`` when unset.
    """
    if not data_cfg.extra_unlabelled:
        return None
    path = Path(data_cfg.root) / data_cfg.extra_unlabelled
    if path.suffix == ".json":
        from selfmedmae.data.decathlon import read_msd

        out = read_msd(path.parent, path.name)
    elif path.suffix == ".csv":
        from selfmedmae.data.csv_folder import read_csv_folder

        out = read_csv_folder(path.parent, path.name, data_cfg.image_column, None, ["unused"])
    else:
        return folder_images(Path(data_cfg.root), data_cfg.extra_unlabelled)
    out.unlabelled = [{"id": c["id"], "image": c["image"]} for c in out.cases + out.unlabelled]
    out.cases = []
    return out


def _count(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, int(np.floor(n * fraction + 0.5)))


def seeded_split(ids: List[str], val_fraction: float, test_fraction: float, seed: int) -> Dict[str, List[str]]:
    """The documented rule above; each split's ids are returned sorted."""
    ids = sorted(ids)
    perm = np.random.RandomState(seed).permutation(len(ids))
    n_test, n_val = _count(len(ids), test_fraction), _count(len(ids), val_fraction)
    picked = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return {name: sorted(ids[i] for i in picked[name]) for name in SPLITS}


def _from_file(data_cfg, datalist: Datalist, problems: List[str]) -> Tuple[Dict[str, List[str]], set]:
    """The split file's ids per split, and the split names it lists (those must not be empty)."""
    path = Path(data_cfg.root) / data_cfg.split_file
    obj = read_json(path, problems)
    if obj is None:
        return {s: [] for s in SPLITS}, set()
    by_key = {}
    for case in datalist.cases:
        by_key[case["id"]] = case["id"]
        by_key[os.path.normpath(case["image"])] = case["id"]
    out, owner = {}, {}
    for name in obj:
        if name not in SPLITS:
            problems.append(f"{path}: unknown split {name!r} (expected {', '.join(SPLITS)})")
    for name in SPLITS:
        entries = obj.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            problems.append(f"{path}: '{name}' must be a list of case ids or image paths")
            entries = []
        out[name] = []
        for entry in entries:
            cid = by_key.get(entry) or by_key.get(resolve(Path(data_cfg.root), entry))
            if cid is None:
                problems.append(f"{path}: {name}: {entry!r} is not a labelled case of {datalist.source}")
            elif cid in owner:
                problems.append(f"{path}: case {cid!r} is in both '{owner[cid]}' and '{name}'")
            else:
                owner[cid] = name
                out[name].append(cid)
    return out, {s for s in SPLITS if s in obj}


def split_ids(data_cfg, datalist: Datalist, require: bool = True) -> Tuple[Dict[str, List[str]], List[str]]:
    """``({"train": ids, "val": ids, "test": ids}, problems)`` over the labelled cases; with ``require``
    the problems include every empty split (pre-training needs none of them)."""
    problems: List[str] = selection_problems(data_cfg)
    ids = [c["id"] for c in datalist.cases]
    required = {"train"}
    if data_cfg.split_file:
        splits, listed_splits = _from_file(data_cfg, datalist, problems)
        where = str(Path(data_cfg.root) / data_cfg.split_file)
        required |= listed_splits
    elif datalist.published is not None:
        listed = set(ids)
        pool = [c for c in datalist.published["train"] if c in listed]
        splits = seeded_split(pool, data_cfg.val_fraction, 0.0, data_cfg.split_seed)
        splits["test"] = [c for c in datalist.published["test"] if c in listed]
        where = f"{datalist.source} ({data_cfg.format} split {data_cfg.btcv_split!r})"
        required |= {"test"} | ({"val"} if data_cfg.val_fraction > 0 else set())
    else:
        splits = seeded_split(ids, data_cfg.val_fraction, data_cfg.test_fraction, data_cfg.split_seed)
        where = f"{datalist.source} ({len(ids)} labelled cases, val_fraction={data_cfg.val_fraction}, " \
                f"test_fraction={data_cfg.test_fraction})"
        required |= {s for s, f in (("val", data_cfg.val_fraction), ("test", data_cfg.test_fraction)) if f > 0}
    for name in SPLITS:
        if require and name in required and not splits[name]:
            problems.append(f"{where}: split '{name}' is empty")
    return splits, problems


def split_cases(data_cfg, datalist: Datalist) -> Dict[str, List[dict]]:
    """``{"train", "val", "test", "all", "train_pool"}`` -> case dicts. ``train`` is fine-tuning's subset of
    ``train_pool`` (the whole train split unless ``data.label_fraction`` / ``data.max_labelled`` are set).
    Raises UserError listing every problem."""
    ids, problems = split_ids(data_cfg, datalist)
    problems = datalist.problems + problems
    if problems:
        raise UserError("\n".join(problems))
    by_id = {c["id"]: c for c in datalist.cases}
    out = {name: [by_id[i] for i in ids[name]] for name in SPLITS}
    out["train_pool"] = out["train"]
    kept = label_subset(ids["train"], data_cfg.label_fraction, data_cfg.max_labelled, data_cfg.label_seed)
    out["train"] = [by_id[i] for i in kept]
    out["all"] = list(datalist.cases)
    return out


def pretrain_cases(data_cfg, datalist: Datalist, extra: Optional[Datalist]) -> Tuple[List[dict], List[dict]]:
    """(labelled cases, unlabelled images) of pre-training (:func:`selection.pretrain_items`): no labelled
    case is needed. ``datalist`` / ``extra``: already read (else read here). Raises UserError listing every
    problem, or when there is no image at all."""
    ids, problems = split_ids(data_cfg, datalist, require=False)
    problems = datalist.problems + (extra.problems if extra is not None else []) + problems
    if problems:
        raise UserError("\n".join(problems))
    labelled, unlabelled = pretrain_items(data_cfg, datalist, ids, extra)
    if not labelled and not unlabelled:
        raise UserError(f"{datalist.source}: no images for pre-training (no labelled train case, no unlabelled "
                        "image; data.extra_unlabelled can add a folder of images)")
    return labelled, unlabelled


def rule_text(data_cfg) -> str:
    if data_cfg.split_file:
        return f"split file {Path(data_cfg.root) / data_cfg.split_file}"
    if data_cfg.format == "btcv":
        return (f"published BTCV split {data_cfg.btcv_split!r} (test); val = seeded rule on its train cases "
                f"(val_fraction={data_cfg.val_fraction}, split_seed={data_cfg.split_seed})")
    return (f"seeded rule: sorted ids, numpy RandomState({data_cfg.split_seed}).permutation, first "
            f"test_fraction={data_cfg.test_fraction} test, next val_fraction={data_cfg.val_fraction} val")


def splits_record(rule: str, root: str, parts: Dict[str, List[Tuple[str, str]]], subset: Optional[str] = None,
                  **extra) -> dict:
    """The ``splits.json`` of every format, 2D and 3D: ``rule`` (how the split was made), ``root``, the ids of
    ``train`` / ``val`` / ``test`` (``train`` is what fine-tuning trains on), with a label subset also
    ``train_pool`` (the whole train split) and ``label_subset`` (the rule), ``images`` (id -> image path), and
    ``extra`` (pre-training: ``pretrain_on``, ``pretrain_labelled``, ``pretrain_unlabelled``).
    ``parts`` maps a split name to its (id, image path) pairs."""
    record: dict = {"schema": SPLITS_SCHEMA, "rule": rule, "root": root}
    for name in SPLITS:
        record[name] = [i for i, _ in parts.get(name, [])]
    if subset is not None:
        record["train_pool"] = [i for i, _ in parts.get("train_pool", [])]
        record["label_subset"] = subset
    record.update(extra)
    record["images"] = {i: path for name in SPLITS + ("train_pool",) for i, path in parts.get(name, [])}
    return record


def save_splits(run_dir: str | os.PathLike, record: dict) -> Path:
    """``<run_dir>/splits.json`` (through a temporary file: a reader never sees half of it)."""
    path = Path(run_dir) / "splits.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def write_splits(run_dir: str | os.PathLike, data_cfg, datalist: Datalist, extra: Optional[Datalist],
                 stage: str = "finetune") -> Path:
    """Write ``<run_dir>/splits.json`` of a 3D dataset (:func:`splits_record`). Pre-training records
    ``pretrain_labelled`` and ``pretrain_unlabelled``: every image it sees."""
    more: dict = {}
    if stage == "pretrain":
        labelled, unlabelled = pretrain_cases(data_cfg, datalist, extra)
        ids, _ = split_ids(data_cfg, datalist, require=False)
        by_id = {c["id"]: c for c in datalist.cases}
        splits = {name: [by_id[i] for i in ids[name]] for name in SPLITS}
        more = {"pretrain_on": str(data_cfg.pretrain_on), "pretrain_labelled": [c["id"] for c in labelled],
                "pretrain_unlabelled": [c["image"] for c in unlabelled]}
    else:
        splits = split_cases(data_cfg, datalist)
    parts = {name: [(c["id"], c["image"]) for c in cases] for name, cases in splits.items()}
    subset = subset_rule(data_cfg) if stage != "pretrain" else None
    return save_splits(run_dir, splits_record(rule_text(data_cfg), str(data_cfg.root), parts, subset, **more))
