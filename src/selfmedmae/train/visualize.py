"""Reconstruction figures during pre-training: a fixed validation sample (or a training one when there is
no validation split), a fixed mask, original / masked / reconstruction as the paper's Fig. 2."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from selfmedmae.data.facade import Data
from selfmedmae.errors import FailedAfterStart, UserError
from selfmedmae.figures.curves import plot_mae_reconstruction
from selfmedmae.models.mae import MAE


def _fit(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Centre crop / zero pad [C, *S] to ``size``."""
    for axis, want in enumerate(size, start=1):
        have = x.shape[axis]
        if have > want:
            x = x.narrow(axis, (have - want) // 2, want)
        elif have < want:
            pad = [0, 0] * (x.ndim - 1)
            before = (want - have) // 2
            pad[2 * (x.ndim - 1 - axis)] = before
            pad[2 * (x.ndim - 1 - axis) + 1] = want - have - before
            x = torch.nn.functional.pad(x, pad)
    return x


def sample_images(data: Data, count: int = 2) -> Optional[torch.Tensor]:
    """Up to ``count`` evaluation-preprocessed images [N, C, *input_size] from val (else train)."""
    size = data.input_size
    for split in ("val", "train"):
        try:
            ds = data.dataset(split, cache="none")
        except UserError:
            continue
        if len(ds) == 0:
            continue
        images = [_fit(torch.as_tensor(ds[i]["image"]).float(), size) for i in range(min(count, len(ds)))]
        return torch.stack(images)
    return None


class ReconstructionFigure:
    """Draws the same images with the same mask every time, so the figures of a run show its progress."""

    def __init__(self, data: Data, seed: int):
        self.images = sample_images(data)
        self.seed = seed

    def save(self, model: MAE, path: Path) -> Optional[Path]:
        if self.images is None:
            return None
        x = self.images.to(next(model.parameters()).device)
        noise = torch.rand(x.shape[0], model.encoder.num_patches, generator=torch.Generator().manual_seed(self.seed))
        was_training = model.training
        model.eval()
        out = model.visualize(x, noise.to(x.device))
        model.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        return plot_mae_reconstruction(out["original"].cpu(), out["reconstruction"].cpu(), path,
                                       masked=out["masked"].cpu(), paste=out["paste"].cpu(),
                                       mask=out["mask"].cpu(), patch_size=model.encoder.patch_size,
                                       batched=True)

    def save_or_warn(self, model: MAE, path: Path, warn: Optional[Callable[[str], None]] = None) -> Optional[Path]:
        """:meth:`save`, best-effort: a figure that cannot be written (a full disk) is a warning, not the end
        of the run, so that epoch's checkpoint is still written. Returns the path, or None."""
        try:
            return self.save(model, path)
        except FailedAfterStart as exc:
            (warn or _to_stderr)(f"selfmedmae: warning: the reconstruction figure was not saved: {exc}")
            return None


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
