"""The user's own 2D classification data: a CSV of image paths and one 0/1 column per class.

``data.csv`` (relative to ``data.root``) has a header row; ``data.image_column`` holds the image path
(relative to the CSV's folder, or absolute), ``data.class_columns`` the classes. When it is not set the
classes are ``data.labels`` if every one of them is a column, else every column other than the image,
``split`` and ``data.group_column`` columns whose cells are all 0/1 (so a config started from a
ChestX-ray14 one does not ask for its 14 findings; blank cells allowed). With no class column the images are
unlabelled (pre-training only); fine-tuning then stops with a message naming the CSV and its columns. A row
whose class cells are all blank is an unlabelled image: in no split, seen by pre-training only (its split
and group cells are not read); a row with some class cells blank and others filled is a problem. Any
format PIL reads (PNG, JPEG, TIFF, BMP; 8 or 16 bit) goes through the same preprocessing as ChestX-ray14
(``transforms_2d.py``).

Splits: a ``split`` column (train / val / test) when there is one; otherwise the project's seeded rule
(``data.test_fraction``, ``data.val_fraction``, ``data.split_seed``; :func:`splits.seeded_split`) over the
rows, or over the values of ``data.group_column`` (e.g. a patient id) so that a group never straddles two
splits. With a ``split`` column and ``data.group_column`` set, a group in two splits is a problem; without
``data.group_column`` nothing tells which rows belong together, so it cannot be checked. ``all`` addresses
every labelled row. Example::

    image,effusion,nodule,split
    imgs/a.png,1,0,train
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from selfmedmae.data.check_2d import class_balance_warnings, config_problems_2d, inspect_images, label_counts
from selfmedmae.data.dataset_2d import Record2D, raise_if_problems, split_groups
from selfmedmae.data.findings import DataReport, duplicated_columns
from selfmedmae.data.paths import missing_file, missing_listed, shown
from selfmedmae.errors import UserError

SPLITS = ("train", "val", "test", "all")
SPLIT_COLUMN = "split"
_TRUE, _FALSE = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no"}


@dataclass
class Csv2DScan:
    csv_path: Optional[Path] = None
    classes: List[str] = field(default_factory=list)
    splits: Dict[str, List[Record2D]] = field(default_factory=dict)
    unlabelled: List[Record2D] = field(default_factory=list)  # rows whose class cells are all blank: pre-training
    report: DataReport = field(default_factory=DataReport)
    split_rule: str = ""


def _read_table(path: Path, report: DataReport):
    """(header, [(line, {column: cell})]) with cells stripped; None on an unreadable or malformed file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            table = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.problems.append(f"{path}: unreadable CSV ({type(exc).__name__}: {exc})")
        return None
    table = [(n, [c.strip() for c in row]) for n, row in table if any(c.strip() for c in row)]
    if len(table) < 2:
        report.problems.append(f"{path}: no data rows (a header line and one row per image are expected)")
        return None
    header = table[0][1]
    if header and header[-1] == "":
        header = header[:-1]  # trailing comma
    twice = duplicated_columns(path, header)
    if twice:
        report.problems += twice
        return None
    rows = []
    for n, row in table[1:]:
        if len(row) == len(header) + 1 and row[-1] == "":
            row = row[:-1]
        if len(row) != len(header):
            report.problems.append(f"{path}: line {n}: {len(row)} fields, the header has {len(header)}")
            continue
        rows.append((n, dict(zip(header, row))))
    return header, rows


def _classes(data_cfg, header: List[str], rows, path: Path, report: DataReport) -> List[str]:
    """``class_columns``; else ``labels`` when all are columns; else the columns holding only 0/1 values."""
    if data_cfg.class_columns:
        return list(data_cfg.class_columns)
    if data_cfg.labels and all(name in header for name in data_cfg.labels):
        return list(data_cfg.labels)
    skip = {str(data_cfg.image_column), SPLIT_COLUMN, str(data_cfg.group_column or "")}
    found = [h for h in header if h not in skip and h and any(row[h] for _, row in rows)
             and all(row[h].lower() in _TRUE | _FALSE | {""} for _, row in rows)]
    if data_cfg.labels:
        names = list(data_cfg.labels)
        report.warnings.append(f"{path}: data.labels ({len(names)} names, e.g. {names[0]!r}) are not all "
                               f"columns; the classes are the 0/1 columns {found or 'none'} "
                               "(set data.class_columns to choose)")
    return found


