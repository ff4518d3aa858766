"""The user's own 3D data listed in a CSV: one row per case, an image path and a label-map path.

``data.csv`` (relative to ``data.root``) has a header row; ``data.image_column`` names the image column,
``data.label_column`` the label-map column (``null`` or an empty cell: the case is unlabelled, usable for
pre-training only). An optional ``id`` column names the cases; otherwise the image file name is the id.
Paths resolve against the CSV's own folder (the project's one path rule; a CSV in ``data.root`` itself
resolves from ``data.root``), absolute paths stay as they are. Class names come from ``data.labels`` (background first), since a CSV
cannot declare them. An MSD-style ``dataset.json`` is read by :mod:`selfmedmae.data.decathlon` instead.

Example::

    image,label
    scans/case01.nii.gz,masks/case01.nii.gz
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List, Optional

from selfmedmae.data.decathlon import Datalist, case_id, check_unique, resolve
from selfmedmae.data.findings import duplicated_columns
from selfmedmae.data.paths import missing_file


def read_csv_rows(path: Path, problems: List[str], root: Optional[str] = None) -> Optional[List[dict]]:
    """The rows as dicts keyed by header (cells stripped), or ``None`` with the reason in ``problems``;
    ``root``: the ``data.root`` the path was resolved against, for the message."""
    if not path.is_file():
        problems.append(missing_file(path, "data.csv", root))
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{path}: unreadable CSV ({exc.__class__.__name__}: {exc})")
        return None
    table = [row for row in table if any(cell.strip() for cell in row)]
    if len(table) < 2:
        problems.append(f"{path}: no data rows (a header line and one row per case are expected)")
        return None
    header = [h.strip() for h in table[0]]
    twice = duplicated_columns(path, header)
    if twice:
        problems += twice
        return None
    rows = []
    for line, row in enumerate(table[1:], start=2):
        # A trailing empty cell (trailing comma) is tolerated; any other width mismatch is malformed.
        if len(row) != len(header) and not (len(row) == len(header) + 1 and not row[-1].strip()):
            problems.append(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
            continue
        rows.append({"_line": line, **{h: c.strip() for h, c in zip(header, row)}})
    return rows


def read_csv_folder(root: str | os.PathLike, csv_file: Optional[str], image_column: str = "image",
                    label_column: Optional[str] = "label", labels: Optional[List[str]] = None) -> Datalist:
    """Read a 3D segmentation CSV into a :class:`Datalist` (problems collected, never raised)."""
    root = Path(root)
    out = Datalist(source=str(root / (csv_file or "")), labels=list(labels) if labels else None)
    if not csv_file:
        out.problems.append("data.csv: not set; name the CSV of image / label paths (relative to data.root)")
        return out
    path = root / csv_file
    rows = read_csv_rows(path, out.problems, str(root))
    if rows is None:
        return out
    columns = set(rows[0]) if rows else set()
    for col in [image_column] + ([label_column] if label_column else []):
        if col not in columns:
            out.problems.append(f"{path}: no column {col!r} (columns: {', '.join(sorted(columns - {'_line'}))})")
    if out.problems:
        return out
    for row in rows:
        if not row[image_column]:
            out.problems.append(f"{path}: line {row['_line']}: empty {image_column!r}")
            continue
        base = path.parent  # relative to the CSV that names them
        item = {"id": row.get("id") or case_id(row[image_column]), "image": resolve(base, row[image_column])}
        if label_column and row[label_column]:
            out.cases.append({**item, "label": resolve(base, row[label_column])})
        else:
            out.unlabelled.append(item)
    check_unique(out.cases + out.unlabelled, path, out.problems)
    if out.cases and not out.labels:
        out.problems.append(f"{path}: data.labels is not set; list the class names, background first "
                            "(a CSV cannot declare them)")
    return out
