"""``selfmedmae export CHECKPOINT --out DIR [--onnx]``: a native checkpoint as a folder to share.

``DIR`` (new or empty; a folder holding anything is refused, so nothing a user has is overwritten) gets
``model.safetensors``, ``config.yaml`` (the resolved run config), ``model_card.json`` and ``README.md``
(:mod:`selfmedmae.export.card`), and with ``--onnx`` ``model.onnx`` checked in onnxruntime
(:mod:`selfmedmae.export.onnx_check`). ONNX is for the fine-tuned networks (UNETR, ViT classifier); an MAE
pre-training or encoder checkpoint is exported as weights and card only. Any failure removes what the
command wrote.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from selfmedmae.errors import ConfigError, UserError
from selfmedmae.export.card import build_card, card_markdown
from selfmedmae.models.exported import CARD_JSON, CARD_MD, CONFIG, ONNX, WEIGHTS, write_weights
from selfmedmae.export.onnx_check import write_checked_onnx
from selfmedmae.extras import need
from selfmedmae.inference.forward import run_dir_of
from selfmedmae.models.checkpoint import model_from, read_native

FINE_TUNED = ("unetr", "classifier")


def _target(out: Path) -> bool:
    """Check ``out``; True when this command creates it."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out (nothing was written)")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out}: folder is not empty; export writes into a new or empty folder only "
                          f"(nothing was written)")
    return not out.exists()


def _config(ckpt: dict, run_dir: Path) -> Optional[dict]:
    """The run config the checkpoint carries, else the run folder's ``config.yaml`` (pre-training files)."""
    if isinstance(ckpt.get("config"), dict):
        return ckpt["config"]
    path = run_dir / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True) if path.is_file() else None


def class_names(ckpt: dict) -> Optional[list]:
    """The names of the network's outputs: from the run's data when readable, else the config's, else generic."""
    if ckpt["kind"] not in FINE_TUNED:
        return None
    n = int(ckpt["model_args"]["num_classes"])
    if isinstance(ckpt.get("labels"), dict) and len(ckpt["labels"].get("names", [])) == n:
        return list(ckpt["labels"]["names"])  # fine-tuning checkpoints carry their classes
    cfg = ckpt.get("config") or {}
    data = cfg.get("data", {})
    try:
        from selfmedmae.config import config_from_dict
        from selfmedmae.data.facade import build

        names = build(config_from_dict(cfg).data).labels.names
        if len(names) == n:
            return list(names)
    except (UserError, KeyError, TypeError, ValueError):  # the training data need not be on this machine
        pass
    names = list(data.get("class_columns") or data.get("labels") or [])
    return names if len(names) == n else [f"class {i}" for i in range(n)]


def _write(ckpt: dict, checkpoint: Path, out: Path, onnx: bool) -> list[str]:
    run_dir = run_dir_of(checkpoint)
    written = []
    if onnx:
        diff = write_checked_onnx(model_from(ckpt, str(checkpoint)), ckpt["model_args"], out / ONNX)
        written.append(f"{ONNX} (onnxruntime agrees with torch within {diff:.2g})")
    write_weights(out / WEIGHTS, ckpt)
    written.insert(0, WEIGHTS)
    if ckpt.get("config") is not None:
        (out / CONFIG).write_text(OmegaConf.to_yaml(OmegaConf.create(ckpt["config"])))
        written.insert(1, CONFIG)
    card = build_card(ckpt, checkpoint, run_dir, class_names(ckpt))
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(card_markdown(card, out.name))
    return written[:2] + [CARD_JSON, CARD_MD] + written[2:]


def run(checkpoint: str | os.PathLike, out: str | os.PathLike, onnx: bool = False) -> int:
    """Export ``checkpoint`` into ``out``; returns 0. Refusals and failures raise UserError, leaving nothing."""
    checkpoint, out = Path(checkpoint), Path(out)
    need("safetensors", "export")
    if onnx:
        need("onnx", "export"), need("onnxruntime", "export")
    ckpt = read_native(checkpoint)
    if onnx and ckpt.get("kind") not in FINE_TUNED:
        raise ConfigError(f"{checkpoint}: --onnx: not applicable to a {ckpt.get('kind')!r} checkpoint (ONNX export "
                          f"is for fine-tuned UNETR / ViT classifier networks); export it without --onnx")
    ckpt["config"] = _config(ckpt, run_dir_of(checkpoint))
    created = _target(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = _write(ckpt, checkpoint, out, onnx)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:  # the folder was empty before: empty it again
            for p in out.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        raise
    print(f"wrote {out}: {', '.join(written)}")
    return 0
