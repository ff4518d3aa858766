"""What `evaluate` and `predict` share: a fine-tuned run rebuilt from its checkpoint, and the forward passes.

A fine-tuning checkpoint (``<run>/checkpoints/best.pt`` or ``last.pt``) is a native checkpoint of kind
``unetr`` (3D segmentation) or ``classifier`` (2D classification) that carries the resolved run config as a
plain dict under ``"config"``; :func:`load_run` rebuilds both, applying ``key=value`` overrides to the config.

Device and precision. ``run.device`` in the saved config describes the machine the run was *trained* on, so
it is used only when given again on the command line; otherwise the device is ``auto`` (the GPU when there
is one). The precision is the run's ``run.precision`` resolved on this machine by the one policy of
:mod:`selfmedmae.runtime.device` (``auto``: bf16 on GPUs, float32 on CPUs without native bf16, where bf16 is
emulated and about 10x slower for UNETR's 3D convolutions), so evaluation computes what validation computed
on the same machine; fp16 falls back to ``auto`` off a GPU. On a CPU with native bf16, ``auto`` follows the
choice the training run recorded in the checkpoint (``"precision"``) when this is the same kind of machine
(:func:`selfmedmae.runtime.autoprec.machine`: CPU model, bf16 flags, torch version, threads); on another
machine, or for a checkpoint without the record, it measures this model's own inference forward pass (one
batch of ``eval.sw_batch_size`` windows, or of 32 images) once and caches it (:mod:`selfmedmae.runtime.autoprec`).
An explicit ``run.precision=...`` on the command line always wins. The choice is printed in one line.

Segmentation follows the official evaluation (docs/official-code.md §2.4): MONAI
``sliding_window_inference`` over the whole preprocessed volume with windows of ``data.roi_size``,
``eval.overlap`` (the paper's 0.5), ``eval.sw_batch_size`` windows per forward pass, uniform ("constant")
blending. Windows run on the device; the blended logits are kept on the CPU, so a large CT does not have to
fit into GPU memory. ``eval.tta`` (test-time augmentation, as nnU-Net v2's mirroring) makes each window's
logits the mean of the network's logits on the window and on its mirror images along every combination of
the spatial axes, each flipped back (8 passes in 3D); validation, ``evaluate`` and ``predict`` all get it
through :func:`sliding_window_logits`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from selfmedmae.config import config_from_dict
from selfmedmae.config.overrides import override_keys
from selfmedmae.preflight import validate
from selfmedmae.data.facade import build
from selfmedmae.data.formats import Labels, format_of
from selfmedmae.errors import UserError
from selfmedmae.inference.decide import probabilities
from selfmedmae.models.checkpoint import model_from, read_native
from selfmedmae.models.factory import HEAD_KINDS
from selfmedmae.runtime.autoprec import Choice, machine, model_choice, precision_of
from selfmedmae.runtime.device import Precision, device_for, inference_precision
from selfmedmae.runtime.log import progress_iter

CLASSIFY_BATCH = 32  # images per forward pass of evaluate and predict (tasks.classification.BATCH)
KINDS = {kind: task for task, kind in HEAD_KINDS.items()}  # the task of each fine-tuned checkpoint kind


@dataclass
class LoadedRun:
    """A fine-tuned model ready for inference, with the config it was trained with (plus overrides)."""

    checkpoint: Path
    cfg: DictConfig
    model: nn.Module  # eval mode, on `device`
    kind: str  # unetr | classifier
    device: torch.device
    prec: Precision  # the autocast of the resolved run.precision
    model_args: dict  # as saved: {"encoder": {..., "in_chans"}, "num_classes", ...}
    labels: Labels  # the classes of the model's outputs

    @property
    def num_classes(self) -> int:
        return int(self.model_args["num_classes"])

    @property
    def in_chans(self) -> int:
        return int(self.model_args["encoder"]["in_chans"])

    @property
    def task(self) -> str:
        return KINDS[self.kind]

    @property
    def run_dir(self) -> Path:
        return run_dir_of(self.checkpoint)

    @property
    def precision(self) -> str:
        return self.prec.name

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.prec.autocast()


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """``<run>/checkpoints/best.pt`` -> ``<run>``; a checkpoint elsewhere -> its own folder."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_run(checkpoint: str | os.PathLike, overrides: Sequence[str] = ()) -> LoadedRun:
    """Rebuild model and config from a fine-tuning checkpoint. Raises UserError naming the file."""
    path = Path(checkpoint)
    ckpt = read_native(path)
    kind = ckpt.get("kind")
    if kind not in KINDS:
        raise UserError(f"{path}: a {kind!r} checkpoint; evaluation and prediction need a fine-tuned model "
                        f"({' or '.join(KINDS)}), e.g. <run>/checkpoints/best.pt of `selfmedmae finetune`")
    if not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{path}: has no run config (key 'config'); it was not written by `selfmedmae finetune`")
    cfg = config_from_dict(ckpt["config"], overrides, source=str(path))

    validate(cfg, "evaluate")  # an override such as eval.overlap=1 or a bad data.roi_size, before any work
    model = model_from(ckpt, str(path))
    given = set(override_keys(overrides))
    # the saved run.device describes the machine the run was trained on: only an override counts here
    device = device_for(cfg.run.device if "run.device" in given else "auto")
    prec = inference_precision(str(cfg.run.precision), device, asked="run.precision" in given)
    args = dict(ckpt["model_args"])
    if _auto(cfg, device, asked="run.precision" in given):
        prec = _inference_auto(ckpt, cfg, model.to(device), kind, args, device)
        print(prec.record["why"])
    labels = _labels(ckpt, cfg, int(args["num_classes"]), run_dir_of(path))
    return LoadedRun(path, cfg, model.to(device), kind, device, prec, args, labels)


