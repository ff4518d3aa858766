"""Medical Segmentation Decathlon datalists: ``dataset.json`` read exactly as released, for any task.

The MSD layout (Antonelli et al., 2022) is ``TaskNN_Name/dataset.json`` + ``imagesTr/``, ``labelsTr/``,
``imagesTs/``; ``training`` is a list of ``{"image", "label"}`` pairs, ``test`` a list of path strings (or
``{"image"}`` dicts, as MONAI also accepts), an optional ``validation`` list is shaped like ``training``.
Beyond MSD, an optional ``unlabelled`` (or ``unlabeled``) list, shaped like ``test``, names more images
without labels; like ``test`` they serve pre-training only (:mod:`selfmedmae.data.selection`).
Images are 3D NIfTI (one channel) or 4D with the channels on the last axis (BraTS, Prostate).

File lists come from the JSON only, never from globbing: the MSD archives hold macOS ``._*`` junk files
beside the real ones. Relative paths resolve against the folder of the ``dataset.json`` that lists them
(``data.root`` when the file sits there, as in every MSD task); ``./`` prefixes and absolute paths work. The list order of the JSON is kept (it is not sorted by MSD).

Every structural problem is collected as one ``"<file>: <problem>"`` line in :attr:`Datalist.problems`
so that ``check-data`` can list them all at once; :func:`read_msd` never raises for a bad JSON.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from selfmedmae.data.findings import Lines
from selfmedmae.data.paths import missing_file, missing_root
from selfmedmae.data.suffixes import VOLUME_SUFFIXES, strip_suffix

@dataclass
class Datalist:
    """The cases of one dataset, before any split.

    ``cases`` are labelled: ``{"id", "image", "label"}`` with resolved paths (str); ``unlabelled`` carry no
    ``label``. ``labels`` names the label values (index = value, 0 = background) when the source declares
    them. ``published`` is a format's own split by case id (BTCV), ``None`` otherwise.
    """

    source: str  # the file the list came from, for messages
    cases: List[dict] = field(default_factory=list)
    unlabelled: List[dict] = field(default_factory=list)
    labels: Optional[List[str]] = None
    channels: Optional[int] = None  # from the JSON's "modality" dict, when present
    published: Optional[Dict[str, List[str]]] = None
    problems: List[str] = field(default_factory=Lines)  # one line each, whatever they quote (findings.Lines)
    warnings: List[str] = field(default_factory=Lines)

    def __post_init__(self) -> None:
        self.problems, self.warnings = Lines(self.problems), Lines(self.warnings)


def case_id(path: str | os.PathLike) -> str:
    """``.../imagesTr/hippocampus_001.nii.gz`` -> ``hippocampus_001``."""
    name = Path(path).name
    stripped = strip_suffix(name, VOLUME_SUFFIXES)
    return stripped if stripped != name else Path(name).stem


def resolve(root: Path, item: str) -> str:
    """A datalist path relative to the dataset folder (``./x`` and absolute paths work)."""
    return os.path.normpath(os.path.join(str(root), item))


def read_json(path: Path, problems: List[str], key: str = "", root: Optional[str] = None) -> Optional[dict]:
    """The parsed JSON object, or ``None`` with the reason appended to ``problems`` (naming ``key`` and the
    ``data.root`` the path was resolved against, when given)."""
    if not path.is_file():
        problems.append(missing_file(path, key, root))
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: unreadable ({exc.__class__.__name__}: {exc})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: expected a JSON object at the top level, found {type(obj).__name__}")
        return None
    return obj


def parse_labels(meta: dict, path: Path, problems: List[str]) -> Optional[List[str]]:
    """``{"0": "background", "1": ...}`` -> ``["background", ...]``; the values must be 0..n-1."""
    labels = meta.get("labels")
    if labels is None:
        return None
    if not isinstance(labels, dict) or not labels:
        problems.append(f"{path}: 'labels' must be an object mapping label values to names")
        return None
    try:
        by_value = {int(k): str(v) for k, v in labels.items()}
    except ValueError:
        problems.append(f"{path}: 'labels' keys must be integers, found {sorted(labels)}")
        return None
    if sorted(by_value) != list(range(len(by_value))):
        problems.append(f"{path}: 'labels' values must be 0..{len(by_value) - 1}, found {sorted(by_value)}")
        return None
    return [by_value[i] for i in range(len(by_value))]


def parse_items(meta: dict, key: str, path: Path, root: Path, labelled: bool, problems: List[str]) -> List[dict]:
    """The entries of one list (``training`` / ``validation`` / ``test``) as case dicts."""
    entries = meta.get(key, [])
    if not isinstance(entries, list):
        problems.append(f"{path}: '{key}' must be a list, found {type(entries).__name__}")
        return []
    items = []
    for i, entry in enumerate(entries):
        where = f"{path}: {key}[{i}]"
        if isinstance(entry, str) and not labelled:
            entry = {"image": entry}
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object with 'image'{' and label' if labelled else ''}")
            continue
        keys = ("image", "label") if labelled else ("image",)
        missing = [k for k in keys if not isinstance(entry.get(k), str) or not entry.get(k)]
        if missing:
            problems.append(f"{where}: missing or non-string {', '.join(repr(k) for k in missing)}")
            continue
        item = {"id": case_id(entry["image"]), **{k: resolve(root, entry[k]) for k in keys}}
        items.append(item)
    return items


def check_unique(items: List[dict], path: Path, problems: List[str]) -> None:
    seen: Dict[str, str] = {}
    for item in items:
        if item["id"] in seen:
            problems.append(f"{path}: case {item['id']!r} listed twice ({seen[item['id']]} and {item['image']})")
        seen[item["id"]] = item["image"]


def read_msd(root: str | os.PathLike, dataset_json: str = "dataset.json") -> Datalist:
    """Read an MSD-style datalist. ``training`` and ``validation`` are labelled; ``test`` and ``unlabelled``
    are not."""
    root = Path(root)
    path = root / dataset_json
    out = Datalist(source=str(path))
    if not root.is_dir():
        out.problems.append(missing_root(root))
        return out
    meta = read_json(path, out.problems, "data.dataset_json", str(root))
    if meta is None:
        return out
    if "training" not in meta:
        out.problems.append(f"{path}: no 'training' list")
    out.labels = parse_labels(meta, path, out.problems)
    modality = meta.get("modality")
    if isinstance(modality, dict) and modality:
        out.channels = len(modality)
    base = path.parent  # the path rule: entries are relative to the file that names them
    out.cases = parse_items(meta, "training", path, base, True, out.problems)
    out.cases += parse_items(meta, "validation", path, base, True, out.problems)
    out.unlabelled = parse_items(meta, "test", path, base, False, out.problems)
    for key in ("unlabelled", "unlabeled"):
        out.unlabelled += parse_items(meta, key, path, base, False, out.problems)
    check_unique(out.cases + out.unlabelled, path, out.problems)
    return out
