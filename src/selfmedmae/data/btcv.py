"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen CT): names, organs and published splits.

Files are ``img0001.nii.gz`` / ``label0001.nii.gz`` (30 labelled cases, ids 0001-0010 and 0021-0040), either
in MONAI's re-layout ``imagesTr/`` + ``labelsTr/`` or in the Synapse ``Training/img/`` + ``Training/label/``
layout. When ``data.dataset_json`` (e.g. the official code's ``transunet.json`` or UNETR's
``dataset_0.json``) exists under the root it is the file index; otherwise the paths are built from the
case ids of the split, so nothing is ever globbed.

The split itself always comes from the package data ``resources/splits/btcv_<name>.json``:
``transunet`` (18 train / 12 test, the split the paper and the official code use) or ``unetr``
(24 / 6, MONAI's ``dataset_0.json``). Label ids and the 8 organs the paper reports follow
docs/own-data-3d.md §4 and the official ``btcv_8cls_idx`` (docs/official-code.md §2.4).
"""
from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Dict, List

from selfmedmae.data.decathlon import Datalist, read_msd
from selfmedmae.data.paths import missing_root

# Label value i (1..13) names ORGANS[i - 1]; 0 is background. Order as released.
ORGANS = (
    "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
)
SHORT_NAMES = ("spleen", "rkid", "lkid", "gall", "eso", "liver", "sto", "aorta", "IVC", "veins", "pancreas",
               "rad", "lad")  # as spelled in dataset_0.json
LABELS = ("background",) + ORGANS
# The 8 organs of the TransUNet protocol the paper reports (aorta, gallbladder, both kidneys, liver,
# pancreas, spleen, stomach), as label values.
PAPER_ORGANS = (1, 2, 3, 4, 6, 7, 8, 11)
SPLITS = ("transunet", "unetr")

# (image folder, label folder) layouts, tried in this order.
LAYOUTS = (("imagesTr", "labelsTr"), ("Training/img", "Training/label"),
           ("RawData/Training/img", "RawData/Training/label"))
_ID = re.compile(r"img(\d{4})")


def published_split(name: str = "transunet") -> Dict[str, List[str]]:
    """``{"train": [...], "test": [...]}`` of 4-digit case ids, in the published order."""
    if name not in SPLITS:
        raise ValueError(f"data.btcv_split: {name!r} is not one of {', '.join(SPLITS)}")
    text = resources.files("selfmedmae").joinpath(f"resources/splits/btcv_{name}.json").read_text()
    data = json.loads(text)
    return {"train": list(data["train"]), "test": list(data["test"])}


def btcv_id(image_path: str) -> str | None:
    """``.../img0005.nii.gz`` -> ``"0005"``; ``None`` for other names."""
    match = _ID.fullmatch(Path(image_path).name.split(".")[0])
    return match.group(1) if match else None


def image_name(cid: str) -> str:
    return f"img{cid}.nii.gz"


def label_name(cid: str) -> str:
    return f"label{cid}.nii.gz"


def _from_ids(root: Path, ids: List[str], out: Datalist) -> None:
    """Build paths from the case ids in the first layout whose image folder exists."""
    for img_dir, lab_dir in LAYOUTS:
        if (root / img_dir).is_dir():
            out.cases = [{"id": c, "image": os.path.join(root, img_dir, image_name(c)),
                          "label": os.path.join(root, lab_dir, label_name(c))} for c in ids]
            return
    out.problems.append(f"{out.source}: not found, and {root} has none of "
                        f"{', '.join(d for d, _ in LAYOUTS)} to find img00XX.nii.gz in")


def read_btcv(root: str | os.PathLike, dataset_json: str = "transunet.json", split: str = "transunet") -> Datalist:
    """The 30 labelled BTCV cases (ids as ``"0001"``) with the published split in ``published``."""
    root = Path(root)
    ids = published_split(split)
    wanted = ids["train"] + ids["test"]
    if (root / dataset_json).is_file():
        out = read_msd(root, dataset_json)
        out.unlabelled = []  # img0061-0080 are never used (the paper pre-trains on the train cases only)
        for item in out.cases:
            item["id"] = btcv_id(item["image"]) or item["id"]
        listed = {c["id"] for c in out.cases}
        absent = [c for c in wanted if c not in listed]
        if absent and not out.problems:
            out.warnings.append(f"{out.source}: {len(absent)} case(s) of the {split} split are not listed "
                                f"and are left out: {', '.join(absent)}")
        unused = sorted(listed - set(wanted))
        if unused:
            out.warnings.append(f"{out.source}: case(s) outside the {split} split, unused: {', '.join(unused)}")
    else:
        out = Datalist(source=str(root / dataset_json))
        if not root.is_dir():
            out.problems.append(missing_root(root))
            return out
        _from_ids(root, wanted, out)
        if not out.problems:
            out.warnings.append(f"{out.source}: not found; file paths built from the {split} split's case ids")
    out.labels = list(LABELS)
    out.channels = 1
    out.published = ids
    return out