def _auto(cfg: DictConfig, device: torch.device, asked: bool) -> bool:
    """Whether ``auto`` decides here: the run's setting (or a GPU run's fp16 off a GPU) on a CPU."""
    name = str(cfg.run.precision)
    return device.type == "cpu" and (name == "auto" or (name == "fp16" and not asked))


def _inference_auto(ckpt: dict, cfg: DictConfig, model: nn.Module, kind: str, args: dict,
                    device: torch.device) -> Precision:
    """``auto`` for inference on a CPU: the training run's recorded choice when this is the same kind of
    machine (CPU model, bf16 flags, torch, threads); else the faster of fp32 and bf16 for this model's own
    forward pass (one sliding-window batch, or one batch of images), measured once and cached."""
    rec = ckpt.get("precision")
    if (isinstance(rec, dict) and rec.get("name") in ("fp32", "bf16") and rec.get("device_type") == "cpu"
            and rec.get("machine") == machine()):
        return precision_of(Choice(rec["name"], "cpu", "the training run's choice, recorded in the checkpoint, "
                                   "on this kind of machine", machine=machine()), device)
    enc = args["encoder"]
    if kind == "unetr":
        shape = [int(cfg.eval.sw_batch_size), int(enc["in_chans"]), *[int(s) for s in cfg.data.roi_size]]
    else:
        shape = [CLASSIFY_BATCH, int(enc["in_chans"]), *[int(s) for s in enc["img_size"]]]
    return precision_of(model_choice(model, kind, args, shape, device, bool(cfg.run.precision_probe),
                                     train=False), device)


def _labels(ckpt: dict, cfg: DictConfig, n_out: int, run_dir: Path) -> Labels:
    """The checkpoint's classes; for a checkpoint from before they were saved, the data's when they can be
    read and fit the outputs, else generic names."""
    if isinstance(ckpt.get("labels"), dict):
        return Labels.from_dict(ckpt["labels"])
    try:
        labels = build(cfg.data, run_dir).labels
        if labels.out_channels == n_out:
            return labels
    except UserError:  # the training data may not be on this machine
        pass
    return Labels.generic(n_out, format_of(cfg.data).multilabel)


