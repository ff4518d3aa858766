"""NIH ChestX-ray14 in its release layout (docs/own-data-2d.md §2).

    <root>/images_001/images/00000001_000.png ... (Kaggle layout) or <root>/images/*.png (NIH box layout)
    <root>/Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv; ``data.csv`` names another)
    <root>/train_val_list.txt, <root>/test_list.txt  (one file name per line)

* PNGs are indexed recursively by file name, whatever folder holds them; two files with one name is an error.
* The CSV is read by column position with the csv module (copies differ in header spelling, e.g.
  ``Patient Sex``, and in trailing commas): 0 Image Index, 1 Finding Labels, 3 Patient ID.
* ``Finding Labels`` is '|'-separated, spelled as released (``Pleural_Thickening``); "No Finding" is the
  all-zero vector. Classes are ``data.labels`` (default: all 14, in the CheXNet order below).
* Splits: ``test`` = test_list.txt. Validation is carved out of train_val_list.txt by patient
  (``data.val_fraction`` of the patients, seeded by ``data.split_seed``, the project's rule in
  :func:`selfmedmae.data.splits.seeded_split`); the rest is ``train``. Models are never selected on the
  test list. ``train_val`` (train + val) and ``all`` (both lists) are also addressable.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from selfmedmae.data.check_2d import class_balance_warnings, config_problems_2d, inspect_images, label_counts
from selfmedmae.data.dataset_2d import Record2D, split_groups
from selfmedmae.data.findings import DataReport
from selfmedmae.data.paths import missing_file, missing_root

CXR14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
SPLITS = ("train", "val", "test", "train_val", "all")
_NAME = re.compile(r"^(\d{8})_\d{3}\.png$")
_MIN_FIELDS = 4  # Image Index, Finding Labels, Follow-up #, Patient ID


@dataclass
class Cxr14Scan:
    """What the release files say, before any image is decoded."""

    root: Path
    classes: List[str]
    csv_path: Optional[Path] = None
    splits: Dict[str, List[Record2D]] = field(default_factory=dict)  # train, val, test, train_val, all
    unlabelled: List[Record2D] = field(default_factory=list)  # none: every release image is labelled
    report: DataReport = field(default_factory=DataReport)
    split_rule: str = ("test_list.txt is test; val = the seeded rule over the patients of train_val_list.txt "
                       "(data.val_fraction, data.split_seed)")


def parse_labels(cell: str, classes) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """``'Atelectasis|Effusion'`` -> float32 [K] 0/1 over ``classes``; (None, problem) when malformed.
    Known findings outside ``classes`` (a subset chosen in the config) are ignored."""
    names = [t.strip() for t in cell.split("|")]
    if names == [NO_FINDING]:
        return np.zeros(len(classes), np.float32), None
    if "" in names:
        return None, f"empty label in Finding Labels {cell!r}"
    unknown = [t for t in names if t not in CXR14_LABELS]
    if unknown:
        return None, f"unknown label {unknown[0]!r} (labels are {', '.join(CXR14_LABELS)} or {NO_FINDING!r})"
    vec = np.zeros(len(classes), np.float32)
    for t in names:
        if t in classes:
            vec[classes.index(t)] = 1.0
    return vec, None


def read_data_entry(path: Path, classes, report: DataReport) -> Dict[str, Tuple[np.ndarray, str]]:
    """Rows of a Data_Entry csv: {file name: (label vector [K], patient id as 8 digits)}."""
    rows: Dict[str, Tuple[np.ndarray, str]] = {}
    bad = lambda line, msg: report.problems.append(f"{path}: line {line}: {msg}")  # noqa: E731
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:  # found by fuzzing: a binary or non-UTF-8 file
        report.problems.append(f"{path}: not a UTF-8 text CSV (byte {exc.start}: {exc.reason})")
        return rows
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        report.problems.append(f"{path}: unreadable CSV ({exc})")
        return rows
    for line, fields in enumerate(table, 1):
        fields = [x.strip() for x in fields]
        if not any(fields):
            continue
        if line == 1 and not fields[0].lower().endswith(".png"):  # the header (spellings vary)
            if len(fields) < _MIN_FIELDS:
                bad(line, f"header has {len(fields)} fields, expected at least {_MIN_FIELDS}")
            continue
        if len(fields) < _MIN_FIELDS:
            bad(line, f"{len(fields)} fields, expected at least {_MIN_FIELDS} "
                      "(Image Index, Finding Labels, Follow-up #, Patient ID)")
            continue
        name, cell, pid = fields[0], fields[1], fields[3]
        vec, problem = parse_labels(cell, classes)
        if problem:
            bad(line, f"{name}: {problem}")
            continue
        if not pid.isdigit():
            bad(line, f"{name}: Patient ID {pid!r} is not a number")
            continue
        m = _NAME.match(name)
        if m and int(m.group(1)) != int(pid):
            bad(line, f"{name}: Patient ID {pid} does not match the file name")
            continue
        if name in rows:
            bad(line, f"{name}: second row for the same image")
            continue
        rows[name] = (vec, f"{int(pid):08d}")
    if not rows and not report.problems:
        report.problems.append(f"{path}: no data rows")
    return rows


def read_list(path: Path, report: DataReport) -> List[str]:
    """File names of a split list (first token of each line; blank lines skipped)."""
    names, seen = [], set()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        report.problems.append(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})")
        return names
    for i, line in enumerate(text.splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        if tok[0] in seen:
            report.problems.append(f"{path}: line {i}: {tok[0]} listed twice")
            continue
        seen.add(tok[0])
        names.append(tok[0])
    return names


def index_pngs(root: Path, report: DataReport) -> Dict[str, Path]:
    """{file name: path} of every PNG under root (any depth); macOS '._*' files are skipped."""
    found: Dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() != ".png" or path.name.startswith("._") or not path.is_file():
            continue
        if path.name in found:
            report.problems.append(f"{path}: duplicate file name, also at {found[path.name]}")
            continue
        found[path.name] = path
    return found


def _find_csv(root: Path, data_cfg, report: DataReport) -> Optional[Path]:
    if data_cfg.csv:
        path = root / str(data_cfg.csv)
        if not path.is_file():
            report.problems.append(missing_file(path, "data.csv: the Data_Entry csv", data_cfg.root))
            return None
        return path
    found = sorted(root.glob("Data_Entry_2017*.csv"))
    if len(found) != 1:
        what = "no Data_Entry_2017*.csv" if not found else f"{len(found)} Data_Entry csv files; set data.csv"
        report.problems.append(f"{root}: {what}")
        return None
    return found[0]


def class_names(data_cfg, scanned=None) -> List[str]:
    """``data.labels`` (a subset of the 14, in the order given) or all 14 in the CheXNet order (from the
    config alone: ``scanned`` is accepted for the same call as ``csv_2d.class_names``)."""
    return list(data_cfg.labels) if data_cfg.labels else list(CXR14_LABELS)


def _config_problems(data_cfg, report: DataReport) -> List[str]:
    classes = class_names(data_cfg)
    for name in classes:
        if name not in CXR14_LABELS:
            report.problems.append(f"data.labels: {name!r} is not a ChestX-ray14 label ({', '.join(CXR14_LABELS)})")
    config_problems_2d(data_cfg, report)
    return classes


def scan(data_cfg) -> Cxr14Scan:
    """Read the CSV and lists, index the PNGs, carve validation: every structural problem in the report."""
    root = Path(str(data_cfg.root))
    out = Cxr14Scan(root=root, classes=[])
    rep = out.report
    out.classes = _config_problems(data_cfg, rep)
    if not root.is_dir():
        rep.problems.append(missing_root(root))
        return out
    out.csv_path = _find_csv(root, data_cfg, rep)
    rows = read_data_entry(out.csv_path, out.classes, rep) if out.csv_path else {}
    pngs = index_pngs(root, rep)
    lists: Dict[str, List[str]] = {}
    for split, fname in LISTS.items():
        path = root / fname
        if not path.is_file():
            rep.problems.append(f"{path}: split list not found")
        lists[split] = read_list(path, rep) if path.is_file() else []
    records: Dict[str, List[Record2D]] = {}
    for split, names in lists.items():
        path, recs = root / LISTS[split], []
        for name in names:
            if name not in pngs:
                rep.problems.append(f"{name}: listed in {path} but no such PNG under {root}")
            elif out.csv_path and name not in rows:
                rep.problems.append(f"{name}: listed in {path} but has no row in {out.csv_path}")
            elif name in rows:
                vec, patient = rows[name]
                recs.append(Record2D(id=name, path=str(pngs[name]), label=vec, group=patient))
        records[split] = recs
    _cross_list_problems(root, lists, records, rep)
    unlisted = len(set(pngs) - set(lists["train_val"]) - set(lists["test"]))
    if unlisted:
        rep.warnings.append(f"{root}: {unlisted} PNG file(s) are in neither {LISTS['train_val']} nor "
                            f"{LISTS['test']} (not used)")
    parts = split_groups([r.group for r in records["train_val"]], float(data_cfg.val_fraction), 0.0,
                         int(data_cfg.split_seed))
    out.splits = {
        "train": [r for r in records["train_val"] if r.group in parts["train"]],
        "val": [r for r in records["train_val"] if r.group in parts["val"]],
        "test": records["test"],
    }
    out.splits["train_val"] = records["train_val"]
    out.splits["all"] = records["train_val"] + records["test"]
    for split, where in (("train", "train_val"), ("val", "train_val"), ("test", "test")):
        if not out.splits[split] and (root / LISTS[where]).is_file():
            why = f" (data.val_fraction={data_cfg.val_fraction} of the train_val patients)" if split != "test" else ""
            rep.problems.append(f"{root / LISTS[where]}: split {split!r} is empty{why}")
    return out


def _cross_list_problems(root: Path, lists, records, rep: DataReport) -> None:
    test_path = root / LISTS["test"]
    for name in sorted(set(lists["train_val"]) & set(lists["test"])):
        rep.problems.append(f"{name}: in both {root / LISTS['train_val']} and {test_path}")
    train_patients = {r.group for r in records["train_val"]}
    for patient in sorted({r.group for r in records["test"]} & train_patients):
        rep.problems.append(f"{test_path}: patient {patient} also has images in {LISTS['train_val']} "
                            "(the lists must be patient-disjoint)")


def check(data_cfg, scanned=None, stage: str = "finetune") -> DataReport:
    """Every problem of a ChestX-ray14 folder (one line each, naming the file), or a summary of it (the same
    for every ``stage``)."""
    sc = scanned if scanned is not None else scan(data_cfg)
    rep = DataReport(list(sc.report.problems), list(sc.report.warnings), list(sc.report.summary))
    seen = inspect_images(sorted({r.path for r in sc.splits.get("all", [])}), rep, crop_size=int(data_cfg.crop_size))
    if rep.problems:
        return rep
    s = sc.splits
    class_balance_warnings(s, sc.classes, str(sc.root), rep)
    rep.summary.append(f"ChestX-ray14 at {sc.root}: {len(s['all'])} images of "
                       f"{len({r.group for r in s['all']})} patients, labels from {sc.csv_path.name}")
    rep.summary.append(
        "splits: " + ", ".join(f"{k} {len(s[k])} images / {len({r.group for r in s[k]})} patients"
                               for k in ("train", "val", "test"))
        + f" (val = {data_cfg.val_fraction} of the train_val patients, seed {data_cfg.split_seed})")
    rep.summary.append("images: " + ", ".join(f"{k}: {n}" for k, n in sorted(seen.items())))
    rep.summary.append(f"preprocessing: {'histogram equalisation, ' if data_cfg.hist_eq else ''}resize "
                       f"{data_cfg.image_size}, crop {data_cfg.crop_size} -> tensors [{data_cfg.in_chans}, "
                       f"{data_cfg.crop_size}, {data_cfg.crop_size}], {len(sc.classes)} classes")
    for k in ("train", "val", "test"):
        rep.summary.append(f"{k} labels: {label_counts(s[k], sc.classes, NO_FINDING)}")
    return rep
