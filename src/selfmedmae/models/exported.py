"""The exported model folder: what it holds, writing its weights, and reading it back as a native checkpoint.

``DIR/model.safetensors`` holds the state dict (the tensors as trained, bit for bit) and, as safetensors
metadata, the native checkpoint's ``format``, ``version``, ``kind``, ``model_args`` and ``labels`` (JSON); beside it
``config.yaml`` is the resolved run config, ``model_card.json`` / ``README.md`` the card and ``model.onnx`` the
ONNX network. :func:`read_exported` gives the same dict :func:`selfmedmae.models.checkpoint.read_native` gives
for the ``.pt`` it came from, so ``load_model``, ``evaluate``, ``predict`` and ``init=mae:DIR`` take either.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch

from selfmedmae.errors import UserError
from selfmedmae.extras import need

WEIGHTS, CONFIG, CARD_JSON, CARD_MD, ONNX = "model.safetensors", "config.yaml", "model_card.json", "README.md", \
    "model.onnx"


def is_exported(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``selfmedmae export``."""
    return Path(path).is_dir() and (Path(path) / WEIGHTS).is_file()


def write_weights(path: Path, ckpt: Mapping) -> Path:
    """The native checkpoint ``ckpt``'s weights and model description as a safetensors file."""
    st = need("safetensors.torch", "export")
    # own, contiguous copies: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in ckpt["state_dict"].items()}
    meta = {"format": str(ckpt["format"]), "version": str(ckpt["version"]), "kind": str(ckpt["kind"]),
            "model_args": json.dumps(ckpt["model_args"])}
    if isinstance(ckpt.get("labels"), dict):  # the classes of a fine-tuned model's outputs
        meta["labels"] = json.dumps(ckpt["labels"])
    st.save_file(tensors, str(path), metadata=meta)
    return path


def read_exported(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The native checkpoint dict of an exported folder: format, version, kind, model_args, state_dict, labels
    (fine-tuned models), and ``config`` (the run config as a plain dict) when the folder has ``config.yaml``."""
    st = need("safetensors", "export")
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / WEIGHTS
    try:
        with st.safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state_dict = load_file(str(path), device=str(map_location))
        ckpt = {"format": meta["format"], "version": int(meta["version"]), "kind": meta["kind"],
                "model_args": json.loads(meta["model_args"]), "state_dict": state_dict}
        if "labels" in meta:
            ckpt["labels"] = json.loads(meta["labels"])
    except (OSError, KeyError, ValueError, RuntimeError) as exc:  # safetensors raises SafetensorError (a RuntimeError kind)
        raise UserError(f"{path}: not a model exported by `selfmedmae export` ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if (folder / CONFIG).is_file():
        from omegaconf import OmegaConf

        ckpt["config"] = OmegaConf.to_container(OmegaConf.load(folder / CONFIG), resolve=True)
    return ckpt
