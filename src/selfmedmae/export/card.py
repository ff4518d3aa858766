"""The model card of an exported model: ``model_card.json`` (for programs) and ``README.md`` (for people).

What it records, all from the checkpoint, its run config and the files of its run folder (nothing is
recomputed): the task and classes; the input the network expects (channels, crop, voxel spacing,
orientation, intensity rule); the training data (format, dataset name, cases per split and the sha256 of the
run's ``splits.json``); the test metrics when ``evaluate`` wrote ``<run>/eval_test/metrics.json``; the
pre-training it started from (``init``); and a ``license`` left for the user to fill in.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from selfmedmae.extras import version
from selfmedmae.models.factory import HEAD_KINDS


TASKS = {**{kind: task for task, kind in HEAD_KINDS.items()}, "mae": "MAE pre-training",
         "vit": "ViT encoder (pre-trained)"}  # what a checkpoint of each model kind is for
LICENSE = "fill in"  # the exporter cannot know under which terms the weights and their data may be shared


def intensity_rule(data: dict) -> str:
    """The intensity step of a 3D config in words (:func:`selfmedmae.data.transforms_3d.intensity_transforms`)."""
    mode = data.get("intensity")
    if mode == "ct":
        return f"CT window [{data.get('a_min')}, {data.get('a_max')}] HU scaled to [0, 1], clipped"
    if mode == "percentile":
        lo, hi = data.get("percentiles", [None, None])
        return f"each volume clipped to its {lo} / {hi} percentiles, then scaled to [0, 1]"
    if mode == "nonzero":
        return "z-score per channel over the non-zero voxels"
    return "none: the stored values as they are"


def _input(model_args: dict, data: dict) -> dict:
    enc = model_args.get("encoder", {})
    out: dict = {"spatial_dims": len(enc.get("img_size", [])), "channels": enc.get("in_chans"),
                 "size": enc.get("img_size"), "patch_size": enc.get("patch_size")}
    if out["spatial_dims"] == 3:
        out.update(orientation=data.get("orientation"), spacing_mm=data.get("spacing") or "the files' own",
                   intensity=intensity_rule(data), crop_foreground=data.get("crop_foreground"),
                   inference="sliding window of the size above")
    elif data:
        out.update({k: data.get(k) for k in ("image_size", "crop_size", "hist_eq", "mean", "std")})
    return out


def _splits(run_dir: Path) -> Optional[dict]:
    path = run_dir / "splits.json"
    if not path.is_file():
        return None
    raw = path.read_bytes()
    record = json.loads(raw)
    counts = {k: len(record[k]) for k in ("train", "val", "test", "train_pool") if isinstance(record.get(k), list)}
    return {"file": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "rule": record.get("rule"),
            "cases": counts}


def _dataset_name(data: dict) -> Optional[str]:
    """The ``name`` of the MSD ``dataset.json``, when the data are on this machine."""
    path = Path(str(data.get("root", ""))) / str(data.get("dataset_json") or "dataset.json")
    try:
        return str(json.loads(path.read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _metrics(run_dir: Path) -> Optional[dict]:
    path = run_dir / "eval_test" / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    keep = {k: v for k, v in m.items() if k not in ("cases",) and not isinstance(v, list)}
    # evaluate records what it evaluated (checkpoint, split), not its command line: rebuild the command from them
    rebuilt = f"selfmedmae evaluate {m['checkpoint']} eval.split={m['split']}" if "checkpoint" in m and "split" in m \
        else None
    return {"file": str(path), "command": m.get("command"), "command_rebuilt": rebuilt, **keep}


def build_card(ckpt: dict, checkpoint: Path, run_dir: Path, classes: Optional[list]) -> dict:
    """The card's fields (``model_card.json``)."""
    cfg = ckpt.get("config") or {}
    data = cfg.get("data", {})
    enc = ckpt["model_args"].get("encoder", {})
    return {
        "task": TASKS.get(ckpt["kind"], ckpt["kind"]), "kind": ckpt["kind"], "classes": classes,
        "architecture": {"encoder": {k: enc.get(k) for k in ("embed_dim", "depth", "num_heads", "patch_size")},
                         **{k: v for k, v in ckpt["model_args"].items() if k != "encoder"}},
        "input": _input(ckpt["model_args"], data),
        "training_data": {"format": data.get("format"), "root": data.get("root"), "dataset": _dataset_name(data),
                          "label_fraction": data.get("label_fraction"), "splits": _splits(run_dir)},
        "metrics_test": _metrics(run_dir),
        "validation": ckpt.get("metric"), "epoch": ckpt.get("epoch"),
        "pretraining": cfg.get("init"), "source_checkpoint": str(checkpoint),
        "license": LICENSE, "exported_by": f"selfmedmae {version()}",
    }


def _value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def card_markdown(card: dict, folder_name: str) -> str:
    """``README.md``: the card as a page, and how to use the folder."""
    lines = [f"# {folder_name}", "", f"A selfmedmae model: {card['task']} ({card['kind']}).", "",
             "| field | value |", "| --- | --- |"]
    lines += [f"| {k} | {_value(card[k])} |" for k in ("classes", "pretraining", "epoch", "validation", "license")]
    lines += ["", "## Input", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {_value(v)} |" for k, v in card["input"].items()]
    lines += ["", "## Training data", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {_value(v)} |" for k, v in card["training_data"].items()]
    lines += ["", "## Test metrics", ""]
    lines += [f"`{json.dumps(card['metrics_test'])}`" if card["metrics_test"] else
              "none recorded (no `eval_test/metrics.json` in the run folder)"]
    lines += ["", "## Use", "", "```python", "import selfmedmae", "", f'model = selfmedmae.load_model("{folder_name}")',
              "```", ""]
    if card["kind"] in ("unetr", "classifier"):
        lines.append(f"`selfmedmae predict {folder_name} INPUT... --out DIR` and `selfmedmae evaluate {folder_name}` "
                     "take this folder as they take the checkpoint it came from.")
    else:
        lines.append(f"`init=mae:{folder_name}` starts a fine-tuning from it, as from the checkpoint it came from.")
    lines += ["", "License: fill in before sharing (`license` in model_card.json).", ""]
    return "\n".join(lines)