def scan(data_cfg) -> Csv2DScan:
    """Read the CSV, resolve the paths, parse the labels and split: every structural problem in the report."""
    out = Csv2DScan()
    rep = out.report
    config_problems_2d(data_cfg, rep)
    if not data_cfg.csv:
        rep.problems.append("data.csv: not set; name the CSV of image paths and class columns (relative to data.root)")
        return out
    path = out.csv_path = Path(str(data_cfg.root)) / str(data_cfg.csv)
    if not path.is_file():
        rep.problems.append(missing_file(path, "data.csv", data_cfg.root))
        return out
    table = _read_table(path, rep)
    if table is None:
        return out
    header, rows = table
    out.classes = classes = _classes(data_cfg, header, rows, path, rep)
    image_col, group_col = str(data_cfg.image_column), data_cfg.group_column
    missing = [c for c in [image_col] + classes + ([str(group_col)] if group_col else []) if c not in header]
    for col in missing:
        rep.problems.append(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    if missing:
        return out
    records, split_of, seen = [], {}, {}
    for n, row in rows:
        unlabelled = bool(classes) and not any(row[c] for c in classes)  # in no split: pre-training only
        rec = _record(path, n, row, image_col, [] if unlabelled else classes, None if unlabelled else group_col,
                      rep, str(data_cfg.root))
        value = row[SPLIT_COLUMN].lower() if SPLIT_COLUMN in header and not unlabelled else None
        if value is not None and value not in ("train", "val", "test"):
            rep.problems.append(f"{path}: line {n}: split {row[SPLIT_COLUMN]!r} is not train, val or test")
            rec = None
        if rec is None:
            continue
        if rec.path in seen:
            rep.problems.append(f"{path}: line {n}: {rec.id} is also on line {seen[rec.path]}")
            continue
        seen[rec.path] = n
        if unlabelled:
            out.unlabelled.append(rec)
            continue
        split_of[rec.path] = value
        records.append(rec)
    if SPLIT_COLUMN in header:
        out.split_rule = f"from the {SPLIT_COLUMN!r} column"
        out.splits = {s: [r for r in records if split_of[r.path] == s] for s in ("train", "val", "test")}
        if group_col:
            _straddling_groups(out.splits, str(group_col), path, rep)
    else:
        parts = split_groups([r.group for r in records], float(data_cfg.val_fraction),
                             float(data_cfg.test_fraction), int(data_cfg.split_seed))
        unit = f"values of {group_col!r}" if group_col else "rows"
        out.split_rule = (f"seeded: test {data_cfg.test_fraction}, val {data_cfg.val_fraction} of the {unit}, "
                          f"seed {data_cfg.split_seed}")
        out.splits = {s: [r for r in records if r.group in parts[s]] for s in ("train", "val", "test")}
    out.splits["all"] = records
    for s in ("train", "val", "test"):
        if records and not out.splits[s]:
            rep.problems.append(f"{path}: split {s!r} is empty ({out.split_rule})")
    return out


def _straddling_groups(splits: Dict[str, List[Record2D]], group_col: str, path: Path, rep: DataReport) -> None:
    """A problem for each value of ``group_col`` (a patient) that the ``split`` column puts in more than one
    split: its images would be trained on and evaluated on."""
    where: Dict[str, List[str]] = {}
    for name in ("train", "val", "test"):
        for group in sorted({r.group for r in splits[name]}):
            where.setdefault(group, []).append(name)
    for group, names in sorted(where.items()):
        if len(names) > 1:
            rep.problems.append(f"{path}: {group_col} {group!r} is in the splits {' and '.join(names)} (its "
                                f"{SPLIT_COLUMN!r} cells differ); one {group_col} must stay in one split")


def _record(path: Path, n: int, row: dict, image_col: str, classes: List[str], group_col, rep: DataReport,
            root: str):
    """One row as a Record2D, or None with its problems in ``rep``."""
    rel = row[image_col]
    if not rel:
        rep.problems.append(f"{path}: line {n}: empty {image_col!r}")
        return None
    image = Path(rel) if os.path.isabs(rel) else path.parent / rel
    ok = True
    if not image.is_file():
        rep.problems.append(missing_listed(image, f"listed in {shown(path)} line {n}", "image file", root))
        ok = False
    label = np.zeros(len(classes), np.float32) if classes else None
    for k, col in enumerate(classes):
        value = row[col].lower()
        if value in _TRUE:
            label[k] = 1.0
        elif not value:
            rep.problems.append(f"{path}: line {n}: column {col!r} is blank but other class cells of the row are "
                                "filled; give every class a 0 or 1, or leave them all blank for an unlabelled image")
            ok = False
        elif value not in _FALSE:
            rep.problems.append(f"{path}: line {n}: column {col!r}: {row[col]!r} is not 0 or 1")
            ok = False
    if group_col and not row[str(group_col)]:
        rep.problems.append(f"{path}: line {n}: empty {group_col!r}")
        ok = False
    group = row[str(group_col)] if group_col else rel
    return Record2D(id=rel, path=str(image), label=label, group=group) if ok else None


def class_names(data_cfg, scanned=None) -> List[str]:
    """The class columns, in the order of the label vectors; raises UserError when the CSV is unusable.
    ``scanned``: the CSV's scan, if made."""
    sc = scanned if scanned is not None else scan(data_cfg)
    raise_if_problems(sc.report)
    if not sc.classes:
        raise UserError(f"{sc.csv_path}: no class column: no column other than {data_cfg.image_column!r}, "
                        f"'split' and data.group_column holds only 0/1 values; set data.class_columns to the "
                        f"label columns")
    return sc.classes


def check(data_cfg, scanned=None, stage: str = "finetune") -> DataReport:
    """Every problem of a 2D CSV dataset (one line each, naming the file), or a summary of it. Fine-tuning
    (any ``stage`` but ``pretrain``) needs a labelled row."""
    sc = scanned if scanned is not None else scan(data_cfg)
    rep = DataReport(list(sc.report.problems), list(sc.report.warnings), list(sc.report.summary))
    paths = sorted({r.path for r in sc.splits.get("all", []) + sc.unlabelled})
    seen = inspect_images(paths, rep, crop_size=int(data_cfg.crop_size))
    if stage != "pretrain" and sc.unlabelled and not sc.splits.get("all"):
        rep.problems.append(f"{sc.csv_path}: no labelled row (every row's class cells are blank); fine-tuning "
                            "needs rows with a 0 or 1 in every class column")
    if rep.problems:
        return rep
    s = sc.splits
    class_balance_warnings(s, sc.classes, str(sc.csv_path), rep)
    what = f"{len(sc.classes)} classes ({', '.join(sc.classes)})" if sc.classes else "no class columns (unlabelled)"
    blank = f", {len(sc.unlabelled)} unlabelled row(s) (class cells blank: pre-training only)" if sc.unlabelled else ""
    rep.summary.append(f"2D CSV {sc.csv_path}: {len(s['all'])} images, {what}{blank}")
    rep.summary.append(f"splits: train {len(s['train'])}, val {len(s['val'])}, test {len(s['test'])} ({sc.split_rule})")
    if sc.classes:
        every = str(data_cfg.pretrain_on) == "all"
        labelled = len(s["all"]) if every else len(s["train"])
        rep.summary.append(f"pre-training sees {labelled + len(sc.unlabelled)} image(s): {labelled} labelled "
                           f"({'train + val + test' if every else 'train split'}) + {len(sc.unlabelled)} unlabelled "
                           f"(data.pretrain_on={data_cfg.pretrain_on})")
    rep.summary.append("images: " + ", ".join(f"{k}: {n}" for k, n in sorted(seen.items())))
    if sc.classes:
        for k in ("train", "val", "test"):
            rep.summary.append(f"{k} labels: {label_counts(s[k], sc.classes)}")
    return rep
