"""``selfmedmae init-config {2d,3d} --data PATH --out FILE``: starting configs for a user's folder, from a scan.

Writes ``FILE`` (the data and model sections the scan suggests) and, on top of it through ``_base_``,
``<stem>_pretrain.yaml`` and ``<stem>_finetune.yaml`` with the paper's recipe (run folders
``runs/<stem>/pretrain`` and ``runs/<stem>/finetune``; fine-tuning starts from that MAE).

3D: ``PATH`` is an MSD ``dataset.json`` (or a folder holding one), a CSV of image / label paths, or a
folder of NIfTI images and label maps (``images/`` + ``labels/``, ``imagesTr/`` + ``labelsTr/``, ...;
paired by file name). A bare folder gets a CSV of its cases written beside the config
(``<config stem>_cases.csv``). 2D: a CSV of image paths and 0/1 class columns (or a folder holding one),
or a folder of images (a CSV listing them, unlabelled, is written beside the config).

The scan reads a few files (NIfTI headers, a few label maps, a few images) and suggests the channels,
labels, spacing, intensity scaling, crop and patch size. Nothing existing is overwritten.
"""
from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path
from typing import Optional

from selfmedmae.data.survey import Scan, _rel, scan_2d, scan_3d
from selfmedmae.errors import UserError


def _yaml(value: object) -> str:
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_./][A-Za-z0-9_./ -]*", value) and value not in (
            "null", "true", "false", "yes", "no", "on", "off") and not re.fullmatch(r"[\d.eE+-]+", value):
        return value
    return json.dumps(value)


def render(kind: str, data_arg: str, scan: Scan) -> str:
    """The data + model config (``--out``): what the scan found, shared by both stages."""
    patch = int(scan.model.get("patch_size", 16))
    size = "the paper's ViT-B/16" if patch == 16 else f"ViT-B/{patch}: ViT-B widths, the patch_size below"
    lines = [f"# Written by `selfmedmae init-config {kind} --data {data_arg}`: the data and model of your runs, a",
             "# starting point to read and adjust; `selfmedmae check-data` it. Every key: docs/config-reference.md.",
             *[f"# scan: {n}" for n in scan.notes],
             "model:", f"  preset: vit_base        # {size}; vit_small / vit_tiny need less compute"]
    lines += [f"  {k}: {_yaml(v)}" for k, v in scan.model.items()]
    lines += ["data:"] + [f"  {k}: {_yaml(v)}" for k, v in scan.data.items()]
    return "\n".join(lines) + "\n"


def default_batch(kind: str) -> int:
    return 6 if kind == "3d" else 64


def fitting_batch(kind: str, stage: str, data_config: Path) -> int:
    """The default batch size, or the number of training items of ``stage`` when there are fewer (a larger
    batch would never make a step); the default when the data cannot be split yet."""
    from selfmedmae.config import load_config
    from selfmedmae.data.facade import build

    task = "segmentation" if kind == "3d" else "classification"
    try:
        cfg = load_config(str(data_config), [f"stage={stage}", f"task={task}"])
        n = len(build(cfg.data).items("pretrain" if stage == "pretrain" else "train", stage))
    except UserError:  # e.g. no labels yet: check-data will say so
        return default_batch(kind)
    return max(1, min(default_batch(kind), n))


def render_stage(kind: str, stage: str, base: str, stem: str, batch: Optional[int] = None) -> str:
    """A stage config on top of the data config, with the paper's recipe scaled to a user's data;
    ``batch``: the batch size (default 6 volumes / 64 images)."""
    task = "segmentation" if kind == "3d" else "classification"
    batch = default_batch(kind) if batch is None else batch
    if stage == "pretrain":
        body = ["stage: pretrain", f"task: {task}", "train:",
                "  epochs: 800             # the paper: 800 (CXR14) to 10000 (BTCV, 18 volumes) epochs",
                "  warmup_epochs: 40",
                f"  batch_size: {batch}",
                "  lr: 1.5e-4              # the paper's effective pre-training lr",
                "  vis_every: 20           # reconstruction figures (figures/ and TensorBoard)"]
    else:
        lr = "8.0e-4              # the paper's BTCV lr" if kind == "3d" else "1.0e-3              # the paper's CXR14 lr"
        body = ["stage: finetune", f"task: {task}",
                f"init: mae:runs/{stem}/pretrain/checkpoints/last.pt  # the MAE of {stem}_pretrain.yaml; or scratch",
                "model:", "  drop_path_rate: 0.1", "train:",
                "  epochs: 300", "  warmup_epochs: 10", f"  batch_size: {batch}", f"  lr: {lr}",
                "  layer_decay: 0.75"]
        body += ["  betas: [0.9, 0.999]     # the paper's CXR14 fine-tuning"] if kind == "2d" else []
        body += ["  eval_every: 10          # epochs between validations (best.pt)" if kind == "3d" else
                 "  eval_every: 1"]
    return "\n".join([f"# {stage} for the data of {base} (written by `selfmedmae init-config`).",
                      f"_base_: {base}", *body, "run:", f"  dir: runs/{stem}/{stage}", ""])


def run(kind: str, data: str, out: Optional[str]) -> int:
    from selfmedmae.config import load_config

    data_path = Path(data)
    out_path = Path(out or f"selfmedmae_{kind}.yaml")
    stem = out_path.stem
    stages = {st: out_path.with_name(f"{stem}_{st}.yaml") for st in ("pretrain", "finetune")}
    table_path = out_path.with_name(stem + ("_cases.csv" if kind == "3d" else "_images.csv"))
    for path in (out_path, *stages.values()):
        if path.exists():
            raise UserError(f"{path}: already exists; choose another --out (nothing was written)")
    config_dir = out_path.parent
    scan = scan_3d(data_path, config_dir) if kind == "3d" else scan_2d(data_path, config_dir)
    if scan.table is not None:
        if table_path.exists():
            raise UserError(f"{table_path}: already exists; choose another --out (nothing was written)")
        scan.data["csv"] = table_path.name
        for row in scan.table:
            row.update({k: _rel(Path(v), config_dir) for k, v in row.items() if v})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    written = [out_path]
    if scan.table is not None:
        with open(table_path, "x", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(scan.table[0]))
            writer.writeheader()
            writer.writerows(scan.table)
        written.append(table_path)
    with open(out_path, "x") as fh:
        fh.write(render(kind, data, scan))
    for stage, path in stages.items():
        with open(path, "x") as fh:
            fh.write(render_stage(kind, stage, out_path.name, stem, fitting_batch(kind, stage, out_path)))
        load_config(path)  # what we wrote must load
        written.append(path)
    print(out_path.read_text(), end="")
    print(f"wrote {', '.join(str(p) for p in written)}\nnext: selfmedmae check-data {shlex.quote(str(stages['finetune']))}")
    return 0