def check_outputs(run: LoadedRun, labels: Labels) -> None:
    """The model's output channels must match the data's classes (a config override may change the data)."""
    if run.num_classes != labels.out_channels:
        what = "regions" if labels.multilabel and run.kind == "unetr" else "labels" if labels.multilabel else "classes"
        raise UserError(f"{run.checkpoint}: the model has {run.num_classes} outputs but the data has "
                        f"{labels.out_channels} {what}; was data.* overridden with another dataset?")


def segment_logits(run: LoadedRun, image: torch.Tensor) -> torch.Tensor:
    """Sliding-window logits of one preprocessed volume: image [C, *S] or [1, C, *S] -> float32 [1, K, *S] (CPU)."""
    return sliding_window_logits(run.model, image, [int(s) for s in run.cfg.data.roi_size],
                                 int(run.cfg.eval.sw_batch_size), float(run.cfg.eval.overlap), run.device,
                                 run.autocast, tta=bool(run.cfg.eval.tta))


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every non-empty combination of the spatial axes, fewest first (nnU-Net v2's order): 7 in 3D."""
    axes = range(spatial_dims)
    return [combo for n in range(1, spatial_dims + 1) for combo in itertools.combinations(axes, n)]


def mirrored_logits(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean of ``model``'s float32 logits on ``windows`` [N, C, *roi] and on each of its mirror images,
    flipped back: [N, K, *roi]."""
    out = model(windows).float()
    combos = mirror_axes(windows.ndim - 2)
    for axes in combos:
        dims = [2 + a for a in axes]
        out = out + model(windows.flip(dims)).float().flip(dims)  # [N, K, *roi], back on the window's grid
    return out / (len(combos) + 1)


@torch.no_grad()
def sliding_window_logits(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int], sw_batch_size: int,
                          overlap: float, device: torch.device,
                          autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                          tta: bool = False) -> torch.Tensor:
    """MONAI ``sliding_window_inference`` with uniform blending: image [C, *S] or [1, C, *S] -> float32
    [1, K, *S] on the CPU. Windows run on ``device`` under ``autocast()``, ``sw_batch_size`` at a time;
    no autograd, and a plain tensor (no MetaTensor meta bookkeeping per window). ``tta``: each window's
    logits are :func:`mirrored_logits` (2^d passes for d spatial axes)."""
    from monai.inferers import sliding_window_inference

    x = image if image.ndim == len(roi_size) + 2 else image[None]
    x = x.as_tensor() if hasattr(x, "as_tensor") else x

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        with autocast():
            if tta:
                return mirrored_logits(model, windows)
            return model(windows).float()

    out = sliding_window_inference(x.float(), roi_size=list(roi_size), sw_batch_size=sw_batch_size,
                                   predictor=predictor, overlap=overlap, mode="constant", sw_device=device,
                                   device=torch.device("cpu"), progress=False)
    return out.float()


@torch.no_grad()
def classify_batches(model: nn.Module, loader, device: torch.device,
                     autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                     enabled: bool = True, desc: str = "classify") -> tuple[list, torch.Tensor, Optional[torch.Tensor]]:
    """(ids, probabilities [N, K] float32, targets [N, K] or None) over a loader of {"image", "id"[, "label"]}:
    one sigmoid per label (multi-label findings). Validation and ``evaluate`` both classify through here."""
    ids, scores, targets = [], [], []
    for batch in progress_iter(loader, len(loader), desc, "batch", enabled=enabled):
        with autocast():
            logits = model(batch["image"].to(device, non_blocking=True))  # [B, K]
        scores.append(probabilities(logits, multilabel=True).cpu())
        ids += list(batch["id"])
        if "label" in batch:
            targets.append(batch["label"].float())
    if not scores:
        return ids, torch.zeros(0), None
    return ids, torch.cat(scores), (torch.cat(targets) if len(targets) == len(scores) else None)


def classify(run: LoadedRun, loader) -> tuple[list, torch.Tensor, Optional[torch.Tensor]]:
    """:func:`classify_batches` with a loaded run's model, device and precision; at least one image."""
    ids, scores, targets = classify_batches(run.model, loader, run.device, run.autocast)
    if not ids:
        raise UserError("no images to classify")
    return ids, scores, targets
