"""Native checkpoints: weights plus what is needed to rebuild the model, written atomically.

A native checkpoint is a dict ``{"format": "selfmedmae", "version": 1, "kind", "model_args",
"state_dict", ...}`` (training state may ride along). Loading never unpickles code
(``torch.load(weights_only=True)``), and a state dict that does not fit the model is reported key by key.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from selfmedmae.errors import UserError
from selfmedmae.models.factory import build_model

FORMAT, VERSION = "selfmedmae", 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return "inline_container" in text or "write" in text.lower()


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file beside ``path``, then rename: a crash never leaves a broken file.

    The file gets the mode of any new file (0644 under the usual umask; mkstemp's 0600 would hide it from
    colleagues). A full disk or a file-size limit is a one-line error; the previous file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a short write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and not _write_failure(exc):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "disk full or file-size limit?"
        raise UserError(f"{path}: cannot be written ({reason}); the previous {path.name}, if any, "
                        f"is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def native(kind: str, model_args: dict, state_dict: Mapping[str, torch.Tensor], **extra: Any) -> dict:
    return {"format": FORMAT, "version": VERSION, "kind": kind, "model_args": model_args,
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}, **extra}


def save_model(path: str | os.PathLike, kind: str, model_args: dict, model: nn.Module, **extra: Any) -> Path:
    return atomic_save(native(kind, model_args, unwrap(model).state_dict(), **extra), path)


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model in .module


def _why_unreadable(path: Path, exc: Exception) -> str:
    """One whole sentence for a checkpoint torch cannot load safely (torch's own messages run to paragraphs)."""
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects{what} beyond tensors, numbers and strings; such objects can run code when "
                f"unpickled, so they are never loaded. Save the weights alone (a state_dict) where the file came from")
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's format since 1.6
    if zipped or isinstance(exc, EOFError) or "truncated" in text:
        return "the file is truncated or corrupt (an interrupted save or copy?)"
    return "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle of tensors)"


def _looks_like(path: Path) -> str | None:
    """What a file that is not a checkpoint looks like, by its first bytes (arguments given in the wrong order
    put a scan or an image where a checkpoint belongs); None when it looks like none of these."""
    import gzip

    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
        if head[:2] == b"\x1f\x8b":  # gzip: a .nii.gz, or some other gzipped file
            try:
                with gzip.open(path, "rb") as fh:
                    head = fh.read(352)
            except (OSError, EOFError):
                return "a gzip file"
            if not _nifti(head):
                return "a gzip file"
        if _nifti(head):
            return "a NIfTI image"
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "a TIFF image"
    if head[128:132] == b"DICM":
        return "a DICOM file"
    return None


def _nifti(head: bytes) -> bool:
    """A NIfTI-1 / NIfTI-2 header: its size field (348 or 540, either byte order) and its magic string."""
    import struct

    if len(head) < 348:
        return False
    sizes = (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0])
    return (348 in sizes and head[344:347] in (b"n+1", b"ni1")) or (540 in sizes and head[4:7] in (b"n+2", b"ni2"))


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load any checkpoint file safely (tensors, numbers, strings only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    looks = _looks_like(path)
    if looks is not None:  # before torch.load, whose message for these is about pickled code
        raise UserError(f"{path}: not a checkpoint (it looks like {looks}); "
                        f"expected a .pt from `selfmedmae finetune`")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, code objects refused by weights_only
        raise UserError(f"{path}: cannot be read as a checkpoint: {_why_unreadable(path, exc)}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def read_native(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A native checkpoint's dict, from a ``.pt`` file or a folder written by ``selfmedmae export``."""
    from selfmedmae.models.exported import is_exported, read_exported

    if is_exported(path):
        return read_exported(path, map_location)
    ckpt = read_checkpoint(path, map_location)
    if ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not a native selfmedmae checkpoint; import it first with "
                        f"`selfmedmae convert {path} OUT --from ...`")
    return ckpt


def state_dict_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable lines for every key that is missing, unexpected, or of another shape."""
    own = model.state_dict()
    lines = [f"missing key {k} {tuple(v.shape)}" for k, v in own.items() if k not in state_dict]
    lines += [f"unexpected key {k} {tuple(v.shape)}" for k, v in state_dict.items() if k not in own]
    lines += [f"shape of {k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
              for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    return lines


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    problems = state_dict_mismatch(model, state_dict)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise UserError(f"{source}: checkpoint does not fit the model: {shown}")
    model.load_state_dict(state_dict, strict=True)


def model_from(ckpt: Mapping[str, Any], source: str) -> nn.Module:
    """The model a native checkpoint describes (its kind and model_args), with its weights, in eval mode;
    UserError naming ``source`` when it cannot be rebuilt or the weights do not fit."""
    try:
        model = build_model(ckpt["kind"], ckpt["model_args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{source}: cannot rebuild the model from its model_args ({exc})") from None
    load_state_dict_checked(model, ckpt["state_dict"], source)
    return model.eval()


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """A ready model (eval mode) from a native checkpoint or an exported model folder."""
    return model_from(read_native(path, map_location), str(path))
